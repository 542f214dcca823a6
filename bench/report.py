"""Summaries over rounds, the targets checked, and results.json / results.md / results.png."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def summarize(points: list[dict]) -> dict:
    """Median over rounds of requests/s; latency percentiles over all rounds' requests."""
    lat = sorted(x for p in points for x in p["latencies_ms"])
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] if lat else None  # noqa: E731
    return {
        "rps": statistics.median(p["rps"] for p in points),
        "rps_rounds": [round(p["rps"], 2) for p in points],
        "tok_s": statistics.median(p.get("tok_s", 0) for p in points),
        "tok_s_rounds": [round(p.get("tok_s", 0), 2) for p in points],
        "latency_ms_p50": statistics.median(lat) if lat else None,
        **_first_token(points),
        "latency_ms_p90": q(0.9),
        "latency_ms_p95": q(0.95),
        "peak_rss_mb": max(
            (p["peak_rss_mb"] for p in points if p.get("peak_rss_mb")), default=None
        ),
        "errors": sum(p["errors"] for p in points),
        "error_sample": [e for p in points for e in p["error_sample"]][:3],
        "completion_tokens": statistics.mean(p["completion_tokens"] for p in points),
        "exact": statistics.mean(p["exact"] for p in points),
    }


def _first_token(points: list[dict]) -> dict:
    """A streamed target's time to the first piece of text: p50 and p95 over all requests."""
    first = sorted(x for p in points for x in p.get("first_token_ms", []))
    if not first:
        return {}
    return {
        "first_token_ms_p50": statistics.median(first),
        "first_token_ms_p95": first[min(len(first) - 1, int(0.95 * len(first)))],
    }


