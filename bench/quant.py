"""Quantization: how much faster, how much accuracy kept, how much smaller -- edgeopt's int8 / int4 modes beside
ONNX Runtime's int8, on real data, in one run.

    .venv/bin/python bench/quant.py                                   # everything (~20 min on 2 cores)
    .venv/bin/python bench/quant.py minilm --sentences 500 --rounds 3
    .venv/bin/python bench/quant.py --small                           # a quick smoke run (CI's bench test)

Accuracy (each against PyTorch fp32, on data that ships in packages, ``bench/quant_data.py``):
- **EfficientNet-Lite0** and **MobileNetV2** (pretrained): top-1 agreement and the logits' mean 1 - cosine on 800
  real photo crops (``--n-eval``; on 160, the count of crops that flip moved by 3 points between builds whose
  cosines were the same), static int8 calibrated on 64 other crops (one compile per calibrator: minmax, percentile,
  entropy, mse; and the first with one scale per activation: ``QuantConfig.activation_scales="per-tensor"``);
- **all-MiniLM-L6-v2** (pretrained): mean cosine of the mean-pooled embeddings over real English sentences, for
  int8-weight, int4-weight, int8-dynamic and static int8 (calibrated on 64 other sentences);
- **a digits CNN** trained here (``bench/digits_cnn.py``): test accuracy, fp32 vs static int8.

ONNX Runtime's figures on the same data come from ``bench/quant_peers.py``, run as its own process in this run
(static QDQ per-channel s8/u8 and dynamic QInt8; its ONNX files are reused for the timing below).

Speed: batch 1, 2 threads. Every variant of a model (edgeopt fp32 and int8 artifacts run by edgeopt's runtime;
ONNX Runtime fp32 and int8) runs in a process of its own (``bench/peer_workers.py``); a round times each once,
in a rotating order, each after a quiet gate (a 1-s sample of idle CPU: the previous worker's pool threads spin
for a while after its calls); ratios are medians of per-round ratios (paired). ResNet-18 uses the zoo's random
weights (speed only: no pretrained ResNet ships in a package).

The image's conv: the default (``int8_image_convs="auto"``) quantizes a 7x7 stem (ResNet-18's) on the crops'
exact 8-bit pixels with GPTQ's levels and keeps a 3x3 stem float. Lite0 also gets ``int8-img``
(``int8_image_convs=True``: its 3x3 stem as one int8 conv, nearest levels): agreement and speed, and so does
MobileNetV2; ResNet-18 gets ``int8-float-stem`` (``int8_image_convs=False``): the speed the default's stem buys.
On a CPU with AVX512-VNNI and VBMI, Lite0 and MobileNetV2 also get ``int8-plain-dw`` (``disable=
["depthwise_int8_taps"]``): their depthwise convs on plain vector code, the speed the window-tap kernels buy.
On a CPU with AMX tiles (Intel Xeon Sapphire Rapids and later), every static int8 model also gets ``int8-vnni``:
the same build for this CPU without AMX (its convs and linear layers on ``vpdpbusd``), the speed the tiles buy.

``--budgets 0.001 0.0002``: Lite0 and MobileNetV2 (in a smoke run, the small random-weight models) also get one
build per accuracy budget (``int8-budget-0.001``: ``QuantConfig(max_drop=0.001, metric="cosine")``, the layers
that add the most error kept float until the logits' 1 - cosine on the calibration crops is within it):
agreement, layers kept float and speed, the price of accuracy.

``--target x86-64-v3 --no-peers``: every edgeopt build for AVX2 + FMA only (int8 on ``vpmaddubsw``, 7-bit weights
chosen by GPTQ: ``QuantConfig.reduce_range``), timed here: the int8 / fp32 ratio of a CPU without VNNI (Zen 3), as
far as this CPU runs that code alike.

Size: the artifact's weight bytes, int8 vs fp32.

Writes bench/results/quant-<time>.json with the machine facts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TVM_NUM_THREADS", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from bench import quant_data as qd  # noqa: E402
from bench.common import save_results  # noqa: E402

MODELS = ["efficientnet_lite0", "minilm", "digits", "resnet18", "mobilenet_v2"]
#: the builds a model may have, in the speed workers' order (each round rotates it), then its accuracy budgets'
VARIANTS = ("fp32", "int8", "int8-dynamic", "int8-img", "int8-float-stem", "int8-plain-dw", "int8-vnni")
CALIBRATORS = ["minmax", "percentile", "entropy", "mse"]
MINILM_MODES = ["int8-weight", "int4-weight", "int8-dynamic", "int8"]
#: the ONNX Runtime int8 file quant_peers.py writes for each model, and the fp32 one
ORT_FILES = {"efficientnet_lite0": ("lite0.onnx", "lite0_qdq.onnx"), "minilm": ("minilm.onnx", "minilm_dyn.onnx"),
             "resnet18": ("resnet18.onnx", "resnet18_qdq.onnx"),
             "mobilenet_v2": ("mobilenet_v2.onnx", "mobilenet_v2_qdq.onnx")}


def _compile(args, model, inputs, **kw):
    import edgeopt

    t0 = time.perf_counter()
    c = edgeopt.compile(model, inputs, target=args.target, **kw)
    return c, time.perf_counter() - t0


def _static(args, **kw):
    """The static int8 config of every compile here (``--weight-rounding``), with ``kw``."""
    import edgeopt

    return edgeopt.QuantConfig(mode="int8", weight_rounding=args.weight_rounding, **kw)


def _size(c) -> dict:
    q = c.report.get("quantization", {})
    return {"weight_bytes": c.report["weight_bytes"], "weight_ratio": q.get("weight_ratio", 1.0),
            "kernels_by_precision": q.get("kernels_by_precision"), "kept_float": q.get("kept_float", [])}


# ------------------------------------------------------------------------------------------------ accuracy
def image_accuracy(name: str, args, artifacts: dict) -> list[dict]:
    """A pretrained classifier's top-1 agreement with PyTorch fp32 and its logits' 1 - cosine on real photo crops:
    fp32, static int8 with each calibrator, with one scale per activation (``activation_scales="per-tensor"``),
    with its 3x3 stem in int8 too (``int8_image_convs=True``), and one build per accuracy budget (``--budgets``)."""
    import torch

    from tests.models.zoo import build

    model, _ = build(name, small=False)
    calib, ev = qd.calibration_and_eval(args.n_calib, args.n_eval, norm=qd.MODEL_NORMS[name])
    with torch.inference_mode():
        ref = np.concatenate([model(torch.from_numpy(ev[i:i + 16])).numpy() for i in range(0, len(ev), 16)])
    x1 = (torch.from_numpy(ev[:1]),)
    rows = []
    fp32, secs = _compile(args, model, x1)
    out = np.concatenate([fp32(ev[i:i + 1]) for i in range(len(ev))])
    rows.append({"model": name, "variant": "fp32", "compile_s": round(secs, 1), **_fidelity(out, ref), **_size(fp32)})
    artifacts[name] = {"fp32": fp32}
    batches = [torch.from_numpy(calib[i:i + 1]) for i in range(len(calib))]

    def int8_row(variant: str, calibrator: str, **config):
        c, secs = _compile(args, model, x1, quantize=_static(args, calibrator=calibrator, **config),
                           calibration_data=batches)
        out = np.concatenate([c(ev[i:i + 1]) for i in range(len(ev))])
        rows.append({"model": name, "variant": variant, "calibrator": calibrator, "compile_s": round(secs, 1),
                     **_fidelity(out, ref), "n_calib": len(calib), "n_eval": len(ev), **_size(c)})
        if "max_drop" in config:  # none kept where the int8 build meets the budget (the search did not run)
            rows[-1]["kept_for_budget"] = len(c.report["quantization"]["accuracy_check"].get("kept_for_budget", []))
        return c

    first = args.calibrators[0]
    for cal in args.calibrators:
        c = int8_row(f"int8 ({cal})", cal)
        if cal == first:
            artifacts[name]["int8"] = c
    # one scale per activation: what a scale per channel buys (QuantConfig.activation_scales), first calibrator
    int8_row(f"int8 ({first}, activation scales per tensor)", first, activation_scales="per-tensor")
    # the stem in int8 too, on the crops' exact pixels
    artifacts[name]["int8-img"] = int8_row("int8 (minmax, int8 image conv)", "minmax", int8_image_convs=True)
    for b in args.budgets:  # the accuracy budget: layers kept float until the calibration crops' cosine holds
        artifacts[name][f"int8-budget-{b}"] = int8_row(f"int8 ({first}, accuracy budget: 1 - cosine <= {b})", first,
                                                       max_drop=b, metric="cosine")
    if _has_depthwise_taps(args):  # the depthwise convs on plain vector code: what their window-tap kernels buy
        plain = _static(args, calibrator=first)  # the int8 build's, so that only the kernels differ
        artifacts[name]["int8-plain-dw"] = _compile(args, model, x1, quantize=plain, calibration_data=batches,
                                                    disable=["depthwise_int8_taps"])[0]
    _without_amx(args, artifacts[name], model, x1, _static(args, calibrator=first), batches)
    return rows


def _without_amx(args, arts: dict, model, inputs, quantize, batches) -> None:
    """On a CPU with AMX tiles: ``int8-vnni``, the int8 build with the same calibration for this CPU without them
    (its convs and linear layers on ``vpdpbusd``): the speed the tile kernels buy."""
    from edgeopt.targets import get_target

    import edgeopt

    if args.target != "host" or not get_target(args.target).amx():
        return
    vnni = get_target("host", mattr=["-amx-tile", "-amx-int8"])
    arts["int8-vnni"] = edgeopt.compile(model, inputs, target=vnni, quantize=quantize, calibration_data=batches)


def _has_depthwise_taps(args) -> bool:
    from edgeopt.targets import get_target

    from edgeopt.lower.int8_dot import is_depthwise

    return any(is_depthwise(name) for name, _, _ in get_target(args.target).int8_dots())


def minilm_accuracy(args, artifacts: dict) -> list[dict]:
    import torch

    from tests.models.zoo import minilm

    model, (ids0, mask0) = minilm(small=False)
    sentences = qd.english_sentences()
    calib, ev = sentences[:args.n_calib], sentences[args.n_calib:args.n_calib + args.sentences]
    ids, mask = qd.minilm_batch(ev, 128)
    with torch.inference_mode():
        ref = np.concatenate([model(torch.from_numpy(ids[i:i + 32]), torch.from_numpy(mask[i:i + 32])).numpy()
                              for i in range(0, len(ev), 32)])
    cids, cmask = qd.minilm_batch(calib, 128)
    batches = [(torch.from_numpy(cids[i:i + 1]), torch.from_numpy(cmask[i:i + 1])) for i in range(len(calib))]
    rows, artifacts["minilm"] = [], {}
    for mode in ["fp32", *args.minilm_modes]:
        kw = {} if mode == "fp32" else {"quantize": mode}
        if mode == "int8":
            kw["calibration_data"], kw["quantize"] = batches, _static(args)
        c, secs = _compile(args, model, (ids0, mask0), **kw)
        out = np.concatenate([c(ids[i:i + 1], mask[i:i + 1]) for i in range(len(ev))])
        cos = qd.row_cosines(out, ref, mask)
        rows.append({"model": "minilm", "variant": mode, "compile_s": round(secs, 1), "mean_cosine": float(cos.mean()),
                     "min_cosine": float(cos.min()), "n_eval": len(ev), **_size(c)})
        artifacts["minilm"][mode] = c
        if mode == "int8":
            _without_amx(args, artifacts["minilm"], model, (ids0, mask0), _static(args), batches)
    return rows


def digits_accuracy(args, artifacts: dict) -> list[dict]:
    from bench.digits_cnn import accuracy, train_digits

    model, x_train, x_test, y_test = train_digits(epochs=3 if args.small else 12)
    fp32, _ = _compile(args, model, (x_test[:1],))
    int8, _ = _compile(args, model, (x_test[:1],), quantize=_static(args),
                       calibration_data=[x_train[i:i + 1] for i in range(64)])
    a32, a8 = accuracy(fp32, x_test, y_test), accuracy(int8, x_test, y_test)
    return [{"model": "digits_cnn", "variant": "fp32", "accuracy": a32, **_size(fp32)},
            {"model": "digits_cnn", "variant": "int8", "accuracy": a8,
             "accuracy_drop_points": round(100 * (a32 - a8), 2), "n_test": len(y_test), **_size(int8)}]


def random_weight_models(args, artifacts: dict) -> list[dict]:
    """ResNet-18 (random weights: speed only), and MobileNetV2's small variant in a smoke run (``--small``)."""
    import torch

    from tests.models.zoo import build

    rows = []
    for name in [m for m in ("resnet18", "mobilenet_v2") if m in args.models and (args.small or m == "resnet18")]:
        model, x = build(name, small=args.small)
        calib = None if args.small else qd.calibration_and_eval(16, 16, norm="imagenet")[0]
        batches = [x] * 4 if args.small else [torch.from_numpy(calib[i:i + 1]) for i in range(len(calib))]
        fp32, s32 = _compile(args, model, x)
        int8, s8 = _compile(args, model, x, quantize=_static(args), calibration_data=batches)
        artifacts[name] = {"fp32": fp32, "int8": int8}
        if not args.small:  # the image's conv float: what the default's int8 stem buys
            artifacts[name]["int8-float-stem"] = _compile(args, model, x,
                                                          quantize=_static(args, int8_image_convs=False),
                                                          calibration_data=batches)[0]
        _without_amx(args, artifacts[name], model, x, _static(args), batches)
        for b in (args.budgets if args.small else []):  # a smoke run's stand-ins for the image models
            budget = _static(args, max_drop=b, metric="cosine")
            artifacts[name][f"int8-budget-{b}"] = _compile(args, model, x, quantize=budget, calibration_data=batches)[0]
        agree = qd.top1_agreement(int8(x[0].numpy()), fp32(x[0].numpy()))
        rows.append({"model": name, "variant": "int8", "compile_s": round(s8, 1), "agrees_on_example": agree,
                     **_size(int8)})
    return rows


