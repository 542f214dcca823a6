"""Per-row sampling settings inside one batch (pyfunc_server/sampling.py)."""

from __future__ import annotations


def test_per_row_sampling_keeps_greedy_rows_on_their_argmax():
    import torch

    from pyfunc_server.sampling import PerRowSampling, RowSettings

    rows = [
        RowSettings((1,), 4, greedy=True),
        RowSettings((1,), 4, greedy=False, temperature=0.5, top_k=2),
        RowSettings((1,), 4, greedy=False, temperature=1.0, top_p=0.5),
        RowSettings((1,), 4, greedy=False, temperature=2.0),
    ]
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0]] * 4)
    out = PerRowSampling(rows, "cpu")(None, scores)
    inf = float("inf")
    assert out[0].tolist() == [-inf, 0.0, -inf, -inf]  # greedy: only the argmax survives
    assert out[1].tolist() == [-inf, 6.0, 4.0, -inf]  # / 0.5, then the top 2
    assert out[2].tolist() == [-inf, 3.0, -inf, -inf]  # top_p 0.5: the top token holds 66 %
    assert out[3].tolist() == [0.5, 1.5, 1.0, 0.0]  # / 2, nothing cut
