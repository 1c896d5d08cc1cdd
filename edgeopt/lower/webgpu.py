"""Build scheduled kernels into WGSL shaders and the calling convention a WebGPU runtime needs to dispatch them.

TVM 0.27's WebGPU codegen emits WGSL, but the wheel ships no WebGPU runtime, and the module it builds holds all
kernels in one source that no shader compiler accepts (each kernel redeclares its bindings). So each edgeopt
kernel (a scheduled PrimFunc) is lowered with TVM's own pipeline for ``webgpu`` and then split here:

- the **device kernels** it became (one or several: a PrimFunc with several loop nests launches one each) are
  compiled to WGSL one at a time;
- the **host function** says in which order they run, with which buffers and launch sizes
  (``call_ffi_kernel(name, buffers..., launch values...)``), and which intermediate buffers (workspaces) it
  allocates between them.

The result, ``WebGPULibrary``, becomes artifact members (``members()``):

    webgpu/kernels.json   {"functions": {kernel: {"params": [names], "workspaces": [{"name", "bytes"}],
                            "dispatches": [{"entry", "shader", "bindings": [{"param": i} | {"workspace": j}],
                                            "write": [0|1 per binding], "grid": [x, y], "workgroup": [x, y, z]}]}},
                           "features": [...], "max_bindings": n, "max_workgroup_invocations": n}
    webgpu/<entry>.wgsl   one shader per device kernel

Binding ``i`` of a dispatch is the WGSL ``@binding(i)``; after the buffers comes one uniform with the packed scalar
arguments (none: shapes are static) and ``packGridDimX``, the x grid size. Kernel parameters are matched to
buffers by name (``X_ptr`` is buffer ``X``), never by position: TVM orders them by name, not as the PrimFunc does.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import tvm
from tvm import tirx
from tvm.tirx.build import split_host_device_mods

from ..errors import TargetError
from ..runtime.vulkan import KERNELS_JSON

#: float literals TVM 0.27 prints that WGSL has no spelling for (``inff``), as bit patterns naga accepts
_SPECIAL_FLOATS = {"inff": "bitcast<f32>(0x7f800000u)", "nanf": "bitcast<f32>(0x7fc00000u)",
                   # f16 ones through f32: naga (wgpu 0.32) rejects a component of a bitcast ("invalid accessor")
                   "infh": "f16(bitcast<f32>(0x7f800000u))", "nanh": "f16(bitcast<f32>(0x7fc00000u))"}
_SPECIAL_RE = re.compile(r"(?<![\w.])(" + "|".join(_SPECIAL_FLOATS) + r")(?![\w.])")
#: i32's minimum, which TVM writes as a negated literal: 2147483648i is out of range, so WGSL refuses it
_I32_MIN_RE = re.compile(r"-2147483648i(?!\w)")
_TAGS = ("blockIdx.x", "blockIdx.y", "threadIdx.x", "threadIdx.y", "threadIdx.z")


@dataclass
class Dispatch:
    entry: str
    wgsl: str
    bindings: list[dict]
    write: list[int]
    grid: list[int]
    workgroup: list[int]

    def to_json(self) -> dict:
        return {"entry": self.entry, "shader": f"webgpu/{self.entry}.wgsl", "bindings": self.bindings,
                "write": self.write, "grid": self.grid, "workgroup": self.workgroup}


@dataclass
class WebGPUFunction:
    params: list[str]
    workspaces: list[dict] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)


@dataclass
class WebGPULibrary:
    """Every kernel's dispatches; ``members()`` is what the artifact stores."""

    functions: dict[str, WebGPUFunction]
    features: list[str]

    def members(self) -> dict[str, bytes]:
        out, funcs = {}, {}
        for name, f in self.functions.items():
            funcs[name] = {"params": f.params, "workspaces": f.workspaces,
                           "dispatches": [d.to_json() for d in f.dispatches]}
            for d in f.dispatches:
                out[f"webgpu/{d.entry}.wgsl"] = d.wgsl.encode()
        dispatches = [d for f in self.functions.values() for d in f.dispatches]
        info = {"functions": funcs, "features": self.features,
                "max_bindings": max((len(d.bindings) for d in dispatches), default=0),
                "max_workgroup_invocations": max((math.prod(d.workgroup) for d in dispatches), default=0)}
        out[KERNELS_JSON] = json.dumps(info, indent=1).encode()
        return out


