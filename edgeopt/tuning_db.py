"""The tuning database: a JSON file of tuned kernel schedules that ``edgeopt.tune`` writes and
``edgeopt.compile(..., tuning_db=path)`` reads. No pickle: every field is plain JSON.

    {"format": "edgeopt-tuning-db", "version": 1,
     "targets": {"<TVM target string>": {"<sha256 of the kernel key>": RECORD, ...}, ...}}

    RECORD = {"kernel": name in the report, "op": anchor op, "func_hash": structural hash of the
              unscheduled PrimFunc, "hand_schedule": edgeopt's own schedule description,
              "hand_ms": its measured time, "tuned_ms": the best tuned time (null: no valid candidate),
              "trials": MetaSchedule trials, "num_threads": TVM threads it was timed with,
              "trace": the tuned schedule as a MetaSchedule trace (see ``encode_trace``), or null when the
                       hand schedule stays (tuning found nothing faster),
              "tvm_version", "edgeopt_version", "tuned_at": ISO time (UTC)}

A record is used only for the same target string (mcpu, core count), the same kernel key, the same
unscheduled PrimFunc (``func_hash``: a kernel whose TE rule changed since tuning is stale) and the same TVM
version; anything else is ignored for that kernel. A file that is not such JSON raises ``TuningError``.

Importing this module does not import TVM (``edgeopt tune-info`` reads a database with the runtime only).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

from .errors import TuningError

FORMAT = "edgeopt-tuning-db"
VERSION = 1
_REQUIRED = {"kernel": str, "op": str, "func_hash": str, "hand_ms": (int, float), "trials": int,
             "tvm_version": str}


def key_hash(kernel_key: str) -> str:
    """The database key of a kernel (``edgeopt.lower.build.kernel_key``): its sha256, hex."""
    return hashlib.sha256(kernel_key.encode()).hexdigest()


class TuningDB:
    """The records of one tuning database file, by target string and kernel key hash."""

    def __init__(self, path: str | os.PathLike | None = None, targets: dict | None = None):
        self.path = None if path is None else os.fspath(path)
        self.targets: dict[str, dict[str, dict]] = targets or {}

    @classmethod
    def load(cls, path: str | os.PathLike, missing_ok: bool = False) -> TuningDB:
        """Read ``path``; a missing file is an empty database only with ``missing_ok``."""
        path = os.fspath(path)
        if missing_ok and not os.path.exists(path):
            return cls(path)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise TuningError(f"tuning database {path!r} does not exist: write one with "
                              "edgeopt.tune(model, inputs, tuning_db=...) first") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TuningError(f"tuning database {path!r} is not readable ({type(e).__name__}: {e}); "
                              "delete it and run edgeopt.tune again") from None
        if not (isinstance(doc, dict) and doc.get("format") == FORMAT and isinstance(doc.get("targets"), dict)
                and all(isinstance(v, dict) for v in doc["targets"].values())):
            raise TuningError(f"tuning database {path!r} is not an edgeopt tuning database (no "
                              f"'format': {FORMAT!r} with a 'targets' table); delete it and run edgeopt.tune again")
        if doc.get("version") != VERSION:
            raise TuningError(f"tuning database {path!r} has format version {doc.get('version')!r}; this edgeopt "
                              f"reads version {VERSION}: run edgeopt.tune again to write a new one")
        return cls(path, doc["targets"])

    def save(self, path: str | os.PathLike | None = None) -> None:
        """Write the database atomically (a crash never leaves half a file)."""
        path = os.fspath(path) if path is not None else self.path
        d = os.path.dirname(os.path.abspath(path))
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tuning-", suffix=".json", dir=d)
        except OSError as e:
            raise TuningError(f"cannot write tuning database {path!r}: {e}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.dumps())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    def dumps(self) -> str:
        """The file's text: one line per record (a record's trace stays on its line)."""
        tables = []
        for target, records in sorted(self.targets.items()):
            rows = ",\n".join(f"   {json.dumps(k)}: {json.dumps(r)}" for k, r in sorted(records.items()))
            tables.append(f"  {json.dumps(target)}: {{\n{rows}\n  }}")
        body = "".join(f"{t},\n" for t in tables)[:-2] + "\n" if tables else ""
        return f'{{"format": {json.dumps(FORMAT)}, "version": {VERSION},\n "targets": {{\n{body} }}\n}}\n'

    def get(self, target: str, kernel_key: str) -> dict | None:
        """The well-formed record for this target and kernel, with or without a trace, or None."""
        rec = self.targets.get(target, {}).get(key_hash(kernel_key))
        if not isinstance(rec, dict) or not all(isinstance(rec.get(k), t) for k, t in _REQUIRED.items()):
            return None
        return rec

    def put(self, target: str, kernel_key: str, record: dict) -> None:
        self.targets.setdefault(target, {})[key_hash(kernel_key)] = record

    def tuned(self, target: str, kernel_key: str) -> dict | None:
        """The record to compile this kernel with: one with a trace, made by this TVM version; else None."""
        import tvm

        rec = self.get(target, kernel_key)
        if rec is None or not isinstance(rec.get("trace"), list) or rec["tvm_version"] != tvm.__version__:
            return None
        return rec

    def __len__(self) -> int:
        return sum(len(v) for v in self.targets.values())


def record_id(record: dict) -> str:
    """A short id of a record: its schedule and everything else (kernel caches key tuned kernels by it)."""
    return hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def func_hash(func) -> str:
    """The structural hash of an unscheduled PrimFunc, as a string (stable across processes)."""
    import tvm_ffi

    return str(tvm_ffi.structural_hash(func))


def encode_trace(trace) -> list:
    """A MetaSchedule trace (``sch.trace``) as plain JSON: ``trace.as_json()`` with its TVM integer and float
    immediates tagged (``{"IntImm": [dtype, value]}``, ``{"FloatImm": [dtype, value]}``) so they come back
    with the same types; other values are JSON lists, strings, numbers and booleans."""
    return _encode(trace.as_json())


def _encode(o):
    kind = type(o).__name__
    if kind in ("IntImm", "FloatImm"):
        return {kind: [str(o.ty), int(o.value) if kind == "IntImm" else float(o.value)]}
    if isinstance(o, (bool, int, float)) or o is None:
        return o
    if isinstance(o, str):
        return str(o)
    if kind in ("Array", "List") or isinstance(o, (list, tuple)):
        return [_encode(x) for x in o]
    raise TypeError(f"cannot store a {kind} in a trace")


def _decode(o):
    import tvm

    if isinstance(o, dict):
        ((kind, (dtype, value)),) = o.items()
        return tvm.tirx.IntImm(dtype, value) if kind == "IntImm" else tvm.tirx.FloatImm(dtype, value)
    if isinstance(o, list):
        return [_decode(x) for x in o]
    return o


def apply_trace(func, trace: list):
    """``func`` (the unscheduled PrimFunc the trace was tuned on) with the stored schedule applied."""
    import tvm
    from tvm.s_tir import Schedule, Trace

    sch = Schedule(tvm.IRModule({"main": func}))
    Trace.apply_json_to_schedule(_decode(trace), sch)
    return sch.mod["main"]
