"""Sparse weight storage: a weight that is mostly zeros (magnitude pruning) is stored in the artifact as its
non-zero values and a bitmask, in the member ``sparse_weights.safetensors``, and made dense again at load.

    manifest["sparse_weights"] = {name: {"dtype": "f32", "shape": [1536, 384]}}
    sparse_weights.safetensors: "<name>.mask" u8[ceil(n / 8)] (bit i, little-endian bit order, set where element
                                i of the flattened weight is non-zero), "<name>.values" <dtype>[count of set bits]

The kernels read dense weights (``bench/sparse.py`` measures when a sparse kernel would pay); the saving is in the
artifact's size: at 80% zeros a float weight takes 23% of its bytes. Imports neither torch nor TVM.
"""

from __future__ import annotations

import numpy as np

from ..errors import ArtifactError
from ..ir_dtypes import NP_DTYPES

MEMBER = "sparse_weights.safetensors"
#: smaller weights, or with fewer zeros than this, stay dense
MIN_ELEMENTS, MIN_ZERO_FRACTION = 4096, 0.5
#: decoding may make at most this many bytes per byte of the sparse member (all zeros, 8-byte values: 64), so a
#: small crafted artifact cannot ask for gigabytes
MAX_EXPANSION = 64


def encode(weights: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
    """(dense weights, sparse tensors, manifest spec): the weights worth storing sparse moved out of ``weights``."""
    dense, tensors, spec = {}, {}, {}
    dtypes = {np.dtype(v): k for k, v in NP_DTYPES.items()}
    for name, arr in weights.items():
        flat = np.ascontiguousarray(arr).reshape(-1)
        if flat.size < MIN_ELEMENTS or arr.dtype not in dtypes:
            dense[name] = arr
            continue
        nonzero = flat != 0
        count = int(nonzero.sum())
        if count > (1 - MIN_ZERO_FRACTION) * flat.size or count * arr.itemsize + flat.size / 8 >= arr.nbytes:
            dense[name] = arr
            continue
        tensors[f"{name}.mask"] = np.packbits(nonzero, bitorder="little")
        tensors[f"{name}.values"] = flat[nonzero]
        spec[name] = {"dtype": dtypes[arr.dtype], "shape": list(arr.shape)}
    return dense, tensors, spec


def decode(weights: dict, tensors: dict, spec: dict, alloc, what: str) -> dict:
    """``weights`` with the sparse ones (``tensors`` as ``encode`` made them, ``spec`` from the manifest) made dense
    in arrays from ``alloc(shape, dtype)``; an ``ArtifactError`` if they disagree."""
    out = dict(weights)
    stored = sum(int(t.nbytes) for t in tensors.values())
    budget = MAX_EXPANSION * stored
    for name, info in spec.items():
        mask, values = tensors.get(f"{name}.mask"), tensors.get(f"{name}.values")
        shape, dtype = tuple(info["shape"]), np.dtype(NP_DTYPES[info["dtype"]])
        n = 1
        for d in shape:  # Python ints: no overflow
            n *= int(d)
        if mask is None or values is None or name in out:
            raise ArtifactError(f"{what}: sparse weight {name!r} is missing its mask or values, or is stored twice")
        budget -= n * dtype.itemsize
        if budget < 0:
            raise ArtifactError(f"{what}: sparse weights decode to more than {MAX_EXPANSION}x their stored bytes "
                                "(damaged or crafted)")
        if mask.dtype != np.uint8 or mask.shape != ((n + 7) // 8,) or values.dtype != dtype or values.ndim != 1:
            raise ArtifactError(f"{what}: sparse weight {name!r} has a mask or values of the wrong type or size")
        bits = np.unpackbits(mask, count=n, bitorder="little").view(bool)
        count = int(bits.sum())
        if count != values.size:
            raise ArtifactError(f"{what}: sparse weight {name!r} has {values.size} values for {count} set mask bits")
        arr = alloc(shape, dtype)
        flat = arr.reshape(-1)
        flat[...] = 0
        flat[bits] = values
        out[name] = arr
    return out


def check_spec(spec, members: dict, fail) -> None:
    """The manifest's ``sparse_weights`` entry (``fail(path, why)`` on a bad one)."""
    if not isinstance(spec, dict):
        fail("sparse_weights", f"has type {type(spec).__name__}")
    if spec and MEMBER not in members:
        fail("sparse_weights", f"is set but the members do not list {MEMBER}")
    for name, info in spec.items():
        if not isinstance(info, dict) or info.get("dtype") not in NP_DTYPES or not isinstance(info.get("shape"), list) \
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in info["shape"]):
            fail(f"sparse_weights[{name[:40]!r}]", "is not {dtype, shape}")
