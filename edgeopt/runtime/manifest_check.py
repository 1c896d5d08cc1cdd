"""The manifest's schema, checked in one place: after ``parse_manifest`` every field the runtime, the CLI and the
runners read has the type they expect, so none of them indexes into unchecked JSON.

    format            "edgeopt-artifact"               format_version   1 (an int)
    edgeopt_version   str                              tvm_version, tvm_ffi_version   str
    target            {name: str, runtime: str, precision?: str, arch?: str, mcpu?: str|null,
                       cpu_features?: [str], num_threads?: int, amx_tiles?: bool, cuda_arch?: str,
                       compute_capability?: [int, int], backend?: str,
                       levels?: non-empty [{level: str, arch?, mcpu?, cpu_features?, num_threads?, amx_tiles?,
                       plan, library, weights?: names of listed members, each its own}], ...}  (other keys: any JSON)
    inputs, outputs   [{name: str, dtype: one of the IR's dtypes, shape: [int >= 0]}]
    members           {name: {sha256: 64 lowercase hex digits, size: int >= 0}}: plan.json and weights.safetensors
                      among them; names are relative paths of letters, digits and ``._+-@=,``
    functions         optional {name: {plan, library, ir?: names of listed members under functions/<name>/,
                      inputs, outputs}}: the artifact's other entry points (a language model's prefill), sharing
                      its weights and states
    sparse_weights    optional {name: {dtype, shape}}: weights stored as mask and values in
                      sparse_weights.safetensors (``edgeopt.runtime.sparse_weights``)
    report            optional {...}: its count and byte fields numbers, plan_algorithm a str

Unknown keys are allowed (later writers may add some). This module imports neither torch nor TVM.
"""

from __future__ import annotations

import re

from ..errors import ArtifactError
from ..ir_dtypes import NP_DTYPES
from . import sparse_weights, strict_json

#: what a CPU level's members may be called: the artifact's own (the least demanding level) or under levels/<name>/
#: (a level's own weights only ever live under levels/: the artifact's own weights.safetensors is always read)
_LEVEL_MEMBER = {key: re.compile(rf"{own}levels/[A-Za-z0-9_.+-]{{1,64}}/{base}")
                 for key, base, own in (("plan", r"plan\.json", r"plan\.json|"),
                                        ("library", r"kernels\.so", r"kernels\.so|"),
                                        ("weights", r"weights\.safetensors", ""))}

FORMAT = "edgeopt-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"  # see edgeopt/runtime/signing.py; never listed in the manifest
REQUIRED_MEMBERS = ("plan.json", "weights.safetensors")
MAX_MEMBERS = 10_000
MAX_NAME = 255

_NAME = re.compile(r"[\w.+@=,-]+(/[\w.+@=,-]+)*", re.ASCII)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REPORT_NUMBERS = ("num_kernels", "num_unique_kernels", "tuned_kernels", "weight_bytes", "arena_bytes",
                   "lower_bound_bytes", "naive_bytes", "compile_seconds")
_TARGET_STRS = ("precision", "arch", "cuda_arch", "backend")


def name_problem(name) -> str | None:
    """Why ``name`` cannot be a member of an artifact (absolute, ``..``, odd characters, too long), or None."""
    if not isinstance(name, str):
        return "not a string"
    if not name or len(name) > MAX_NAME:
        return f"empty or longer than {MAX_NAME} characters"
    if not _NAME.fullmatch(name):
        return "not a relative path of letters, digits and ._+-@=,"
    if any(part.strip(".") == "" for part in name.split("/")):
        return "has a '.' or '..' component"
    return None


def json_object(data: bytes, what: str, member: str) -> dict:
    """The JSON object in ``member``'s bytes (strict: see ``strict_json``); ``ArtifactError`` naming the member."""
    try:
        obj = strict_json.loads(data)
    except ValueError as e:
        raise ArtifactError(f"{what}: {member} is unreadable ({e})") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{what}: {member} is not a JSON object")
    return obj


def parse_manifest(data: bytes, what: str) -> dict:
    """The manifest in ``data``, checked (format and version first, then the schema above); ``ArtifactError``."""
    manifest = json_object(data, what, MANIFEST)
    check_format(manifest, what)
    _Checker(what).manifest(manifest)
    return manifest


def check_format(manifest: dict, what: str) -> None:
    """Refuse another file format, or a format version this runtime does not read (the rest may differ there)."""
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{what} is not an edgeopt artifact (format {_short(manifest.get('format'))})")
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ArtifactError(f"{what} has artifact format version {_short(version)}; this edgeopt runtime reads "
                            f"version {FORMAT_VERSION}. Recompile the model with this edgeopt, or install the edgeopt "
                            "version that wrote it.")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v) -> bool:
    return type(v) is int