# --------------------------------------------------------------------------------------------------- speed
def _workdir(root: str, model: str, variant: str, artifact, inputs: list, onnx: str | None) -> str:
    d = os.path.join(root, f"{model}-{variant}")
    os.makedirs(d, exist_ok=True)
    np.savez(os.path.join(d, "inputs.npz"), **{f"arg{i}": a for i, a in enumerate(inputs)})
    out = artifact(*inputs)
    np.save(os.path.join(d, "reference.npy"), out[0] if isinstance(out, tuple) else out)
    artifact.save(os.path.join(d, "model.edgeopt"))
    if onnx:
        shutil.copy(onnx, os.path.join(d, "model.onnx"))
    return d


def speed(args, artifacts: dict, ort_work: str | None) -> list[dict]:
    """Paired rounds over edgeopt fp32 / int8 and ONNX Runtime fp32 / int8, each in its own process."""
    from bench.peers import Worker, wait_quiet

    rows = []
    with tempfile.TemporaryDirectory(prefix="quant-speed-") as root:
        for model, arts in artifacts.items():
            inputs = _speed_inputs(model, arts["fp32"], args)
            onnx = ORT_FILES.get(model) if ort_work else None
            workers = {}
            for variant in [v for v in VARIANTS if v in arts] + [v for v in arts if v.startswith("int8-budget-")]:
                ort_file = None
                if onnx and variant in ("fp32", "int8", "int8-dynamic"):
                    ort_file = os.path.join(ort_work, onnx[0] if variant == "fp32" else onnx[1])
                    ort_file = ort_file if os.path.exists(ort_file) else None
                d = _workdir(root, model, variant, arts[variant], inputs, ort_file)
                workers[f"edgeopt {variant}"] = Worker("edgeopt", model, d, args.small)
                if ort_file and variant != "int8":  # ORT's MiniLM int8 is dynamic: paired with edgeopt's dynamic
                    workers[f"onnxruntime {'fp32' if variant == 'fp32' else 'int8'}"] = Worker("onnxruntime", model, d,
                                                                                              args.small)
                elif ort_file and model != "minilm":
                    workers["onnxruntime int8"] = Worker("onnxruntime", model, d, args.small)
            times = {k: [] for k in workers}
            names = list(workers)
            for r in range(args.rounds):
                for k in names[r % len(names):] + names[:r % len(names)]:
                    # a quiet CPU before each variant, not only each round: the previous worker's pool threads
                    # spin for a while after its calls (TVM's, ONNX Runtime's) and took a core from the next one
                    # (ONNX Runtime's MiniLM ran 11.5-24.5 ms right after edgeopt's workers, 7.0 in its own run)
                    wait_quiet(args.min_idle, args.quiet_timeout)
                    times[k].append(statistics.median(workers[k].time(args.calls)))
            for w in workers.values():
                w.close()
            row = {"model": model, "round_medians_ms": times,
                   "best_ms": {k: min(v) for k, v in times.items()}}
            row["ratios"] = _paired_ratios(times)
            rows.append(row)
            print(f"[speed] {model}: " + ", ".join(f"{k} {min(v):.2f} ms" for k, v in times.items()), flush=True)
    return rows


