"""TE rules for data movement: reshape, transpose, slice, concat, broadcast_to, take."""

from __future__ import annotations

import tvm
from tvm import te, topi

from . import rule
from ._te import bcast_index


@rule("reshape")
def reshape(ins, attrs, out, op):
    return topi.reshape(ins[0], attrs["shape"])


@rule("transpose")
def transpose(ins, attrs, out, op):
    return topi.transpose(ins[0], attrs["perm"])


@rule("slice")
def slice_(ins, attrs, out, op):
    x, ax, step = ins[0], attrs["axis"] % len(ins[0].shape), attrs["step"]
    start = slice(attrs["start"], attrs["end"], step).indices(int(x.shape[ax]))[0]  # Python's bounds: -1 is the last

    def body(*idx):
        return x(*idx[:ax], start + idx[ax] * step, *idx[ax + 1:])

    return te.compute(tuple(out.shape), body, name="slice")


@rule("concat")
def concat(ins, attrs, out, op):
    return topi.concatenate(ins, axis=attrs["axis"])


@rule("broadcast_to")
def broadcast_to(ins, attrs, out, op):
    x, rank = ins[0], len(out.shape)
    return te.compute(tuple(out.shape), lambda *i: x(*bcast_index(x, i, rank)), name="broadcast_to")


@rule("gather")
def gather(ins, attrs, out, op):
    data, idx = ins
    if not data.shape:
        return te.compute((), lambda: data(), name="gather")
    ax = attrs["axis"] % len(data.shape)
    n = int(data.shape[ax])

    def body(*o):
        i = te.min(te.max(idx(*o), 0), n - 1).astype("int32")  # never read outside data (torch would raise)
        return data(*o[:ax], i, *o[ax + 1:])

    return te.compute(tuple(out.shape), body, name="gather")


@rule("take")
def take(ins, attrs, out, op):
    data, idx = ins
    ax = attrs["axis"] % len(data.shape)
    n, ir = int(data.shape[ax]), len(idx.shape)

    def body(*o):
        i = idx(*o[ax:ax + ir])
        i = tvm.tirx.Select(i < 0, i + n, i)
        i = te.min(te.max(i, 0), n - 1).astype("int32")  # never read outside the table
        return data(*o[:ax], i, *o[ax + ir:])

    return te.compute(tuple(out.shape), body, name="take")


@rule("index_copy")
def index_copy(ins, attrs, out, op):
    """Element j along the axis is source slice i for the last i with index[i] == j, else x's: a select chain over
    the indices (few: a prompt's tokens). Each element reads x at its own position only, so the kernel may write
    over x (a state's in-place update, on targets without the TIR kernel)."""
    x, src, index = ins
    ax = attrs["axis"] % len(x.shape)
    count = int(index.shape[0])

    def body(*i):
        val = x(*i)
        for t in range(count):
            val = tvm.tirx.Select(index[t].astype("int64") == i[ax].astype("int64"),
                                  src(*i[:ax], t, *i[ax + 1:]), val)
        return val

    return te.compute(tuple(out.shape), body, name="index_copy")
