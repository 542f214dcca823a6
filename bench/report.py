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
        "latency_ms_p50": statistics.median(lat) if lat else None,
        "latency_ms_p90": q(0.9),
        "errors": sum(p["errors"] for p in points),
        "error_sample": [e for p in points for e in p["error_sample"]][:3],
        "completion_tokens": statistics.mean(p["completion_tokens"] for p in points),
        "exact": statistics.mean(p["exact"] for p in points),
    }


def check_targets(results: dict, concurrency: list[int], overhead: dict | None = None) -> list[dict]:
    r = results
    checks = []

    def rps(name, c):
        return r.get(name, {}).get(str(c), {}).get("rps")

    def p50(name, c):
        return r.get(name, {}).get(str(c), {}).get("latency_ms_p50")

    if 1 in concurrency and 8 in concurrency:
        for name in ("proxy", "direct"):
            if rps(name, 1) and rps(name, 8):
                speedup = rps(name, 8) / rps(name, 1)
                checks.append({"target": f"8 concurrent vs 1 at a time ({name}) >= 4x",
                               "value": f"{speedup:.2f}x", "met": speedup >= 4})
    if 8 in concurrency:
        # Like for like (both behind tracking + gateway, both direct), then the UI's path against
        # the peer without any proxy in front.
        for ours, peer in (("proxy", "proxy-transformers-cb"), ("direct", "transformers-cb"),
                           ("proxy", "transformers-cb")):
            if rps(ours, 8) and rps(peer, 8):
                ratio = rps(ours, 8) / rps(peer, 8)
                checks.append({"target": f"{ours} at c=8 >= {peer} at c=8",
                               "value": f"{rps(ours, 8):.1f} vs {rps(peer, 8):.1f} req/s ({ratio:.2f}x)",
                               "met": ratio >= 1})
    for tokens, figures in sorted((overhead or {}).items(), key=lambda kv: -int(kv[0])):
        medians, paired = figures["median_ms"], figures["over_direct_ms"]
        for name in ("gateway", "proxy"):
            if name in paired:
                checks.append({"target": f"{name} overhead over direct, median of paired "
                                         f"differences, one at a time, {tokens} new tokens <= 10 ms",
                               "value": f"{paired[name]:.1f} ms (medians {medians[name]:.1f} vs "
                                        f"{medians['direct']:.1f})",
                               "met": paired[name] <= 10})
    return checks


def write_reports(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    conc = report["config"]["concurrency"]
    res = report["results"]
    lines = [f"# Benchmark: {report['config']['model']}", "",
             f"{report['config']['requests']} greedy chat requests per point, "
             f"{report['config']['max_tokens']} new tokens, median of {report['config']['rounds']} rounds; "
             f"{report['machine']}.", "",
             "Requests/s by concurrency:", "",
             "| target | " + " | ".join(f"c={c}" for c in conc) + " | p50 ms c=1 | p50 ms c=8 | answers exact |",
             "|---|" + "---:|" * len(conc) + "---:|---:|---:|"]
    for name, points in res.items():
        cells = [f"{points[str(c)]['rps']:.1f}" + (f" ({points[str(c)]['errors']} err)" if points[str(c)]["errors"] else "")
                 if str(c) in points else "" for c in conc]
        lat = [f"{points[str(c)]['latency_ms_p50']:.1f}" if str(c) in points and points[str(c)]["latency_ms_p50"] else ""
               for c in (1, 8)]
        exact = statistics.mean(p["exact"] for p in points.values())
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {lat[0]} | {lat[1]} | {exact:.0%} |")
    if report.get("overhead_ms"):
        names = list(next(iter(report["overhead_ms"].values()))["median_ms"])
        lines += ["", "Latency one request at a time, the targets taking turns (ms): median, and in "
                      "brackets the median of paired differences to direct:", "",
                  "| new tokens | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for tokens, figures in report["overhead_ms"].items():
            cells = [f"{figures['median_ms'][n]:.1f}" + (f" (+{figures['over_direct_ms'][n]:.1f})"
                                                         if n in figures["over_direct_ms"] else "")
                     for n in names]
            lines.append(f"| {tokens} | " + " | ".join(cells) + " |")
    lines += ["", "Targets:", ""]
    lines += [f"- [{'x' if c['met'] else ' '}] {c['target']}: {c['value']}" for c in report["checks"]]
    if report.get("memory"):
        lines += ["", "Server memory after the sweep (processes in the server's group, resident MB):", ""]
        lines += [f"- {k}: {v['processes']} processes, {v['rss_mb']} MB now, {v['peak_rss_mb']} MB peak"
                  for k, v in report["memory"].items()]
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, points in res.items():
        cs = [c for c in conc if str(c) in points]
        a.plot(cs, [points[str(c)]["rps"] for c in cs], marker="o", label=name)
        b.plot(cs, [points[str(c)]["latency_ms_p50"] for c in cs], marker="o", label=name)
    for ax, title in ((a, "requests/s"), (b, "median latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(conc, [str(c) for c in conc])
        ax.set_xlabel("concurrent requests")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    b.set_yscale("log")
    a.legend(fontsize=8)
    fig.suptitle(f"{report['config']['model']}: {report['config']['max_tokens']} new tokens, greedy")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
