"""The benchmark scripts run end to end on small shapes and write what they promise (no timing is asserted)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(script: str, args: list[str], tmp_path) -> dict:
    env = dict(os.environ, EDGEOPT_BENCH_RESULTS=str(tmp_path))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (path,) = [p for p in os.listdir(tmp_path) if p.endswith(".json")]
    with open(tmp_path / path) as f:
        return json.load(f)


@pytest.mark.slow
def test_peers_bench_checks_every_peer_against_torch_and_writes_a_chart(tmp_path):
    peers = ["edgeopt", "torch_eager", "onnxruntime", "openvino"]
    res = _run("peers.py", ["--small", "resnet18", "--peers", *peers, "--rounds", "2", "--calls", "2",
                            "--quiet-timeout", "0"], tmp_path)
    assert res["peak_gflops"] > 0 and res["machine"]["torch_cpu_capability"]
    (row,) = res["results"]
    assert row["model"] == "resnet18" and row["gflop"] > 0 and row["edgeopt_kernels"] > 0
    assert row["edgeopt_tuning_db"] is None and row["edgeopt_tuned_kernels"] == 0  # untuned unless --tuning-db
    assert set(row["peers"]) == set(peers)
    for name, peer in row["peers"].items():
        assert peer["max_abs_diff"] < 1e-4, name  # every peer computed the same function as torch
        assert len(peer["round_medians_ms"]) == 2 and peer["best_median_ms"] == min(peer["round_medians_ms"])
        assert peer["gflops"] == pytest.approx(row["gflop"] / peer["best_median_ms"] * 1e3)
    assert row["peers"]["torch_eager"]["max_abs_diff"] == 0.0  # the same seeded model rebuilt in its own process
    assert any(p.endswith(".png") for p in os.listdir(tmp_path))


@pytest.mark.slow
def test_overhead_bench_runs_the_plan_on_null_kernels(tmp_path):
    res = _run("overhead.py", ["--small", "mobilenet_v2", "--rounds", "3"], tmp_path)
    (row,) = res["results"]
    assert row["steps"] > 10
    assert 0 < row["overhead_share"] < 1  # empty kernels cost less than real ones


@pytest.mark.slow
@pytest.mark.vulkan
def test_vulkan_bench_reports_both_precisions_and_a_quantized_build(tmp_path):
    from edgeopt.errors import ArtifactError
    from edgeopt.runtime.vulkan import vulkan_adapter
    from tests.targets import required

    try:
        vulkan_adapter()
    except ArtifactError as e:
        (pytest.fail if required("vulkan") else pytest.skip)(f"no Vulkan device: {e}")
    res = _run("vulkan.py", ["mobilenet_v2", "--calls", "2", "--quantize", "int8"], tmp_path)
    assert "Vulkan" in res["device"]
    (row,) = res["results"]
    assert row["torch_eager_ms"] > 0
    for precision, tol in (("fp32", 1e-4), ("fp16", 5e-3), ("int8", 0.1)):
        r = row[precision]
        assert r["rel_err"] < tol and r["ms"] > 0 and r["arena_bytes"] < r["naive_bytes"], precision
    assert row["int8"]["weight_ratio"] < 0.4  # calibrated on photo crops; its weights four to a 32-bit word


@pytest.mark.slow
def test_nan_cost_bench_times_both_builds_and_counts_nans(tmp_path):
    res = _run("nan_cost.py", ["relu", "max_pool", "--rounds", "2", "--block", "2"], tmp_path)
    assert [r["case"] for r in res["results"]] == ["relu", "max_pool"]
    for r in res["results"]:
        assert r["nan_ms"] > 0 and r["plain_ms"] > 0 and r["interval"][0] <= r["plain_over_nan"] <= r["interval"][1]
        nans = r["nan_outputs"]
        assert nans["nan"] == nans["torch"] > 0 and nans["plain"] < nans["torch"]  # the plain build drops NaN


@pytest.mark.slow
def test_sort_scan_bench_times_the_tir_kernels_against_torch_and_the_te_rules(tmp_path):
    res = _run("sort_scan.py", ["moe_top2", "vocab_top50", "mask_positions_4096", "--rounds", "2", "--block", "2"],
               tmp_path)
    rows = {r["case"]: r for r in res["results"]}
    assert list(rows) == ["moe_top2", "vocab_top50", "mask_positions_4096"]
    for r in rows.values():
        assert r["edgeopt_ms"] > 0 and r["torch_ms"] > 0
        assert r["interval"][0] <= r["edgeopt_over_torch"] <= r["interval"][1]
    assert "tir(radix select of the k-th key, then merge sort of k)" in rows["vocab_top50"]["schedules"]
    assert "te_rule_ms" not in rows["vocab_top50"]  # 32000 x 32000 compares: not built
    assert rows["moe_top2"]["te_rule_ms"] > 0 and rows["mask_positions_4096"]["te_rule_ms"] > 0
    assert "tir(running sum per line)" in rows["mask_positions_4096"]["schedules"]

@pytest.mark.slow
def test_cpu_levels_bench_times_every_level_this_cpu_runs(tmp_path):
    from edgeopt.runtime.cpu_features import host_flags

    res = _run("cpu_levels.py", ["--small", "mobilenet_v2", "--rounds", "2"], tmp_path)
    (row,) = res["results"]
    avx512 = "avx512f" in host_flags()
    assert row["picked_level"] == ("v4" if avx512 else "v3")
    assert set(row["median_ms"]) == ({"host", "v3", "v4"} if avx512 else {"host", "v3"})
    assert all(t > 0 for t in row["median_ms"].values())
    assert set(row["compile_seconds"]) == {"v3", "v4"} and row["artifact_bytes"] > row["v3_only_artifact_bytes"]


@pytest.mark.slow
def test_quant_bench_measures_accuracy_size_and_speed(tmp_path):
    res = _run("quant.py", ["--small", "digits", "resnet18", "mobilenet_v2", "--budgets", "0.001"], tmp_path)["results"]
    rows = {(r["model"], r["variant"]): r for r in res["accuracy_and_size"]}
    fp32, int8 = rows["digits_cnn", "fp32"], rows["digits_cnn", "int8"]
    assert fp32["accuracy"] > 0.5
    assert int8["accuracy_drop_points"] == round(100 * (fp32["accuracy"] - int8["accuracy"]), 2)
    assert all(r["weight_ratio"] < 0.35 for (m, v), r in rows.items() if v == "int8")
    speed = {s["model"]: s for s in res["speed"]}
    assert set(speed) == {"resnet18", "mobilenet_v2"}
    from edgeopt.targets import get_target

    tiles = get_target("host").amx()  # on a CPU with AMX, the int8 build without tiles too (int8-vnni)
    for s in speed.values():
        assert set(s["best_ms"]) == {"edgeopt fp32", "edgeopt int8", "edgeopt int8-budget-0.001",
                                     *(["edgeopt int8-vnni"] if tiles else [])}
        assert s["ratios"]["edgeopt int8 / edgeopt fp32"] > 0
        assert s["ratios"]["edgeopt int8-budget-0.001 / edgeopt int8"] > 0  # the accuracy budget's build, paired
        assert ("edgeopt int8 / edgeopt int8-vnni" in s["ratios"]) == tiles


@pytest.mark.slow
def test_compress_bench_runs_each_experiment(tmp_path):
    rows = {r["experiment"].split()[0]: r for r in _run("compress.py", ["--small"], tmp_path)["results"]}
    assert set(rows) == {"digits", "MiniLM", "explore"}
    d = rows["digits"]
    assert d["macs_pruned"] < 0.5 * d["macs_original"] and 0 <= d["accuracy_distilled"] <= 1
    m = rows["MiniLM"]
    assert m["ffn_weights_low_rank"] <= 0.5 * m["ffn_weights_original"] and -1 <= m["cosine_after_distill"] <= 1
    assert len(rows["explore"]["settings"]) == 8 and (tmp_path / rows["explore"]["plot"]).exists()


@pytest.mark.slow
def test_sparse_bench_compares_kernels(tmp_path):
    rows = _run("sparse.py", ["--small"], tmp_path)["results"]
    assert {r["case"] for r in rows} == {"kernel", "minilm"} and all(r["sparse_vs_dense"] > 0 for r in rows)


@pytest.mark.slow
def test_compile_cache_bench_reuses_kernels_then_the_model(tmp_path):
    res = _run("compile_cache.py", ["--small", "--rounds", "1"], tmp_path)
    s = res["summary"]
    assert s["kernels"] > 5 and min(s["cold_s"], s["kernels_s"], s["model_s"]) > 0
    assert s["speedup_model"] == pytest.approx(s["cold_s"] / s["model_s"])
    assert s["process_cold_compile_s"] > 0 and s["process_warm_compile_s"] > 0


@pytest.mark.slow
def test_quant_concat_bench_times_integer_and_float_joins(tmp_path):
    res = _run("quant_concat.py", ["--small", "--rounds", "1"], tmp_path)
    rows = {r["build"]: r for r in res["results"]}
    assert set(rows) == {"fp32", "int8, integer joins", "int8, float joins"}
    assert all(r["best_median_ms"] > 0 for r in rows.values()) and res["integer_over_float_joins"] > 0
    assert rows["int8, integer joins"]["join_kernels_ms"] >= 0


@pytest.mark.slow
@pytest.mark.parametrize("target", ["host", "x86-64-v3"])
def test_int8_peak_bench_puts_convs_beside_the_dot_product_peak(tmp_path, target):
    res = _run("int8_peak.py", ["--small", "--threads", "1", "--target", target], tmp_path)
    want = ("vpmaddubsw-ymm",) if target == "x86-64-v3" else ("vpdpbusd-zmm", "vpdpbusd-ymm", "vpmaddubsw-zmm",
                                                              "vpmaddubsw-ymm")
    assert res["instruction"] in want and res["peak_gmacs"]["1"] > 0
    assert res["results"] and all(r["macs"] > 0 and r["gmacs"] > 0 for r in res["results"])
    s = res["summary"]
    assert s["macs"] >= sum(r["macs"] for r in res["results"]) and s["whole_call_ms"] > 0 and s["outputs_finite"]


@pytest.mark.parametrize("model", ["efficientnet_lite0", pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_quant_noise_bench_splits_the_error_by_source(tmp_path, model):
    res = _run("quant_noise.py", [model, "--small"], tmp_path)["results"]
    rows = {r["variant"]: r for r in res["rows"]}
    assert res["model"] == model and res["n_eval"] == 16 and len(rows) == 20
    both = rows["int8 weights and u8 inputs (the compiled model's scheme)"]["one_minus_cosine"]
    weights, inputs = rows["int8 weights only"]["one_minus_cosine"], rows["u8 inputs only"]["one_minus_cosine"]
    assert 0 < weights < both  # each source alone: part of the error (MobileNetV2's is nearly all its inputs')
    assert 0 < inputs < both if model == "efficientnet_lite0" else 0.5 * both < inputs < 2 * both
    # a range per channel rounds finer but clips a channel that the few calibration crops left quiet: other noise
    per_channel = rows["u8 inputs only, each channel its own range"]["one_minus_cosine"]
    assert 0 < per_channel < 1 and per_channel != inputs
    assert all(0 <= r["top1_agreement"] <= 1 for r in rows.values())
    # the metric's sensitivity: bias correction takes off most of any weight error, whatever the format
    err = {k: rows[k]["one_minus_cosine"] for k in rows}
    assert err["int8 weights only"] < 0.5 * err["int8 weights only, no bias correction"]
    for fmt in ("rounded to bfloat16", "x (1 + 0.001 N(0, 1))"):
        assert 0 < err[f"every weight {fmt}"] < 0.5 * err[f"every weight {fmt}, no bias correction"], fmt
    # 8 significant bits per weight beat 8-bit levels on one scale per channel (whose stem stays float)
    assert err["every weight rounded to bfloat16"] < weights


@pytest.mark.slow
def test_contention_bench_times_both_pools_and_onnxruntime_beside_a_busy_process(tmp_path):
    res = _run("contention.py", ["--small", "resnet18", "--rounds", "1", "--seconds", "0.1"], tmp_path)
    (row,) = res["results"]
    assert set(row["median_ms"]) == {"quiet", "nice19", "busy", "busy_core"}
    for situation, ms in row["median_ms"].items():
        assert set(ms) == {"edgeopt", "edgeopt_tvm_pool", "onnxruntime"} and min(ms.values()) > 0, situation
    checks = row["variant_check"]
    # both pools run the saved artifact and give the output it gave when compiled, bit for bit
    assert checks["edgeopt"]["max_abs_diff"] == 0 and checks["edgeopt_tvm_pool"]["max_abs_diff"] == 0
    assert checks["edgeopt"]["thread_pool"] == "edgeopt" and checks["edgeopt_tvm_pool"]["thread_pool"] == "tvm"
    assert checks["onnxruntime"]["max_abs_diff"] < 1.0  # its own int8 model of the same network
