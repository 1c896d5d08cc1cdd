"""When does a sparse kernel pay? edgeopt's ``sparse_linear`` kernel (rows of (value, column) pairs, tokens in
vector lanes) against its dense linear kernel, at several sparsities; and whole MiniLM with its encoder pruned.

    .venv/bin/python bench/sparse.py [--rounds 20] [--small]

- **kernel**: ``nn.Linear(384, 1536)`` (MiniLM's FFN) with magnitude-pruned weights, for 1, 16 and 128 rows of
  input: compiled dense, and with the ``sparse_linear`` pass forced (``min_sparsity=0``);
- **minilm**: pretrained all-MiniLM-L6-v2 (128 tokens) with its encoder's weights pruned to each sparsity,
  compiled dense and with ``Compress(sparsity=...)`` as shipped (the pass's own thresholds decide).

Both of a pair run on 2 threads in this process, interleaved rounds; ``sparse_vs_dense`` is the median per-round
time ratio (below 1: sparse is faster). Results: bench/results/sparse-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import pin_threads, save_results  # noqa: E402


def _ratio(dense, sparse, args, rounds: int) -> dict:
    calls = {"dense": lambda: dense(*args), "sparse": lambda: sparse(*args)}
    for fn in calls.values():
        for _ in range(3):
            fn()
    ratios, times = [], {k: [] for k in calls}
    for i in range(rounds):
        per = {}
        for k in (list(calls) if i % 2 else list(calls)[::-1]):
            n = 10
            t0 = time.perf_counter()
            for _ in range(n):
                calls[k]()
            per[k] = times[k].append((time.perf_counter() - t0) / n * 1e3) or times[k][-1]
        ratios.append(per["sparse"] / per["dense"])
    return {"dense_ms": round(statistics.median(times["dense"]), 4),
            "sparse_ms": round(statistics.median(times["sparse"]), 4),
            "sparse_vs_dense": round(statistics.median(ratios), 3)}


def _prune(w, sparsity: float):
    import numpy as np

    w = w.copy()
    w.reshape(-1)[np.argpartition(np.abs(w).reshape(-1), int(w.size * sparsity))[:int(w.size * sparsity)]] = 0
    return w


def kernel(tokens: int, sparsity: float, rounds: int, rows: int = 1536, cols: int = 384) -> dict:
    import numpy as np
    import torch

    import edgeopt
    from edgeopt.pipeline import Pipeline, get_pass

    rng = np.random.default_rng(0)
    lin = torch.nn.Linear(cols, rows)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(_prune(rng.standard_normal((rows, cols)).astype(np.float32), sparsity)))
    x = rng.standard_normal((tokens, cols)).astype(np.float32)
    dense = edgeopt.compile(lin.eval(), (x,))
    forced = Pipeline.default(2, "host")
    forced.passes.insert(0, get_pass("sparse_linear", min_sparsity=0.0))
    sparse = edgeopt.compile(lin.eval(), (x,), passes=forced)
    assert sparse.graph.op_counts().get("sparse_linear") == 1
    np.testing.assert_allclose(sparse(x), dense(x), rtol=1e-4, atol=1e-4)
    return {"case": "kernel", "tokens": tokens, "rows": rows, "cols": cols, "sparsity": sparsity,
            **_ratio(dense, sparse, (x,), rounds)}


def minilm(sparsity: float, rounds: int, small: bool) -> dict:
    import numpy as np
    import torch

    import edgeopt
    from tests.models.zoo import build

    model, x = build("minilm", small=small)
    encoder = [p for n, p in model.named_parameters() if n.startswith("model.encoder.") and p.dim() == 2]
    with torch.no_grad():
        saved = [p.clone() for p in encoder]
        for p in encoder:
            p.copy_(torch.from_numpy(_prune(p.numpy(), sparsity)))
        dense = edgeopt.compile(model, x)
        sparse = edgeopt.compile(model, x, compress=edgeopt.Compress(sparsity=sparsity,
                                                                       sparsity_layers=("model.encoder.*",)))
        for p, s in zip(encoder, saved):
            p.copy_(s)
    xs = [t.numpy() for t in x]
    want = dense(*xs)  # the same weights; only the order of the sums differs (through 6 layers)
    np.testing.assert_allclose(sparse(*xs), want, rtol=1e-2, atol=5e-3 * float(np.abs(want).max()))
    layers = len(sparse.report["compression"]["sparse_linear"]["sparse_layers"])
    return {"case": "minilm", "tokens": int(x[0].shape[1]), "sparsity": sparsity, "sparse_layers": layers,
            **_ratio(dense, sparse, xs, rounds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--small", action="store_true", help="a quick smoke run")
    args = ap.parse_args()
    pin_threads(2)
    rounds = 2 if args.small else args.rounds
    rows = []
    for tokens in ([16] if args.small else [1, 16, 128]):
        for s in ([0.9] if args.small else [0.5, 0.8, 0.9, 0.95, 0.98]):
            rows.append(kernel(tokens, s, rounds))
            print(rows[-1], flush=True)
    for s in ([0.9] if args.small else [0.8, 0.9, 0.95]):
        rows.append(minilm(s, rounds, args.small))
        print(rows[-1], flush=True)
    save_results("sparse", rows, small=args.small)


if __name__ == "__main__":
    main()
