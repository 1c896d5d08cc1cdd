"""``argtopk`` written in TIR for CPUs: a stable bottom-up merge sort of each row, rows in parallel.

Each element first becomes an integer key whose ascending order is the output order (a float's bits, made
monotonic; NaN the largest key, -0.0 the key of 0.0; the key's bits inverted for descending order), so the merge
compares integers: no NaN rules in the inner loop, and no float compares (which fast math does not keep NaN-safe).
The merge then moves (key, position) pairs between two buffers, ``ceil(log2(n))`` passes of runs twice as long as the
pass before. A tie goes to the left run, whose positions are all smaller: the sort is stable.

Only the first ``k`` of a run can reach the output, so a merge writes at most ``k`` elements: a full sort (``k = n``)
costs ``n * log2(n)`` merge steps, a top k ``n * log2(k)``. A small k of a long row (``selects``: a top 50 of a
32000-word vocabulary, 100 of a detector's 8400 anchors) first finds the k-th key, most significant digit first: a
histogram of the first digit over the row, the keys that share the chosen digit gathered, then a histogram of each
further digit over those only. One more pass takes every key below the k-th and as many equal to it as still fit,
in position order, and only those k are merged. The TE rule (``rules/sort.py``) ranks every pair instead: the GPU
form.

Measured with ``bench/sort_scan.py`` (2 threads, Zen 3; ``sort_scan-20261207-114726.json``), as edgeopt's time over
torch eager's in the same run: full sorts 0.70-0.74x, a top 300 of 24000 0.77x, a top 50 of 32000 1.11x, a top 100
of 8 rows of 8400 1.56x, a top 8 of 512 rows of 64 1.39x, a median of rows of 2048 (half a sort; torch selects)
3.4x; the pairwise ranks took 9x the merge sort's time on rows of 1024.
"""

from __future__ import annotations

import math

import tvm
from tvm.script import tirx as T

from ..ir.types import TVM_DTYPES, TensorType
from .nan_math import FLOAT_BITS

#: the k-th key is found a digit of DIGIT_BITS at a time (a histogram of RADIX bins per digit)
DIGIT_BITS = 8
RADIX = 1 << DIGIT_BITS
#: a merge step's time in histogram steps (a data-dependent branch against a counter increment; measured with
#: bench/sort_scan.py), and the share of the row a selected top k may be at most
MERGE_STEP, SELECT_SHARE = 4, 0.25


def key_dtype(dtype: str) -> str:
    """The integer dtype of ``dtype``'s sort keys."""
    return "int64" if dtype in ("float64", "int64") else "int32"


def sort_key(v, dtype: str, largest: bool):
    """An integer whose ascending order is ``v``'s place in the output (ties: equal keys)."""
    kt = key_dtype(dtype)
    if dtype.startswith("float"):
        if dtype not in FLOAT_BITS:  # f16: its f32 value
            v, dtype = v.astype("float32"), "float32"
        bits, mask, inf = FLOAT_BITS[dtype]
        top = tvm.tirx.const(mask, bits)  # the largest key, and the mask of the magnitude
        s = tvm.tirx.reinterpret(bits, v)
        magnitude = tvm.tirx.bitwise_and(s, top)
        # negative numbers: flip the magnitude (a larger one is smaller); -0.0 is 0; NaN above +inf
        ordered = tvm.tirx.Select(s >= 0, s, tvm.tirx.Select(magnitude == 0, tvm.tirx.const(0, bits),
                                                             tvm.tirx.bitwise_xor(s, top)))
        key = tvm.tirx.Select(magnitude > tvm.tirx.const(inf, bits), top, ordered)
    else:
        key = v.astype(kt)
    return tvm.tirx.bitwise_not(key) if largest else key


def selects(n: int, k: int, digits: int) -> bool:
    """Whether finding the k-th key first (a histogram of every digit: ``digits * (n + 2 * RADIX)`` steps) costs
    less than merging runs up to k long (``n * log2(k)`` merge steps)."""
    return k <= SELECT_SHARE * n and MERGE_STEP * n * math.log2(max(k, 2)) > digits * (n + 2 * RADIX)