def build_webgpu(funcs: dict[str, tirx.PrimFunc], tvm_target) -> WebGPULibrary:
    """Lower the scheduled kernels ``funcs`` (name -> PrimFunc, each with a thread binding) for ``tvm_target``
    (kind ``webgpu``) and split them into WGSL dispatches (see the module docstring)."""
    params = {name: [p.name for p in f.params] for name, f in funcs.items()}
    mod = tirx.transform.BindTarget(tvm_target.with_host(tvm_target.host))(tvm.IRModule(funcs))
    pipeline, _, finalize_device = tvm.tirx.get_default_tir_pipeline(tvm_target)
    host_mod, device_mods = split_host_device_mods(pipeline(mod))
    if len(device_mods) != 1:
        raise TargetError(f"the WebGPU build produced device modules for {list(device_mods)}, expected one webgpu "
                          "module: some kernel got no GPU schedule")
    ((device_target, device_mod),) = device_mods.items()
    device_mod = finalize_device()(device_mod)
    codegen = tvm.get_global_func("target.build.webgpu")
    device = {gv.name_hint: f for gv, f in device_mod.functions.items()}
    features: set[str] = set()
    out = {}
    for gv, host in host_mod.functions.items():
        name = gv.name_hint
        if name not in funcs:
            continue
        calls, workspaces = _host_calls(name, host.body)
        fn = WebGPUFunction(params[name], [{"name": n, "bytes": b} for n, b in workspaces])
        buffers = [*params[name], *(n for n, _ in workspaces)]
        if len(set(buffers)) != len(buffers):  # kernels name their buffers: two with one name are ambiguous
            raise TargetError(f"kernel {name} has two buffers of one name ({buffers}): cannot bind by name")
        slots = {p: {"param": i} for i, p in enumerate(params[name])}
        slots.update({n: {"workspace": j} for j, (n, _) in enumerate(workspaces)})
        for entry, launch in calls:
            kernel = device[entry]
            built = codegen(tvm.IRModule({tvm.ir.GlobalVar(entry): kernel}), device_target)
            wgsl = legal_wgsl(built.inspect_source())
            info = json.loads(built.inspect_source("func_info"))[entry]
            fn.dispatches.append(_dispatch(name, entry, kernel, info, wgsl, launch, slots))
            if "enable f16;" in wgsl:
                features.add("shader-f16")
        if not fn.dispatches:
            raise TargetError(f"kernel {name} launches no GPU kernel after lowering for WebGPU")
        out[name] = fn
    missing = sorted(set(funcs) - set(out))
    if missing:
        raise TargetError(f"kernels {missing} have no host function after lowering for WebGPU")
    return WebGPULibrary(out, sorted(features))


#: C's fmodf, which the fmod kernels call: WGSL has none; its float ``%`` is ``a - b * trunc(a / b)`` (the same but
#: for the last bits where the quotient is large)
#: C math functions TVM's WGSL calls but WGSL lacks, defined in the shader where called
_HELPERS = {"fmodf": "fn fmodf(a: f32, b: f32) -> f32 { return a % b; }\n",
            "log10f": "fn log10f(x: f32) -> f32 { return log2(x) * 0.30102999566398120f; }\n"}