def check_targets(
    results: dict,
    concurrency: list[int],
    overhead: dict | None = None,
    short_during_long: dict | None = None,
    against_limit: bool = True,
    first_token: dict | None = None,
) -> list[dict]:
    """`against_limit`: a model of a real size, where the UI's path is checked against in-process
    generate and the short request during a long one (on the tiny model HTTP and JSON cost more
    than the model, so only the peer is a fair bar)."""
    r = results
    checks = []

    def tok_s(name, c):
        return r.get(name, {}).get(str(c), {}).get("tok_s")

    # Issue 17's targets, in tokens/s: the UI's path against the limit and against the peer.
    for c in (1, 8) if against_limit else ():
        if tok_s("proxy", c) and tok_s("in-process", c):
            ratio = tok_s("proxy", c) / tok_s("in-process", c)
            checks.append(
                {
                    "target": f"proxy at c={c} >= 90% of in-process generate on the same batch",
                    "value": f"{tok_s('proxy', c):.1f} vs {tok_s('in-process', c):.1f} tok/s "
                    f"({ratio:.0%})",
                    "met": ratio >= 0.9,
                }
            )
    # Issue 17 sets it for a model of a real size; the tiny model's figures are shown, not checked
    # (its step takes a millisecond, less than the HTTP hops that carry the request).
    for name, figures in (short_during_long or {}).items() if against_limit else ():
        if name != "proxy":
            continue  # the peer's figure is shown beside ours (model_section), not a target
        ratio = figures["short_during_long_ms"] / figures["short_alone_ms"]
        # It joins the long one's batch at the next step, and the two share every step from then
        # on; with the model server's prepacked layers a step for two rows costs about a quarter
        # more than for one on a CPU, so "about its own time" is <= 1.5x (waiting for the long
        # answer instead would add the long one's remaining time).
        checks.append(
            {
                "target": f"{name}: a short request sent during a long one takes <= 1.5x its "
                f"time alone",
                "value": f"{figures['short_during_long_ms']:.0f} vs "
                f"{figures['short_alone_ms']:.0f} ms alone ({ratio:.2f}x; the "
                f"long one takes {figures['long_alone_ms']:.0f} ms alone)",
                "met": ratio <= 1.5,
            }
        )
    # Issue 27's targets: a streamed answer's first piece within what the model needs for it
    # (prefill + one step) + 50 ms, and streaming costing at most 5% of tokens/s at c=8.
    for name in ("proxy-stream", "gateway-stream"):
        got = r.get(name, {}).get("1", {}).get("first_token_ms_p50")
        if got is not None and first_token:
            bar = first_token["prefill_ms"] + first_token["step_ms"] + 50
            checks.append(
                {
                    "target": f"{name}: time to first token at c=1 (p50) <= in-process prefill "
                    "+ one decoding step + 50 ms",
                    "value": f"{got:.0f} ms vs {bar:.0f} ms ({first_token['prefill_ms']:.0f} + "
                    f"{first_token['step_ms']:.0f} + 50)",
                    "met": got <= bar,
                }
            )
    # On the tiny model HTTP and JSON are most of the cost, and a stream sends one event a token:
    # shown there, checked where the model decides the speed.
    if against_limit and tok_s("proxy-stream", 8) and tok_s("proxy", 8):
        ratio = tok_s("proxy-stream", 8) / tok_s("proxy", 8)
        checks.append(
            {
                "target": "proxy-stream at c=8 >= 95% of proxy (streaming costs <= 5%)",
                "value": f"{tok_s('proxy-stream', 8):.1f} vs {tok_s('proxy', 8):.1f} tok/s "
                f"({ratio:.0%})",
                "met": ratio >= 0.95,
            }
        )
    peaks = {c: r.get("proxy", {}).get(str(c), {}).get("peak_rss_mb") for c in concurrency}
    peaks = {c: v for c, v in peaks.items() if v}
    if len(peaks) > 1:
        low, high = peaks[min(peaks)], peaks[max(peaks)]
        checks.append(
            {
                "target": "model server's peak memory flat in concurrency (<= +10% from "
                f"c={min(peaks)} to c={max(peaks)})",
                "value": f"{low} -> {high} MB",
                "met": high <= 1.1 * low,
            }
        )

    if 8 in concurrency:
        # Like for like (both behind tracking + gateway, both direct), then the UI's path against
        # the peer without any proxy in front.
        for ours, peer in (
            ("proxy", "proxy-transformers-cb"),
            ("direct", "transformers-cb"),
            ("proxy", "transformers-cb"),
        ):
            if tok_s(ours, 8) and tok_s(peer, 8):
                ratio = tok_s(ours, 8) / tok_s(peer, 8)
                checks.append(
                    {
                        "target": f"{ours} at c=8 >= {peer} at c=8",
                        "value": (
                            f"{tok_s(ours, 8):.1f} vs {tok_s(peer, 8):.1f} tok/s ({ratio:.2f}x)"
                        ),
                        "met": ratio >= 1,
                    }
                )
    for tokens, figures in sorted((overhead or {}).items(), key=lambda kv: -int(kv[0])):
        medians, paired = figures["median_ms"], figures["over_direct_ms"]
        for name in ("gateway", "proxy"):
            if name in paired:
                checks.append(
                    {
                        "target": f"{name} overhead over direct, median of paired "
                        f"differences, one at a time, {tokens} new tokens <= 10 ms",
                        "value": f"{paired[name]:.1f} ms (medians {medians[name]:.1f} vs "
                        f"{medians['direct']:.1f})",
                        "met": paired[name] <= 10,
                    }
                )
    return checks


