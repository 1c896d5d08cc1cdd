"""ONNX Runtime int8 as the peer for edgeopt's int8 path: accuracy on real data and batch-1 latency.

    .venv/bin/python bench/quant_peers.py                       # everything (~3-5 min on 2 cores)
    .venv/bin/python bench/quant_peers.py efficientnet_lite0 minilm --rounds 1 --work /tmp/qp  # keep the ONNX files

Models and routes (recipes of ``../shared/notes/peers.md`` 2.1, 2.2 and 3):

- **EfficientNet-Lite0** and **MobileNetV2**, pretrained (``tests/models/zoo.py``), legacy ONNX export (opset 17,
  dynamic batch). int8: ORT static QDQ (``quant_pre_process``, then per-channel s8 weights, u8 activations,
  MinMax) calibrated on 64 real photo crops; ORT dynamic QInt8 where ORT runs it. Accuracy: top-1 agreement with
  PyTorch fp32 on 160 other crops (``bench/quant_data.py``; Lite0's ``(x - 0.5) / 0.5`` inputs, MobileNetV2's
  ImageNet mean / std).
- **all-MiniLM-L6-v2** ``BertModel`` (eager attention; ids + mask -> last_hidden_state), legacy export with
  dynamic batch and sequence axes. int8: ORT dynamic QInt8, and static QDQ as above calibrated on 64
  other sentences (one at a time, unpadded), once over every op type ORT quantizes (``int8_static``) and once
  over the MatMuls only (``int8_static_matmul``, the usual ORT recipe for transformers). Accuracy: cosine of
  the mean-pooled, L2-normalised embeddings against PyTorch fp32 over the other ~936 real English sentences.
  fp32 and static int8 are evaluated in batches of 32 (sorted by length, padded to the longest; both are
  batch-independent). Dynamic int8 quantizes each
  activation tensor with a range taken over the whole tensor, so it depends on the batch: it is scored
  both one sentence at a time, unpadded (``int8_dynamic``, as deployed) and in padded batches of 32 (the
  ``batch32_*`` figures, the protocol behind peers.md 5.2's 0.9615).
- **ResNet-18** (zoo, random weights: no pretrained ResNet ships in a package): latency only, fp32 vs static int8
  calibrated on 16 crops.

Name the models to run (default: all of ``MODELS``).

Latency: ORT ``CPUExecutionProvider``, ``intra_op_num_threads=2``, ``inter_op_num_threads=1``, all graph
optimisations, batch 1 (Lite0 1x3x224x224, MiniLM 1x128 padded, the CNNs 1x3x224x224). Every variant of a
model is timed once per round (5 warm-up + ``--calls`` timed calls, order flipped every round); reported: the
best round median, every round's median and the min. Each round waits for a quiet CPU (a 1-second sample at
least ``--min-idle`` % idle, for up to ``--quiet-timeout`` s) and logs the idle figure.

Writes bench/results/quant-peers-<YYYYMMDD-HHMMSS>.json (folder overridable by ``$EDGEOPT_BENCH_RESULTS``) with
the machine facts (CPU model, ``torch.backends.cpu.get_cpu_capability()``, load average).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import warnings

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import numpy as np  # noqa: E402

from bench import quant_data as qd  # noqa: E402
from bench.common import median_ms, save_results  # noqa: E402

THREADS = 2


# ---------------------------------------------------------------------------------------------- helpers


def ort_session(path: str, threads: int = THREADS):
    """An ONNX Runtime CPU session with the benchmark's thread settings (peers.md 2.2)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def export_legacy(model, args: tuple, path: str, input_names: list[str], dynamic_axes: dict) -> float:
    """TorchScript-based (legacy) ONNX export, opset 17, weights inside the file; returns seconds taken."""
    import torch

    t0 = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, path, input_names=input_names, output_names=["y"], dynamo=False,
                          opset_version=17, dynamic_axes=dynamic_axes)
    return time.perf_counter() - t0