def legal_wgsl(source: str) -> str:
    """TVM's WGSL with its infinity and NaN literals (``inff``, which WGSL lacks) spelled as bit casts, i32's
    minimum (a max-pool's start on integers) as an expression WGSL accepts, and ``fmodf`` / ``log10f`` defined
    where called."""
    source = _I32_MIN_RE.sub("(-2147483647i - 1i)", source)
    for name, helper in _HELPERS.items():
        if f"{name}(" in source and f"fn {name}(" not in source:  # after the directives (enable f16;), which come first
            lines = source.splitlines(keepends=True)
            at = max((i + 1 for i, line in enumerate(lines) if line.lstrip().startswith(("enable ", "requires ",
                                                                                          "diagnostic"))), default=0)
            source = "".join(lines[:at] + [helper] + lines[at:])
    return _SPECIAL_RE.sub(lambda m: _SPECIAL_FLOATS[m.group(1)], source)


def _dispatch(func: str, entry: str, kernel, info: dict, wgsl: str, launch: dict, slots: dict) -> Dispatch:
    types = info["arg_types"]
    names = [p.name for p in kernel.params]
    if any(t != "handle" for t in types):
        raise TargetError(f"kernel {func} ({entry}) takes scalar arguments {names}: shapes must be static")
    write = next((json.loads(t.split(":", 1)[1]) for t in info["launch_param_tags"]
                  if t.startswith("paramWriteAccess:")), [0] * len(names))
    bindings = []
    for p in names:
        buf = p[:-4] if p.endswith("_ptr") else p
        if buf not in slots:
            raise TargetError(f"kernel {func} ({entry}) reads buffer {buf!r}, which is neither a parameter nor "
                              f"a workspace of the function (parameters: {list(slots)})")
        bindings.append(slots[buf])
    unknown = sorted(set(launch) - set(_TAGS))
    if unknown:
        raise TargetError(f"kernel {func} ({entry}) uses launch parameters {unknown}, which WebGPU has no "
                          "equivalent for (blockIdx.z is reserved, dynamic shared memory does not exist)")
    grid = [launch.get("blockIdx.x", 1), launch.get("blockIdx.y", 1)]
    workgroup = [launch.get(t, 1) for t in ("threadIdx.x", "threadIdx.y", "threadIdx.z")]
    return Dispatch(entry, wgsl, bindings, [int(w) for w in write], grid, workgroup)


def _host_calls(func: str, body) -> tuple[list[tuple[str, dict]], list[tuple[str, int]]]:
    """(kernel launches in order: (entry, {launch tag: value}), workspaces: (buffer name, bytes)) of a host
    function, read from its ``call_ffi_kernel`` calls and ``AllocBuffer`` statements. The launches must be
    straight-line code (the argument checks wrap them in ``if``s without ``else``): a launch in a loop or in an
    ``else`` branch is refused, since the plan runs each launch once, unconditionally."""
    calls, workspaces = [], []

    def visit(s, where: str | None):
        if isinstance(s, tirx.AllocBuffer):
            b = s.buffer
            dt = tvm.DataType(b.dtype)
            workspaces.append((b.name, math.prod(int(d) for d in b.shape) * max(1, dt.bits * dt.lanes // 8)))
        if isinstance(s, tirx.Evaluate) and isinstance(s.value, tvm.ir.Call):
            call = s.value
            if getattr(call.op, "name", "") == "tirx.call_ffi_kernel":
                if where:
                    raise TargetError(f"kernel {func} launches {call.args[0].value} {where}: the WebGPU plan runs "
                                      "every launch once, in order")
                tags = list(call.attrs.launch_params)
                values = call.args[len(call.args) - len(tags):]
                if not all(isinstance(v, tirx.IntImm) for v in values):
                    raise TargetError(f"kernel {call.args[0].value} has launch sizes that are not constants "
                                      f"({list(values)}): shapes must be static")
                calls.append((call.args[0].value, {t: int(v.value) for t, v in zip(tags, values)}))
        if isinstance(s, tirx.SeqStmt):
            kids = [(k, where) for k in s.seq]
        else:
            inner = "in a loop" if isinstance(s, tirx.For) else where
            kids = [(getattr(s, "body", None), inner), (getattr(s, "then_case", None), where),
                    (getattr(s, "else_case", None), where or "in an else branch")]
        for k, w in kids:
            if isinstance(k, tirx.Stmt):
                visit(k, w)

    visit(body, None)
    return calls, workspaces