def model_section(report: dict) -> list[str]:
    """One model's tables: tokens/s, latency p50/p95, the model server's peak memory, targets."""
    cfg, res = report["config"], report["results"]
    conc = cfg["concurrency"]
    head = "| target | " + " | ".join(f"c={c}" for c in conc) + " |"
    rule = "|---|" + "---:|" * len(conc)

    def table(cell) -> list[str]:
        rows = [head, rule]
        for name, points in res.items():
            rows.append(
                f"| {name} | "
                + " | ".join(cell(points[str(c)]) if str(c) in points else "" for c in conc)
                + " |"
            )
        return rows

    def err(p):
        return f" ({p['errors']} err)" if p["errors"] else ""

    lines = [
        f"### {cfg['model']}",
        "",
        f"{cfg['description']}; {cfg['requests_label']} greedy chat requests per point, "
        f"{cfg['max_tokens']} new tokens, median of {cfg['rounds']} rounds; {report['machine']}.",
        "",
        "New tokens/s:",
        "",
        *table(lambda p: f"{p['tok_s']:.1f}{err(p)}"),
        "",
        "Latency p50 / p95 (ms):",
        "",
        *table(
            lambda p: (
                f"{p['latency_ms_p50']:.0f} / {p['latency_ms_p95']:.0f}"
                if p["latency_ms_p50"]
                else ""
            )
        ),
        "",
    ]
    streamed = {
        n: pts for n, pts in res.items() if any("first_token_ms_p50" in p for p in pts.values())
    }
    if streamed:
        first = report.get("first_token_in_process_ms") or {}
        rows = [head, rule]
        for name, points in streamed.items():
            rows.append(
                f"| {name} | "
                + " | ".join(
                    f"{points[str(c)]['first_token_ms_p50']:.0f} / "
                    f"{points[str(c)]['first_token_ms_p95']:.0f}"
                    if "first_token_ms_p50" in points.get(str(c), {})
                    else ""
                    for c in conc
                )
                + " |"
            )
        lines += [
            "Time to first token of the streamed targets, p50 / p95 (ms); in process, the "
            f"prefill of a prompt alone takes {first.get('prefill_ms', 0):.1f} ms and one "
            f"decoding step after it {first.get('step_ms', 0):.1f} ms (medians):",
            "",
            *rows,
            "",
        ]
    if any(p.get("peak_rss_mb") for points in res.values() for p in points.values()):
        lines += [
            "Peak resident memory of the process holding the model during the point (MB; "
            "proxy: the model server, in-process: the benchmark itself):",
            "",
            *table(lambda p: str(p["peak_rss_mb"]) if p.get("peak_rss_mb") else ""),
            "",
        ]
    exact = {
        name: statistics.mean(p["exact"] for p in points.values()) for name, points in res.items()
    }
    lines += [
        "Answers equal to greedy `model.generate` on the prompt alone "
        "(plain transformers, dense layers): "
        + ", ".join(f"{n} {v:.0%}" for n, v in exact.items())
        + ".",
        "",
    ]
    if report.get("overhead_ms"):
        names = list(next(iter(report["overhead_ms"].values()))["median_ms"])
        lines += [
            "Latency one request at a time, the targets taking turns (ms): median, and in "
            "brackets the median of paired differences to direct:",
            "",
            "| new tokens | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for tokens, figures in report["overhead_ms"].items():
            cells = [
                f"{figures['median_ms'][n]:.1f}"
                + (
                    f" (+{figures['over_direct_ms'][n]:.1f})"
                    if n in figures["over_direct_ms"]
                    else ""
                )
                for n in names
            ]
            lines.append(f"| {tokens} | " + " | ".join(cells) + " |")
        lines.append("")
    if report.get("short_during_long"):
        lines += [
            "A short request sent a quarter into a long one, against the same request alone "
            "right before it (medians of "
            f"{next(iter(report['short_during_long'].values())).get('repeats', 3)} pairs): "
            + "; ".join(
                f"{n} {f['short_during_long_ms']:.0f} ms vs {f['short_alone_ms']:.0f} ms alone "
                f"({f['short_tokens']} new tokens; the long one, {f['long_tokens']} new tokens, "
                f"takes {f['long_alone_ms']:.0f} ms alone)"
                for n, f in report["short_during_long"].items()
            )
            + ".",
            "",
        ]
    lines += ["Targets:", ""]
    lines += [
        f"- [{'x' if c['met'] else ' '}] {c['target']}: {c['value']}" for c in report["checks"]
    ]
    return lines + [""]


def write_reports(out: Path, reports: list[dict], command: str) -> None:
    """results.json (every number), results.md (every model's tables) and one chart per model."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(reports, indent=2, ensure_ascii=False))
    lines = ["# Benchmark", "", f"Made with `{command}`.", ""]
    for report in reports:
        lines += model_section(report) + [
            f"![{report['config']['model']}](results-{report['config']['model']}.png)",
            "",
        ]
        chart(out / f"results-{report['config']['model']}.png", report)
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def chart(path: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc, res = report["config"]["concurrency"], report["results"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, points in res.items():
        cs = [c for c in conc if str(c) in points]
        a.plot(cs, [points[str(c)]["tok_s"] for c in cs], marker="o", label=name)
        b.plot(cs, [points[str(c)]["latency_ms_p50"] for c in cs], marker="o", label=name)
    for ax, title in ((a, "new tokens/s"), (b, "median latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(conc, [str(c) for c in conc])
        ax.set_xlabel("concurrent requests")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    b.set_yscale("log")
    a.legend(fontsize=8)
    fig.suptitle(
        f"{report['config']['model']}: {report['config']['max_tokens']} new tokens, greedy"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