@contextlib.contextmanager
def _quiet_ort_logging():
    """onnxruntime.quantization logs a warning on the root logger for every int64 shape tensor it skips."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def pre_process(src: str, dst: str) -> str:
    """``quant_pre_process`` (shape inference + ORT graph fusions) into ``dst``; returns how it went: ``"full"``,
    ``"no_symbolic_shapes"`` (ORT's symbolic shape inference gives up on MiniLM's dynamic axes, so the retry
    uses ONNX's shape inference only) or ``"skipped"`` (``dst`` is then a copy of ``src``)."""
    import shutil

    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = os.path.abspath(src), os.path.abspath(dst)
    for how, kw in (("full", {}), ("no_symbolic_shapes", {"skip_symbolic_shape": True})):
        cwd = os.getcwd()
        # a failed symbolic shape inference dumps sym_shape_infer_temp.onnx + a .data file into the cwd
        with tempfile.TemporaryDirectory(prefix="pre-process-") as tmp:
            os.chdir(tmp)
            try:
                quant_pre_process(src, dst, **kw)
                return how
            except Exception as e:  # an optimisation only: fall back
                print(f"  quant_pre_process ({how}) failed on {os.path.basename(src)}: {type(e).__name__}: {e}")
            finally:
                os.chdir(cwd)
    shutil.copyfile(src, dst)
    return "skipped"


def quantize_static_qdq(src: str, dst: str, feeds: list[dict], op_types: list[str] | None = None) -> dict:
    """ORT static QDQ int8: ``pre_process``, then ``quantize_static`` with per-channel s8 weights, u8
    activations and MinMax ranges over ``feeds`` (one dict of inputs per call); ``op_types``: quantize only
    these operator types (default: every type ORT can)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    t0 = time.perf_counter()
    pre = dst.replace(".onnx", "_pre.onnx")
    with _quiet_ort_logging():
        how = pre_process(src, pre)
        quantize_static(pre, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, op_types_to_quantize=op_types)
    # Not extra_options={"CalibMaxIntermediateOutputs": n}: in ORT 1.32 MinMaxCalibrater.collect_data drops
    # every full chunk of n outputs without folding it into the ranges (only the remainder is used).
    return {"quantize_s": round(time.perf_counter() - t0, 2), "pre_process": how, "n_calib_calls": len(feeds),
            "op_types": op_types or "all"}


def quantize_dynamic_int8(src: str, dst: str) -> dict:
    """ORT dynamic int8: QInt8 weights, activations quantized at run time (per tensor, per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    t0 = time.perf_counter()
    with _quiet_ort_logging():
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    return {"quantize_s": round(time.perf_counter() - t0, 2)}


def mb(path: str) -> float:
    return os.path.getsize(path) / 1e6


QUIET = {"min_idle": 90.0, "timeout": 20.0}  # set from the command line


def cpu_idle() -> float | None:
    """Quiet gate (peers.md 4): 1-second CPU-idle samples until one is at least ``QUIET["min_idle"]`` %, for at
    most ``QUIET["timeout"]`` s; returns the last sample (None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    end = time.time() + QUIET["timeout"]
    while True:
        idle = 100.0 - psutil.cpu_percent(interval=1.0)
        if idle >= QUIET["min_idle"] or time.time() > end:
            return round(idle, 1)


def time_variants(fns: dict, rounds: int, calls: int) -> tuple[dict, list]:
    """Batch-1 latency of each callable: ``rounds`` rounds, each timing every variant (5 warm-up calls, then
    ``calls`` timed ones; the order flips every round). Returns ({name: stats}, per-round idle samples)."""
    medians, mins, idle = {k: [] for k in fns}, {k: [] for k in fns}, []
    keys = list(fns)
    for r in range(rounds):
        idle.append(cpu_idle())
        for k in (keys if r % 2 == 0 else keys[::-1]):
            res = median_ms(fns[k], runs=calls, warmup=5)
            medians[k].append(round(res["median_ms"], 3))
            mins[k].append(res["min_ms"])
    stats = {k: {"best_median_ms": min(medians[k]), "round_medians_ms": medians[k], "min_ms": round(min(mins[k]), 3),
                 "calls": calls} for k in fns}
    return stats, idle


# ---------------------------------------------------------------------- pretrained image classifiers

MODELS = ["efficientnet_lite0", "minilm", "resnet18", "mobilenet_v2"]
#: each pretrained image classifier's ONNX file prefix (bench/quant.py's ORT_FILES names the same files)
IMAGE_CLASSIFIERS = {"efficientnet_lite0": "lite0", "mobilenet_v2": "mobilenet_v2"}


def image_classifier(name: str, work: str, n_calib: int, n_eval: int, rounds: int, calls: int) -> list[dict]:
    """A pretrained zoo classifier (``IMAGE_CLASSIFIERS``): ORT fp32, static QDQ and dynamic int8, their top-1
    agreement with PyTorch fp32 on real photo crops, and their latency."""
    import torch

    from tests.models.zoo import build

    norm, prefix = qd.MODEL_NORMS[name], IMAGE_CLASSIFIERS[name]
    model, _ = build(name, small=False)
    calib, ev = qd.calibration_and_eval(n_calib, n_eval, norm=norm)
    with torch.inference_mode():
        ref = np.concatenate([model(torch.from_numpy(ev[i:i + 16])).numpy() for i in range(0, len(ev), 16)])

    fp32 = os.path.join(work, f"{prefix}.onnx")
    export_s = export_legacy(model, (torch.from_numpy(ev[:1]),), fp32, ["x"], {"x": {0: "b"}, "y": {0: "b"}})
    paths = {"fp32": fp32}
    info = {"fp32": {"export_s": round(export_s, 2)}}
    paths["int8_static"] = os.path.join(work, f"{prefix}_qdq.onnx")
    info["int8_static"] = quantize_static_qdq(fp32, paths["int8_static"],
                                              [{"x": calib[i:i + 8]} for i in range(0, len(calib), 8)])
    paths["int8_dynamic"] = os.path.join(work, f"{prefix}_dyn.onnx")
    info["int8_dynamic"] = quantize_dynamic_int8(fp32, paths["int8_dynamic"])

    sessions, rows = {}, []
    for k, p in paths.items():
        row = {"model": name, "variant": k, "onnx_mb": round(mb(p), 2), **info[k],
               "n_calib": n_calib if k == "int8_static" else 0, "n_eval": len(ev)}
        try:
            s = ort_session(p)
            out = np.concatenate([s.run(None, {"x": ev[i:i + 16]})[0] for i in range(0, len(ev), 16)])
        except Exception as e:  # e.g. an int8 op ORT's CPU provider lacks
            row["failed"] = f"{type(e).__name__}: {str(e)[:300]}"
            rows.append(row)
            continue
        sessions[k] = s
        row["top1_agreement_vs_torch_fp32"] = qd.top1_agreement(out, ref)
        row["max_abs_diff_vs_torch_fp32"] = float(np.abs(out - ref).max())
        rows.append(row)

    x1 = ev[:1]
    stats, idle = time_variants({k: (lambda s=s: s.run(None, {"x": x1})) for k, s in sessions.items()},
                                rounds, calls)
    for row in rows:
        row.update(stats.get(row["variant"], {}), idle_per_round=idle)
    return rows


# ---------------------------------------------------------------------------------------------- MiniLM


def _sorted_batches(lengths: list[int], bs: int) -> list[np.ndarray]:
    """Indices of sentences grouped into batches of ``bs`` of similar length (fewer pad tokens)."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + bs] for i in range(0, len(order), bs)]


def _pooled(run, sentences: list[str], bs: int) -> np.ndarray:
    """Mean-pooled embeddings (N, 384) of ``run(ids, mask) -> (B, T, 384)``: batches of ``bs`` sentences of
    similar length, each padded to its longest; ``bs=1`` runs every sentence alone, unpadded."""
    lengths = [int(m.sum()) for m in qd.minilm_batch(sentences, 128)[1]]
    out = np.zeros((len(sentences), 384))
    for idx in _sorted_batches(lengths, bs):
        ids, mask = qd.minilm_batch([sentences[i] for i in idx], None)
        out[idx] = qd.mean_pool(run(ids, mask), mask)
    return out


def minilm(work: str, n_calib: int, n_sentences: int, rounds: int, calls: int) -> list[dict]:
    import torch

    from tests.models.zoo import minilm as zoo_minilm

    model, (ids0, mask0) = zoo_minilm(small=False)  # BertModel, eager attention, 1x128 padded sentence
    sentences = qd.english_sentences(1000)
    pick = np.random.default_rng(0).permutation(len(sentences))
    calib = [sentences[i] for i in sorted(pick[:n_calib])]
    ev = [sentences[i] for i in sorted(pick[n_calib:n_calib + n_sentences])]

    def torch_run(ids, mask):
        with torch.inference_mode():
            return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

    t0 = time.perf_counter()
    ref = _pooled(torch_run, ev, 32)
    torch_s = time.perf_counter() - t0

    fp32 = os.path.join(work, "minilm.onnx")
    axes = {"ids": {0: "b", 1: "s"}, "mask": {0: "b", 1: "s"}, "y": {0: "b", 1: "s"}}
    export_s = export_legacy(model, (ids0, mask0), fp32, ["ids", "mask"], axes)
    paths = {"fp32": fp32, "int8_dynamic": os.path.join(work, "minilm_dyn.onnx"),
             "int8_static": os.path.join(work, "minilm_qdq.onnx")}
    info = {"fp32": {"export_s": round(export_s, 2)},
            "int8_dynamic": quantize_dynamic_int8(fp32, paths["int8_dynamic"])}
    feeds = [dict(zip(("ids", "mask"), qd.minilm_batch([s], None))) for s in calib]
    info["int8_static"] = quantize_static_qdq(fp32, paths["int8_static"], feeds)
    paths["int8_static_matmul"] = os.path.join(work, "minilm_qdq_matmul.onnx")
    info["int8_static_matmul"] = quantize_static_qdq(fp32, paths["int8_static_matmul"], feeds, ["MatMul"])

    sessions, rows = {}, []
    for k, p in paths.items():
        row = {"model": "minilm", "variant": k, "onnx_mb": round(mb(p), 2), **info[k],
               "n_calib": n_calib if k.startswith("int8_static") else 0, "n_eval": len(ev)}
        try:
            s = ort_session(p)

            def run(ids, mask, s=s):
                return s.run(None, {"ids": ids, "mask": mask})[0]

            t0 = time.perf_counter()
            emb = _pooled(run, ev, 1 if k == "int8_dynamic" else 32)
            row["eval_s"] = round(time.perf_counter() - t0, 1)
        except Exception as e:  # recorded in the row
            row["failed"] = f"{type(e).__name__}: {str(e)[:300]}"
            rows.append(row)
            continue
        sessions[k] = s
        cos = qd.row_cosines(emb, ref)
        row.update(mean_cos_vs_torch_fp32=float(cos.mean()), min_cos_vs_torch_fp32=float(cos.min()),
                   eval_batch=1 if k == "int8_dynamic" else 32)
        if k == "int8_dynamic":  # the batch-dependent route, also under peers.md's batch-32 protocol
            cos32 = qd.row_cosines(_pooled(run, ev, 32), ref)
            row.update(batch32_mean_cos_vs_torch_fp32=float(cos32.mean()),
                       batch32_min_cos_vs_torch_fp32=float(cos32.min()))
        if k == "fp32":
            row["torch_fp32_eval_s"] = round(torch_s, 1)
        rows.append(row)

    ids1, mask1 = qd.minilm_batch([max(ev, key=len)], 128)  # 1x128, padded like the deployed static shape
    stats, idle = time_variants({k: (lambda s=s: s.run(None, {"ids": ids1, "mask": mask1}))
                                 for k, s in sessions.items()}, rounds, calls)
    for row in rows:
        row.update(stats.get(row["variant"], {}), idle_per_round=idle)
    return rows


# -------------------------------------------------------------------------------------------- ResNet-18


def random_weight_cnn(name: str, work: str, rounds: int, calls: int) -> list[dict]:
    """ResNet-18 with the zoo's random weights (no pretrained one ships in a package): speed only, static QDQ int8
    calibrated on 16 ImageNet-normalized crops."""
    import torch

    from tests.models.zoo import build

    model, (x,) = build(name, small=False)
    calib, _ = qd.calibration_and_eval(16, 16, norm="imagenet")
    fp32 = os.path.join(work, f"{name}.onnx")
    export_s = export_legacy(model, (x,), fp32, ["x"], {"x": {0: "b"}, "y": {0: "b"}})
    int8 = os.path.join(work, f"{name}_qdq.onnx")
    info = {"fp32": {"export_s": round(export_s, 2)},
            "int8_static": quantize_static_qdq(fp32, int8, [{"x": calib[i:i + 8]} for i in range(0, 16, 8)])}
    with torch.inference_mode():
        ref = model(x).numpy()
    xn = x.numpy()
    sessions = {"fp32": ort_session(fp32), "int8_static": ort_session(int8)}
    stats, idle = time_variants({k: (lambda s=s: s.run(None, {"x": xn})) for k, s in sessions.items()},
                                rounds, calls)
    rows = []
    for k, p in (("fp32", fp32), ("int8_static", int8)):
        out = sessions[k].run(None, {"x": xn})[0]
        rows.append({"model": name, "variant": k, "weights": "random (speed only)", "onnx_mb": round(mb(p), 2),
                     **info[k], "n_calib": 16 if k == "int8_static" else 0,
                     "max_abs_diff_vs_torch_fp32": float(np.abs(out - ref).max()), **stats[k],
                     "idle_per_round": idle})
    return rows


# ------------------------------------------------------------------------------------------------- main


def table(rows: list[dict]) -> str:
    head = f"{'model':<20}{'variant':<20}{'MB':>7}{'best med ms':>13}{'min ms':>9}  accuracy vs torch fp32"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "failed" in r:
            acc = "FAILED: " + r["failed"][:70]
        elif "top1_agreement_vs_torch_fp32" in r:
            acc = f"top-1 agreement {100 * r['top1_agreement_vs_torch_fp32']:.1f} % (n={r['n_eval']})"
        elif "mean_cos_vs_torch_fp32" in r:
            acc = f"cos mean {r['mean_cos_vs_torch_fp32']:.4f} min {r['min_cos_vs_torch_fp32']:.4f} (n={r['n_eval']}"
            acc += f", batch {r['eval_batch']})"
            if "batch32_mean_cos_vs_torch_fp32" in r:
                acc += (f"; batch 32: {r['batch32_mean_cos_vs_torch_fp32']:.4f}"
                        f" / {r['batch32_min_cos_vs_torch_fp32']:.4f}")
        else:
            acc = f"max diff {r['max_abs_diff_vs_torch_fp32']:.2g} (random weights)"
        med = f"{r['best_median_ms']:.2f}" if "best_median_ms" in r else "-"
        mn = f"{r['min_ms']:.2f}" if "min_ms" in r else "-"
        lines.append(f"{r['model']:<20}{r['variant']:<20}{r['onnx_mb']:>7.2f}{med:>13}{mn:>9}  {acc}")
    return "\n".join(lines)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help=f"any of {', '.join(MODELS)} (default: all)")
    ap.add_argument("--rounds", type=int, default=3, help="latency rounds per model (default 3)")
    ap.add_argument("--calls", type=int, default=20, help="timed calls per round (default 20)")
    ap.add_argument("--n-calib", type=int, default=64, help="calibration crops / sentences (default 64)")
    ap.add_argument("--n-eval", type=int, default=160, help="evaluation crops of the image classifiers (default 160)")
    ap.add_argument("--sentences", type=int, default=1000, help="max MiniLM evaluation sentences (default: all)")
    ap.add_argument("--min-idle", type=float, default=90.0, help="quiet gate: CPU idle %% wanted per round")
    ap.add_argument("--quiet-timeout", type=float, default=20.0, help="quiet gate: max wait per round (s)")
    ap.add_argument("--work", help="folder for the ONNX files (default: a temporary folder, deleted)")
    args = ap.parse_args(argv)
    args.models = args.models or MODELS
    if set(args.models) - set(MODELS):
        ap.error(f"unknown model(s) {sorted(set(args.models) - set(MODELS))}; choose from {MODELS}")
    QUIET.update(min_idle=args.min_idle, timeout=args.quiet_timeout)

    import onnxruntime
    import torch

    torch.set_num_threads(THREADS)
    t_start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        work = args.work or stack.enter_context(tempfile.TemporaryDirectory(prefix="quant-peers-"))
        os.makedirs(work, exist_ok=True)
        rows, seconds = [], {}
        steps = {"minilm": lambda: minilm(work, args.n_calib, args.sentences, args.rounds, args.calls),
                 "resnet18": lambda: random_weight_cnn("resnet18", work, args.rounds, args.calls)}
        for name in [m for m in MODELS if m in args.models]:
            fn = steps.get(name) or (lambda name=name: image_classifier(name, work, args.n_calib, args.n_eval,
                                                                        args.rounds, args.calls))
            t0 = time.perf_counter()
            print(f"[{name}] ...", flush=True)
            rows += fn()
            seconds[name] = round(time.perf_counter() - t0, 1)
            print(f"[{name}] done in {seconds[name]} s", flush=True)
    print()
    print(table(rows))
    import onnx

    return save_results("quant-peers", rows, threads=THREADS, onnxruntime=onnxruntime.__version__,
                        onnx=onnx.__version__, torch_threads=torch.get_num_threads(),
                        seconds_per_model=seconds, total_s=round(time.perf_counter() - t_start, 1),
                        latency_protocol={"rounds": args.rounds, "calls": args.calls, "warmup": 5,
                                          "stat": "best round median"})


if __name__ == "__main__":
    main()