def argtopk_kernel(in_types: list[TensorType], attrs: dict, out: TensorType):
    """(the PrimFunc ``(x, out)``, its description); None for a row of no elements."""
    (x,) = in_types
    n, k = x.shape[-1], attrs["k"]
    rows = math.prod(x.shape[:-1])
    if n == 0 or k == 0 or rows == 0:
        return None
    dt, kt, ot = TVM_DTYPES[x.dtype], key_dtype(TVM_DTYPES[x.dtype]), TVM_DTYPES[out.dtype]
    largest = attrs["largest"]
    width = tvm.DataType(kt).bits
    digits = width // DIGIT_BITS
    select = selects(n, k, digits)  # pick the first k by their keys' digits, then sort only those
    m, first = (k, 1) if select else (n, 0)  # the merge sorts m elements, starting in buffer `first`
    passes = math.ceil(math.log2(m)) if m > 1 else 0
    flip = tvm.tirx.const(-(1 << (width - 1)), kt)  # the sign bit: keys ^ flip order as unsigned numbers

    def key(v):
        return sort_key(v, dt, largest)

    def digit(key_, d):
        return T.Cast("int32", T.bitwise_and(T.shift_right(T.bitwise_xor(key_, flip), d * DIGIT_BITS),
                                             tvm.tirx.const(RADIX - 1, kt)))

    @T.prim_func
    def kernel(x_: T.Buffer(x.shape, dt), o_: T.Buffer(out.shape, ot)):
        xf = T.decl_buffer((rows, n), dt, data=x_.data)
        of = T.decl_buffer((rows, k), ot, data=o_.data)
        # scratch of every row, allocated once (a row's own allocations would be a workspace call each); a row's
        # counters fill a cache line of their own, which no other thread writes
        keys = T.decl_buffer((rows, 2, n), kt)  # two buffers a pass merges between
        pos = T.decl_buffer((rows, 2, n), "int32")
        at = T.decl_buffer((rows, 16), "int32")  # where the merge is in the left and the right run
        hist = T.decl_buffer((rows, RADIX if select else 1), "int32")
        found = T.decl_buffer((rows, 512 // width), kt)  # the k-th key's digits so far, and their mask
        # still to take, taken before the digit, the digit, how many keys share the digits found so far
        count = T.decl_buffer((rows, 16), "int32")
        for r in T.parallel(rows):
            for t in range(n):
                keys[r, 0, t] = key(xf[r, t])
                pos[r, 0, t] = t
            if select:
                found[r, 0] = T.Cast(kt, 0)
                found[r, 1] = T.Cast(kt, 0)
                count[r, 0] = k
                for d0 in range(digits):
                    d = T.Bind(digits - 1 - d0)  # the most significant digit first
                    for b in range(RADIX):
                        hist[r, b] = 0
                    if d0 == 0:
                        for t in range(n):
                            hist[r, digit(keys[r, 0, t], d)] = hist[r, digit(keys[r, 0, t], d)] + 1
                    else:  # only the keys that share the first digit, gathered in buffer 1
                        for t in range(count[r, 3]):
                            if T.bitwise_and(T.bitwise_xor(keys[r, 1, t], flip), found[r, 1]) == found[r, 0]:
                                hist[r, digit(keys[r, 1, t], d)] = hist[r, digit(keys[r, 1, t], d)] + 1
                    count[r, 1] = 0
                    count[r, 2] = -1
                    for b in range(RADIX):
                        if count[r, 2] < 0:
                            if count[r, 1] + hist[r, b] >= count[r, 0]:
                                count[r, 2] = b
                                count[r, 0] = count[r, 0] - count[r, 1]
                            else:
                                count[r, 1] = count[r, 1] + hist[r, b]
                    found[r, 0] = T.bitwise_or(found[r, 0], T.shift_left(T.Cast(kt, count[r, 2]), d * DIGIT_BITS))
                    found[r, 1] = T.bitwise_or(found[r, 1], T.shift_left(T.Cast(kt, RADIX - 1), d * DIGIT_BITS))
                    if d0 == 0:
                        count[r, 3] = 0
                        for t in range(n):
                            if digit(keys[r, 0, t], d) == count[r, 2]:
                                keys[r, 1, count[r, 3]] = keys[r, 0, t]
                                count[r, 3] = count[r, 3] + 1
                # the k-th key is found[r, 0] ^ flip; count[r, 0] of the keys equal to it are among the first k
                kth = T.Bind(T.bitwise_xor(found[r, 0], flip))
                count[r, 1] = 0
                for t in range(n):
                    if keys[r, 0, t] < kth or (keys[r, 0, t] == kth and count[r, 0] > 0):
                        keys[r, 1, count[r, 1]] = keys[r, 0, t]
                        pos[r, 1, count[r, 1]] = t
                        count[r, 1] = count[r, 1] + 1
                        if keys[r, 0, t] == kth:
                            count[r, 0] = count[r, 0] - 1
            for p in range(passes):
                w = T.Bind(T.shift_left(1, p))  # the runs' length before this pass
                src = T.Bind((p + first) % 2)
                for b in range((m + 2 * w - 1) // (2 * w)):
                    lo = T.Bind(b * 2 * w)
                    mid = T.Bind(T.min(lo + w, m))
                    hi = T.Bind(T.min(lo + 2 * w, m))
                    left_end = T.Bind(T.min(mid, lo + k))  # a run holds at most k elements that count
                    right_end = T.Bind(T.min(hi, mid + k))
                    at[r, 0] = lo
                    at[r, 1] = mid
                    for t in range(T.min(hi - lo, k)):
                        i = T.Bind(at[r, 0])
                        j = T.Bind(at[r, 1])
                        left = T.Bind(T.Cast("int32", j >= right_end or (
                            i < left_end and keys[r, src, T.min(i, m - 1)] <= keys[r, src, T.min(j, m - 1)])))
                        s = T.Bind(T.Select(left == 1, i, j))
                        keys[r, 1 - src, lo + t] = keys[r, src, s]
                        pos[r, 1 - src, lo + t] = pos[r, src, s]
                        at[r, 0] = i + left
                        at[r, 1] = j + 1 - left
            for t in range(k):
                of[r, t] = T.Cast(ot, pos[r, (passes + first) % 2, t])

    return kernel, ("tir(radix select of the k-th key, then merge sort of k)" if select else
                    "tir(merge sort, runs cut at k)")