def _paired_ratios(times: dict) -> dict:
    """Median over rounds of (a / b) for the pairs the issue asks about."""
    pairs = [("edgeopt int8", "edgeopt fp32"), ("edgeopt int8", "onnxruntime int8"),
              ("edgeopt int8-img", "edgeopt fp32"), ("edgeopt int8-img", "onnxruntime int8"),
              ("edgeopt int8-float-stem", "edgeopt fp32"), ("edgeopt int8", "edgeopt int8-float-stem"),
              ("edgeopt int8", "edgeopt int8-plain-dw"), ("edgeopt int8", "edgeopt int8-vnni"),
              ("edgeopt int8-dynamic", "edgeopt fp32"), ("edgeopt int8-dynamic", "onnxruntime int8"),
              ("edgeopt fp32", "onnxruntime fp32"), ("onnxruntime int8", "onnxruntime fp32")]
    budgets = [k for k in times if k.startswith("edgeopt int8-budget-")]
    pairs += [(b, other) for b in budgets for other in ("edgeopt fp32", "edgeopt int8", "onnxruntime int8")]
    return {f"{a} / {b}": round(statistics.median(x / y for x, y in zip(times[a], times[b])), 3)
            for a, b in pairs if a in times and b in times}


def _fidelity(out: np.ndarray, ref: np.ndarray) -> dict:
    """Top-1 agreement of logits ``out`` with ``ref``, and their mean 1 - cosine (which a dozen near-ties do not
    decide)."""
    return {"top1_agreement": qd.top1_agreement(out, ref),
            "logits_one_minus_cosine": round(1 - qd.mean_cosine(out, ref), 7)}


