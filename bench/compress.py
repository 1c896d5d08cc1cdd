"""Compression beyond quantization: what structured pruning and low rank save, and what distillation gives back.

    .venv/bin/python bench/compress.py              # all three experiments (~6 min on 2 cores)
    .venv/bin/python bench/compress.py digits       # one of them
    .venv/bin/python bench/compress.py --small      # a quick smoke run (CI's bench test)

- **digits**: a CNN (``DigitsResNet``: residual block, depthwise, pointwise) trained here on scikit-learn's
  handwritten digits; 50% structured filter pruning (``edgeopt.compress.prune``), then distillation from the
  original with the labels (``edgeopt.compress.distill``). Test accuracy of the original, the pruned model
  before and after distillation; MACs and weights; the edgeopt latency of both (batch 32, compiled for host,
  interleaved rounds in one process: a ratio, measured in the same run).
- **minilm**: pretrained all-MiniLM-L6-v2, its 12 FFN linears factored at a 0.5 parameter budget
  (``edgeopt.compress.low_rank``, with the training sentences as ``data``: factors that keep the layers' outputs;
  the plain weight SVD's cosine is printed beside); mean cosine of the sentence embeddings to the original's on
  held-out real sentences before and after a short distillation (cosine loss) on the other, unlabeled sentences;
  weights and the edgeopt latency of both (batch 1, 128 tokens).
- **explore**: ``edgeopt.explore`` on the digits CNN (test accuracy on the real labels, batch 32): the default
  grid of quantization, pruning and low-rank settings, its table and Pareto plot
  (bench/results/compress-pareto-<time>.png).

Writes bench/results/compress-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import interleaved_ms, pin_threads, save_results  # noqa: E402


def _latency_ratio(models: dict, x, rounds: int) -> dict:
    times = interleaved_ms(models, x, rounds)
    med = {k: statistics.median(t for block in v for t in block) for k, v in times.items()}
    base = next(iter(med))
    return {**{f"{k}_ms": round(v, 4) for k, v in med.items()},
            **{f"{k}_vs_{base}": round(v / med[base], 3) for k, v in med.items() if k != base}}


def digits(small: bool, rounds: int) -> dict:
    import numpy as np
    import torch

    import edgeopt
    from bench.digits_cnn import DigitsResNet, digits_split, train_digits
    from edgeopt.compress import distill, prune

    def accuracy(model, x, y):
        with torch.no_grad():
            return round(float((model(x).argmax(1).numpy() == np.asarray(y)).mean()), 4)

    t0 = time.perf_counter()
    teacher, *_ = train_digits(epochs=2 if small else 12, model=DigitsResNet())
    x_tr, y_tr, x_te, y_te = digits_split()
    train_s = time.perf_counter() - t0
    student, res = prune(teacher, (x_tr[:1],), 0.5, return_result=True)
    row = {"experiment": "digits 50% structured pruning + distillation", "train_seconds": round(train_s, 1),
           "accuracy_original": accuracy(teacher, x_te, y_te), "accuracy_pruned": accuracy(student, x_te, y_te),
           "channels_removed": res.channels, "macs_original": res.macs_before, "macs_pruned": res.macs_after,
           "params_original": res.params_before, "params_pruned": res.params_after}
    t0 = time.perf_counter()
    batches = [(x_tr[i:i + 64], y_tr[i:i + 64]) for i in range(0, len(x_tr), 64)]
    out = distill(teacher, student, batches, labels=True, epochs=2 if small else 20, lr=3e-3)
    row["distill_seconds"] = round(time.perf_counter() - t0, 1)
    row["accuracy_distilled"] = accuracy(out.model, x_te, y_te)
    row["points_lost"] = round(100 * (row["accuracy_original"] - row["accuracy_distilled"]), 2)
    x = x_te[:32]
    compiled = {"original": edgeopt.compile(teacher, (x,)), "pruned": edgeopt.compile(out.model, (x,))}
    row.update(_latency_ratio(compiled, (x.numpy(),), rounds))
    row["weight_bytes_original"] = compiled["original"].report["weight_bytes"]
    row["weight_bytes_pruned"] = compiled["pruned"].report["weight_bytes"]
    return row


def minilm(small: bool, rounds: int) -> dict:
    import numpy as np
    import torch

    import edgeopt
    from bench.quant_data import english_sentences, minilm_batch
    from edgeopt.compress import distill, low_rank
    from tests.models.zoo import build

    bert = build("minilm", small=True)[0].model

    class Embedder(torch.nn.Module):
        """Mean-pooled, L2-normalized sentence embeddings (sentence-transformers' pooling of MiniLM)."""

        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask[..., None].to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(e, dim=-1)

    teacher = Embedder(bert).eval()
    n = 64 if small else 500
    sentences = english_sentences(2 * n)
    train_ids, train_mask = minilm_batch(sentences[:n], seq=64)
    test_ids, test_mask = minilm_batch(sentences[n:2 * n], seq=64)
    ffn = ("bert.encoder.layer.?.intermediate.dense", "bert.encoder.layer.?.output.dense")
    batches = [{"input_ids": torch.from_numpy(train_ids[i:i + 16]), "attention_mask": torch.from_numpy(
        train_mask[i:i + 16])} for i in range(0, n, 16)]
    plain = low_rank(teacher, budget=0.5, layers=ffn)  # factors of the weights alone
    student, res = low_rank(teacher, budget=0.5, layers=ffn, data=batches, return_result=True)  # of the outputs

    def mean_cosine(model):
        with torch.no_grad():
            ids, mask = torch.from_numpy(test_ids), torch.from_numpy(test_mask)
            a = torch.cat([teacher(ids[i:i + 50], mask[i:i + 50]) for i in range(0, len(ids), 50)])
            b = torch.cat([model(ids[i:i + 50], mask[i:i + 50]) for i in range(0, len(ids), 50)])
        return round(float((a * b).sum(-1).mean()), 5)

    row = {"experiment": "MiniLM FFN low rank at a 0.5 parameter budget + distillation", "sentences_train": n,
           "sentences_test": n, "ffn_weights_original": res.params_before, "ffn_weights_low_rank": res.params_after,
           "ranks": sorted({v["rank"] for v in res.layers.values()}),
           "cosine_weight_svd": mean_cosine(plain), "cosine_before_distill": mean_cosine(student)}
    t0 = time.perf_counter()
    out = distill(teacher, student, batches, loss="cosine", epochs=1 if small else 3, lr=1e-4)
    row["distill_seconds"] = round(time.perf_counter() - t0, 1)
    row["cosine_after_distill"] = mean_cosine(out.model)
    ids, mask = minilm_batch(sentences[:1], seq=32 if small else 128)
    x = (torch.from_numpy(ids), torch.from_numpy(mask))
    compiled = {"original": edgeopt.compile(teacher, x), "low_rank": edgeopt.compile(out.model, x)}
    row.update(_latency_ratio(compiled, tuple(np.asarray(t) for t in x), rounds))
    row["weight_bytes_original"] = compiled["original"].report["weight_bytes"]
    row["weight_bytes_low_rank"] = compiled["low_rank"].report["weight_bytes"]
    return row


def explore(small: bool, rounds: int) -> dict:
    import numpy as np

    import edgeopt
    from bench.digits_cnn import DigitsResNet, digits_split, train_digits

    teacher, *_ = train_digits(epochs=2 if small else 12, model=DigitsResNet())
    x_tr, y_tr, x_te, y_te = digits_split()
    n = 64 if small else len(x_te) // 32 * 32
    data = [x_te[i:i + 32] for i in range(0, n, 32)]
    labels = [y_te[i:i + 32].numpy() for i in range(0, n, 32)]

    def accuracy(run, batches):
        return float(np.mean([np.mean(run(*b).argmax(-1) == y) for b, y in zip(batches, labels)]))

    calib = [x_tr[i:i + 32] for i in range(0, 64 * (1 if small else 4), 32)]
    result = edgeopt.explore(teacher, (data[0],), data, accuracy, calibration_data=calib, runs=rounds)
    print(result)
    out_dir = os.environ.get("EDGEOPT_BENCH_RESULTS") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                      "results")
    os.makedirs(out_dir, exist_ok=True)
    plot = result.plot(os.path.join(out_dir, f"compress-pareto-{time.strftime('%Y%m%d-%H%M%S')}.png"))
    return {"experiment": "explore (digits CNN, test accuracy on labels, batch 32)", "plot": os.path.basename(plot),
            "settings": result.rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("experiments", nargs="*", choices=["digits", "minilm", "explore", []], help="default: all")
    ap.add_argument("--small", action="store_true", help="a quick smoke run: few epochs and sentences")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    pin_threads(2)
    rows = []
    for name in args.experiments or ["digits", "minilm", "explore"]:
        row = {"digits": digits, "minilm": minilm, "explore": explore}[name](args.small,
                                                                            3 if args.small else args.rounds)
        print(row, flush=True)
        rows.append(row)
    save_results("compress", rows, small=args.small)


if __name__ == "__main__":
    main()
