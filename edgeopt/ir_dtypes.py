"""IR dtype names -> numpy dtypes, importable without the IR (the runtime uses it)."""

import numpy as np

NP_DTYPES = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16), "f64": np.dtype(np.float64),
             "i8": np.dtype(np.int8), "u8": np.dtype(np.uint8), "i16": np.dtype(np.int16),
             "i32": np.dtype(np.int32), "i64": np.dtype(np.int64), "bool": np.dtype(np.bool_)}


def extremes(dtype: str) -> tuple:
    """The lowest and highest value of an IR dtype: -inf and inf for floats, the range of an integer type (0 and 1
    for bool): the identities of max and min, the padding a max never picks."""
    if dtype.startswith(("f", "bf")):
        return float("-inf"), float("inf")
    if dtype == "bool":
        return 0, 1
    info = np.iinfo(NP_DTYPES[dtype])
    return int(info.min), int(info.max)


def fits(x: np.ndarray, dtype) -> bool:
    """Whether every value of the integer array ``x`` lies in integer ``dtype``'s range (an int64 token id in int32)."""
    info = np.iinfo(dtype)
    return x.size == 0 or (int(x.min()) >= info.min and int(x.max()) <= info.max)