def _speed_inputs(model: str, artifact, args) -> list:
    if model == "minilm":
        ids, mask = qd.minilm_batch([max(qd.english_sentences()[:200], key=len)], 128)
        return [ids, mask]
    shape = tuple(artifact.plan["inputs"][0]["shape"])
    if args.small:
        return [np.random.default_rng(0).standard_normal(shape).astype(np.float32)]
    norm = qd.MODEL_NORMS.get(model, "imagenet")
    return [qd.calibration_and_eval(0, 8, norm=norm, size=shape[-1])[1][:1]]


# ---------------------------------------------------------------------------------------------------- main
def run_peers(args) -> tuple[str | None, dict | None, str | None]:
    """bench/quant_peers.py in its own process; returns (its ONNX folder, its results, its results path)."""
    peer_models = [m for m in args.models if m != "digits"]
    if args.no_peers or not peer_models:
        return None, None, None
    work = tempfile.mkdtemp(prefix="quant-peers-")
    cmd = [sys.executable, os.path.join(ROOT, "bench", "quant_peers.py"), "--work", work, "--rounds", str(args.rounds),
           "--n-calib", str(args.n_calib), "--n-eval", str(args.n_eval), "--sentences", str(args.sentences)]
    cmd += peer_models
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if proc.returncode:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        return None, {"failed": proc.stderr[-1000:]}, None
    path = next((ln.split(" ", 1)[1].strip() for ln in proc.stdout.splitlines()[::-1] if ln.startswith("wrote ")), "")
    try:
        with open(path) as f:
            return work, json.load(f), path
    except OSError:
        return work, None, None


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help=f"any of {', '.join(MODELS)} (default: all)")
    ap.add_argument("--calibrators", nargs="+", default=CALIBRATORS, choices=CALIBRATORS)
    ap.add_argument("--minilm-modes", nargs="+", default=MINILM_MODES, choices=MINILM_MODES)
    ap.add_argument("--weight-rounding", default="auto", choices=["auto", "nearest", "gptq"],
                    help="QuantConfig.weight_rounding of every static int8 compile")
    ap.add_argument("--budgets", nargs="+", type=float, default=[],
                    help="Lite0 and MobileNetV2 (--small: the random-weight ResNet-18 and MobileNetV2): one more "
                         "static int8 build per value, QuantConfig(max_drop=value, metric='cosine')")
    ap.add_argument("--n-calib", type=int, default=64)
    ap.add_argument("--n-eval", type=int, default=800)
    ap.add_argument("--sentences", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--min-idle", type=float, default=90.0)
    ap.add_argument("--quiet-timeout", type=float, default=20.0)
    ap.add_argument("--target", default="host",
                    help="edgeopt's target for every compile (x86-64-v3: the AVX2 code paths, int8 on vpmaddubsw, "
                         "timed on any AVX2 CPU; ONNX Runtime then still runs its own best code: use --no-peers)")
    ap.add_argument("--no-peers", action="store_true", help="skip ONNX Runtime")
    ap.add_argument("--no-speed", action="store_true", help="accuracy and size only")
    ap.add_argument("--small", action="store_true", help="tiny sizes and counts: a smoke run")
    args = ap.parse_args(argv)
    args.models = args.models or MODELS
    unknown = set(args.models) - set(MODELS)
    if unknown:
        ap.error(f"unknown model(s) {sorted(unknown)}; choose from {MODELS}")
    if args.small:
        args.n_calib, args.n_eval, args.sentences, args.rounds, args.calls = 4, 8, 8, 1, 3
        args.calibrators, args.no_peers = args.calibrators[:1], True
    import torch

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    ort_work, peers, peers_path = run_peers(args)
    artifacts, rows = {}, []
    steps = {"efficientnet_lite0": lambda *a: image_accuracy("efficientnet_lite0", *a), "minilm": minilm_accuracy,
             "digits": digits_accuracy, "mobilenet_v2": lambda *a: image_accuracy("mobilenet_v2", *a)}
    for name, fn in steps.items():
        if name in args.models and not (args.small and name != "digits"):
            rows += fn(args, artifacts)
            print(f"[accuracy] {name} done", flush=True)
    if any(m in args.models for m in ("resnet18", "mobilenet_v2")):
        rows += random_weight_models(args, artifacts)
    speed_rows = [] if args.no_speed else speed(args, artifacts, ort_work)
    if ort_work:
        shutil.rmtree(ort_work, ignore_errors=True)
    for r in rows:
        print(json.dumps(r))
    return save_results("quant", {"accuracy_and_size": rows, "speed": speed_rows,
                                  "onnxruntime": peers, "onnxruntime_results": peers_path},
                        seconds=round(time.perf_counter() - t0, 1), args=vars(args))


if __name__ == "__main__":
    print(main())