class _Checker:
    """Raises ``ArtifactError("<what>: manifest field <path> ...")`` at the first field of the wrong type."""

    def __init__(self, what: str):
        self.what = what

    def fail(self, path: str, why: str):
        raise ArtifactError(f"{self.what}: {MANIFEST} field {path} {why}: the artifact is damaged or was not "
                            "written by edgeopt")

    def typed(self, obj: dict, key: str, types, path: str, required: bool = True):
        if key not in obj:
            if required:
                self.fail(f"{path}.{key}", "is missing")
            return None
        value = obj[key]
        if not isinstance(value, types) or isinstance(value, bool) and bool not in _tuple(types):
            self.fail(f"{path}.{key}", f"has type {type(value).__name__} ({_short(value)})")
        return value

    def manifest(self, m: dict) -> None:
        for key in ("edgeopt_version", "tvm_version", "tvm_ffi_version"):
            self.typed(m, key, str, "manifest")
        members = self.typed(m, "members", dict, "manifest")
        self.members(members)
        self.target(self.typed(m, "target", dict, "manifest"), members)
        for kind in ("inputs", "outputs"):
            for i, io in enumerate(self.typed(m, kind, list, "manifest")):
                self.tensor(io, f"{kind}[{i}]")
        self.functions(self.typed(m, "functions", dict, "manifest", required=False) or {}, members)
        sparse_weights.check_spec(m.get("sparse_weights", {}), members, self.fail)
        report = self.typed(m, "report", dict, "manifest", required=False)
        if report is not None:
            for key in _REPORT_NUMBERS:
                self.typed(report, key, (int, float), "report", required=False)
            self.typed(report, "plan_algorithm", str, "report", required=False)

    def target(self, t: dict, members: dict) -> None:
        self.typed(t, "name", str, "target")
        self.typed(t, "runtime", str, "target")
        for key in _TARGET_STRS:
            self.typed(t, key, str, "target", required=False)
        self.cpu(t, "target")
        cc = self.typed(t, "compute_capability", list, "target", required=False)
        if cc is not None and (len(cc) != 2 or not all(_is_int(v) and 0 <= v < 1000 for v in cc)):
            self.fail("target.compute_capability", f"is not [major, minor] ({_short(cc)})")
        used: set[str] = set()
        levels = self.typed(t, "levels", list, "target", required=False)
        if levels == []:
            self.fail("target.levels", "is empty")
        for i, level in enumerate(levels or []):
            path = f"target.levels[{i}]"
            if not isinstance(level, dict):
                self.fail(path, f"has type {type(level).__name__}")
            for key in ("plan", "library", "weights"):
                name = self.typed(level, key, str, path, required=key != "weights")
                if name is None:
                    continue
                if name not in members:
                    self.fail(f"{path}.{key}", f"names {_short(name)}, which the manifest's members do not list")
                if not _LEVEL_MEMBER[key].fullmatch(name) or name in used:
                    self.fail(f"{path}.{key}", f"names {_short(name)}, which is not a {key} member of its own")
                used.add(name)
            self.typed(level, "level", str, path)
            self.typed(level, "arch", str, path, required=False)
            self.cpu(level, path)

    def functions(self, functions: dict, members: dict) -> None:
        for name, f in functions.items():
            path = f"functions[{_short(name)}]"
            if not isinstance(f, dict) or not re.fullmatch(r"[A-Za-z0-9_]{1,64}", name):
                self.fail(path, "is not {plan, library, inputs, outputs} under a plain name")
            for key in ("plan", "library", "ir"):
                member = self.typed(f, key, str, path, required=key != "ir")
                if member is None:
                    continue
                if member not in members or not member.startswith(f"functions/{name}/"):
                    self.fail(f"{path}.{key}", f"names {_short(member)}, which is not a listed member of its own")
            for kind in ("inputs", "outputs"):
                for i, io in enumerate(self.typed(f, kind, list, path)):
                    self.tensor(io, f"{path}.{kind}[{i}]")

    def cpu(self, obj: dict, path: str) -> None:
        """The CPU fields of the target or of one of its levels."""
        self.typed(obj, "mcpu", (str, type(None)), path, required=False)
        self.typed(obj, "num_threads", int, path, required=False)
        self.typed(obj, "amx_tiles", bool, path, required=False)
        for f in self.typed(obj, "cpu_features", list, path, required=False) or []:
            if not isinstance(f, str):
                self.fail(f"{path}.cpu_features", f"holds a {type(f).__name__}")

    def tensor(self, io, path: str) -> None:
        if not isinstance(io, dict):
            self.fail(path, f"has type {type(io).__name__}")
        self.typed(io, "name", str, path)
        if self.typed(io, "dtype", str, path) not in NP_DTYPES:
            self.fail(f"{path}.dtype", f"is not one of {sorted(NP_DTYPES)} ({_short(io['dtype'])})")
        shape = self.typed(io, "shape", list, path)
        if not all(_is_int(d) and d >= 0 for d in shape):
            self.fail(f"{path}.shape", f"is not a list of sizes ({_short(shape)})")

    def members(self, members: dict) -> None:
        if len(members) > MAX_MEMBERS:
            self.fail("members", f"lists {len(members)} members (at most {MAX_MEMBERS})")
        for name in REQUIRED_MEMBERS:
            if name not in members:
                self.fail("members", f"does not list {name!r}")
        for name, info in members.items():
            why = name_problem(name) or ("is reserved" if name in (MANIFEST, SIGNATURE) else None)
            if why:
                self.fail(f"members[{_short(name)}]", f"is not a valid member name ({why})")
            if not isinstance(info, dict):
                self.fail(f"members[{name!r}]", f"has type {type(info).__name__}")
            if not _SHA256.fullmatch(self.typed(info, "sha256", str, f"members[{name!r}]")):
                self.fail(f"members[{name!r}].sha256", "is not 64 lowercase hex digits")
            size = self.typed(info, "size", int, f"members[{name!r}]")
            if size < 0:
                self.fail(f"members[{name!r}].size", f"is negative ({size})")


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)
