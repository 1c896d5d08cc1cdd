"""Time to first token by prompt length with the compiled prefill chunks, against the largest chunk alone (the same
artifact, same run): what the second, shorter chunk saves.

    .venv/bin/python bench/llm_chunks.py smollm2.edgeopt      # an artifact from edgeopt.llm.compile (no torch here)
"""

from __future__ import annotations

import os
import statistics
import sys
import time

os.environ.setdefault("TVM_NUM_THREADS", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ttft_ms(lm, n: int, lens: list[int], rounds: int = 7) -> float:
    lm.prefill_lens = lens
    ids = [100 + i for i in range(n)]
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        lm.prefill(ids)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    from bench.common import save_results
    from edgeopt.runtime.generate import load_llm

    lm = load_llm(sys.argv[1])
    compiled = list(lm.prefill_lens)
    rows = []
    print(f"{'prompt':>6} {'chunks ' + str(compiled):>16} {'only ' + str(compiled[:1]):>12}")
    for n in (5, 12, 20, 37, 45, 64):
        both, one = ttft_ms(lm, n, compiled), ttft_ms(lm, n, compiled[:1])
        rows.append({"prompt_tokens": n, "ttft_ms": both, "ttft_ms_largest_only": one})
        print(f"{n:6d} {both:13.1f} ms {one:9.1f} ms")
    save_results("llm-chunks", rows, artifact=os.path.basename(sys.argv[1]), prefill_lens=compiled)


if __name__ == "__main__":
    main()
