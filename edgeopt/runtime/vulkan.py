"""The Vulkan backend of the runtime: runs a ``target="vulkan"`` artifact's WGSL shaders with wgpu on a Vulkan device.

The device needs a Vulkan driver (a GPU's, or Mesa's lavapipe: ``apt-get install mesa-vulkan-drivers libvulkan1``),
numpy and ``wgpu`` (``pip install wgpu==0.32.0``, which bundles wgpu-native): no TVM, no compiler.

- **Device.** ``WGPU_BACKEND_TYPE`` defaults to ``Vulkan`` (wgpu reads it at each adapter request; the value is
  case-sensitive), and the adapter must report ``backend_type == "Vulkan"``: without that, a machine with no Vulkan
  driver silently gets an OpenGL adapter. The artifact's features (``shader-f16``) and limits (storage buffers per
  shader, binding size, workgroup size) are checked against the adapter before anything is created.
- **Memory.** The activations live in one arena laid out by the compiler's memory plan; each is bound with its own
  exact range, because a split grid runs extra workgroups past TVM's guard (it compares with ``>``, not ``>=``)
  and only the binding's bounds keep their writes off the neighbouring tensors; views share their source's range;
  weights are uploaded once per calling thread; each kernel function's workspaces are allocated once and shared
  by its steps.
- **A call** writes the inputs, encodes every dispatch of the plan in one compute pass (WebGPU orders dispatches
  and makes each one's writes visible to the next), submits once and reads the outputs back, which waits for the
  work.
- **Grids** over 65535 workgroups in x are split over z, halving x; the shader's guard compares against the true
  x size, which the per-dispatch uniform (``packGridDimX``) carries.
"""

from __future__ import annotations

import os
import re
import threading

import numpy as np

from ..errors import ArtifactError
from ..ir_dtypes import NP_DTYPES
from . import strict_json

KERNELS_JSON = "webgpu/kernels.json"
WGPU_PIN = "wgpu==0.32.0"
#: what a machine without a GPU installs to get a Vulkan device
SOFTWARE_VULKAN = "apt-get install mesa-vulkan-drivers libvulkan1"
MAX_GROUPS_PER_DIM = 65535
_lock = threading.Lock()
_adapter: object = None  # the adapter, or the message saying why there is none (each caller gets a fresh error)


def _wgpu():
    try:
        import wgpu
    except ImportError:
        raise ArtifactError(f"running a Vulkan artifact needs the wgpu package: pip install {WGPU_PIN}") from None
    return wgpu


def vulkan_adapter():
    """The Vulkan adapter wgpu finds (requested once per process); an ``ArtifactError`` saying why there is none."""
    global _adapter
    with _lock:
        if _adapter is None:
            try:
                _adapter = _request_adapter()
            except ArtifactError as e:
                _adapter = str(e)
    if isinstance(_adapter, str):
        raise ArtifactError(_adapter)
    return _adapter


def _request_adapter():
    wgpu = _wgpu()
    backend = os.environ.setdefault("WGPU_BACKEND_TYPE", "Vulkan")
    if backend != "Vulkan":
        raise ArtifactError(f"WGPU_BACKEND_TYPE is {backend!r}; a Vulkan artifact runs with WGPU_BACKEND_TYPE=Vulkan "
                            "(exact case), or unset")
    try:
        adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    except Exception as e:  # wgpu raises RuntimeError with the loader's complaint
        raise ArtifactError("no Vulkan device found: install the GPU's Vulkan driver, or Mesa's software one "
                            f"({SOFTWARE_VULKAN}). wgpu said: {str(e)[:300]}") from None
    if adapter.info.get("backend_type") != "Vulkan":
        raise ArtifactError(f"wgpu offered {adapter.info.get('device')!r} through {adapter.info.get('backend_type')}, "
                            f"not Vulkan: install a Vulkan driver ({SOFTWARE_VULKAN})")
    return adapter


def adapter_description() -> str:
    info = vulkan_adapter().info
    return f"{info.get('device')} ({info.get('adapter_type')}, {info.get('backend_type')}, {info.get('description')})"


def check_device(target: dict) -> None:
    """Refuse the artifact unless wgpu finds a Vulkan device here."""
    vulkan_adapter()


class VulkanLibrary:
    """The artifact's shaders and calling convention (``edgeopt/lower/webgpu.py`` writes them), checked against
    the adapter: ``library[kernel]`` is one kernel function's spec."""

    def __init__(self, members: dict[str, bytes], what: str = "artifact"):
        try:
            info = strict_json.loads(members[KERNELS_JSON])
            self.functions = _checked_functions(info)
            self.shaders = {d["shader"]: members[d["shader"]].decode()
                            for f in self.functions.values() for d in f["dispatches"]}
            int(info.get("max_bindings", 0)), int(info.get("max_workgroup_invocations", 0))
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise ArtifactError(f"{what}: its WGSL shaders or {KERNELS_JSON} are missing or unreadable ({e})") from None
        if not isinstance(info.get("features", []), list):
            raise ArtifactError(f"{what}: {KERNELS_JSON} lists its features in an unknown form")
        self.features = list(info.get("features", []))
        adapter = vulkan_adapter()
        lacking = [f for f in self.features if f not in adapter.features]
        if lacking:
            raise ArtifactError(f"this Vulkan device ({adapter_description()}) lacks the feature(s) {lacking} the "
                                f"{what} needs (f16 kernels need shader-f16): recompile in fp32")
        limits = adapter.limits
        need = {"max-storage-buffers-per-shader-stage": int(info.get("max_bindings", 0)),
                "max-compute-invocations-per-workgroup": int(info.get("max_workgroup_invocations", 0))}
        for name, value in need.items():
            if value > limits[name]:
                raise ArtifactError(f"the {what} needs {name} >= {value}; this Vulkan device has {limits[name]}")
        self.limits = {name: limits[name] for name in (*need, "max-storage-buffer-binding-size", "max-buffer-size")}

    def check_steps(self, steps: list) -> None:
        """Every step's kernel exists and each of its dispatches binds a parameter the step passes."""
        for step in steps:
            params = [b["param"] for d in self[step["kernel"]]["dispatches"] for b in d["bindings"] if "param" in b]
            if any(p >= len(step["args"]) for p in params):
                raise ArtifactError(f"kernel {step['kernel']!r} binds parameter {max(params)}, but the plan passes it "
                                    f"{len(step['args'])} argument(s)")

    def __getitem__(self, kernel: str) -> dict:
        if kernel not in self.functions:
            raise ArtifactError(f"the plan runs kernel {kernel!r}, which the artifact's {KERNELS_JSON} does not hold")
        return self.functions[kernel]


def _checked_functions(info: dict) -> dict:
    """``info["functions"]`` after checking every field the context reads has its JSON type and a sane range
    (``ValueError`` naming the first that does not): no damaged ``kernels.json`` gets as far as wgpu."""
    def want(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"{KERNELS_JSON}: {what}")

    def count(v, top: int = 1 << 31) -> bool:
        return type(v) is int and 0 <= v < top

    funcs = info["functions"] if isinstance(info, dict) else None
    want(isinstance(funcs, dict), "'functions' is not an object")
    for name, f in funcs.items():
        want(isinstance(f, dict) and isinstance(f.get("dispatches"), list)
             and isinstance(f.get("workspaces", []), list), f"kernel {name!r}: not an object with dispatches")
        spaces = f.get("workspaces", [])
        want(all(isinstance(w, dict) and count(w.get("bytes")) for w in spaces), f"kernel {name!r}: bad workspace")
        params = f.get("params", [])
        want(isinstance(params, list), f"kernel {name!r}: bad params")
        for d in f["dispatches"]:
            want(isinstance(d, dict) and isinstance(d.get("shader"), str) and isinstance(d.get("entry"), str),
                 f"kernel {name!r}: a dispatch without shader or entry")
            binds, write, grid = d.get("bindings"), d.get("write"), d.get("grid")
            want(isinstance(binds, list) and isinstance(write, list) and len(write) == len(binds)
                 and all(type(w) in (int, bool) for w in write), f"kernel {name!r}: bad bindings or write flags")
            for b in binds:
                ok = isinstance(b, dict) and (count(b.get("param"), max(1, len(params)) if params else 1 << 16)
                                              if "param" in b else count(b.get("workspace"), len(spaces)))
                want(ok, f"kernel {name!r}: binding {b!r} names no parameter or workspace")
            want(isinstance(grid, list) and len(grid) == 2 and all(count(g) and g > 0 for g in grid),
                 f"kernel {name!r}: bad grid {grid!r}")
    return funcs


def load_library(members: dict[str, bytes], what: str = "artifact") -> VulkanLibrary:
    return VulkanLibrary(members, what)


def _nbytes(info: dict) -> int:
    return int(np.prod(info["shape"], dtype=np.int64)) * NP_DTYPES[info["dtype"]].itemsize


def _padded(n: int) -> int:
    return max(4, -(-n // 4) * 4)  # storage bindings and writes are whole 32-bit words


def writable(wgsl: str, bindings) -> str:
    """``wgsl`` with the storage buffers at ``bindings`` declared ``read_write`` instead of ``read``."""
    for i in bindings:
        wgsl = re.sub(rf"(@binding\({i}\)\s+var<storage,\s*)read>", r"\1read_write>", wgsl)
    return wgsl


def _words(data: bytes) -> bytes:
    return data + b"\0" * (_padded(len(data)) - len(data))


class VulkanContext:
    """One thread's wgpu device, arena, weights, pipelines and bind groups; ``run`` executes the plan once.

    The activations live in one storage buffer laid out by the compiler's memory plan (offsets are multiples of
    256, WebGPU's largest binding alignment), each bound with its own exact range. WebGPU refuses a buffer bound
    read-only and writable in one dispatch, so a shader's arena bindings are declared ``read_write`` (its WGSL and
    layout say so); weights and workspaces keep their own buffers and the access TVM declared."""

    def __init__(self, model):
        wgpu = _wgpu()
        lib: VulkanLibrary | None = model._lib  # None: a plan with no kernels (views only)
        plan = model.plan
        limits = lib.limits if lib is not None else vulkan_adapter().limits
        self.device = vulkan_adapter().request_device_sync(
            required_features=lib.features if lib is not None else [],
            required_limits={k: limits[k] for k in ("max-storage-buffers-per-shader-stage",
                                                    "max-storage-buffer-binding-size", "max-buffer-size")})
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        too_big = [n for n, v in plan["values"].items() if _nbytes(v) > limits["max-storage-buffer-binding-size"]]
        if too_big:
            raise ArtifactError(f"tensors {too_big[:3]} are larger than this Vulkan device's storage binding limit "
                                f"({limits['max-storage-buffer-binding-size']} bytes)")
        arena_bytes = int(plan.get("arena_bytes", 0))
        if arena_bytes > limits["max-buffer-size"]:
            raise ArtifactError(f"the activations' arena takes {arena_bytes} bytes; this Vulkan device's buffers "
                                f"hold at most {limits['max-buffer-size']}")
        self.arena = self.device.create_buffer(size=_padded(arena_bytes), usage=usage)
        align = vulkan_adapter().limits["min-storage-buffer-offset-alignment"]
        where: dict[str, tuple] = {}  # value -> (buffer, byte offset, bytes)
        for name, info in plan["values"].items():
            size = _nbytes(info)
            if info["kind"] == "const":
                data = _words(np.ascontiguousarray(model._consts[name]).tobytes())
                where[name] = (self.device.create_buffer_with_data(data=data, usage=usage), 0, size)
            elif info["kind"] in ("input", "buffer"):
                if "offset" not in info:  # a plan without a memory plan: a buffer of its own
                    where[name] = (self.device.create_buffer(size=_padded(size), usage=usage), 0, size)
                    continue
                off = int(info["offset"])
                if off % align or off + size > self.arena.size:
                    raise ArtifactError(f"plan places {name!r} at bytes {off}..{off + size}, outside the arena of "
                                        f"{self.arena.size} bytes or not a multiple of this device's {align}")
                where[name] = (self.arena, off, size)
        for name in plan["values"]:
            src = name
            while plan["values"][src]["kind"] == "view":
                src = plan["values"][src]["of"]
            where[name] = where[src]
        self._pipelines: dict[tuple, tuple] = {}
        self._workspaces: dict[str, list] = {}
        self.dispatches = []
        for step in plan["steps"]:
            spec = model._funcs[step["kernel"]]
            spaces = self._workspace(step["kernel"], spec, usage)
            for d in spec["dispatches"]:
                resources = [where[step["args"][b["param"]]] if "param" in b else spaces[b["workspace"]]
                             for b in d["bindings"]]
                self.dispatches.append(self._bind(wgpu, lib, d, resources))
        self.inputs = [(where[i["name"]], NP_DTYPES[plan["values"][i["name"]]["dtype"]]) for i in plan["inputs"]]
        held = {name: NP_DTYPES[info["dtype"]] for name, info in plan["values"].items()}
        self.outputs = [(where[o["name"]], o["shape"], held[o["name"]], NP_DTYPES[o["dtype"]]) for o in plan["outputs"]]
        self.where = where

    def _workspace(self, kernel: str, spec: dict, usage) -> list:
        if kernel not in self._workspaces:
            self._workspaces[kernel] = [(self.device.create_buffer(size=_padded(w["bytes"]), usage=usage), 0,
                                         w["bytes"]) for w in spec["workspaces"]]
        return self._workspaces[kernel]

    def _pipeline(self, wgpu, lib: VulkanLibrary, d: dict, in_arena: frozenset):
        key = (d["entry"], in_arena)
        if key not in self._pipelines:
            kinds = ["storage" if w or i in in_arena else "read-only-storage" for i, w in enumerate(d["write"])]
            entries = [{"binding": i, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": {"type": k}}
                       for i, k in enumerate(kinds)]
            entries.append({"binding": len(kinds), "visibility": wgpu.ShaderStage.COMPUTE,
                            "buffer": {"type": "uniform"}})
            layout = self.device.create_bind_group_layout(entries=entries)
            try:
                shader = self.device.create_shader_module(code=writable(lib.shaders[d["shader"]], in_arena))
                pipe = self.device.create_compute_pipeline(
                    layout=self.device.create_pipeline_layout(bind_group_layouts=[layout]),
                    compute={"module": shader, "entry_point": d["entry"]})
            except Exception as e:  # naga's validation error names the WGSL line
                raise ArtifactError(f"the Vulkan device rejected shader {d['shader']}: {str(e)[:600]}") from None
            self._pipelines[key] = (pipe, layout)
        return self._pipelines[key]

    def _bind(self, wgpu, lib: VulkanLibrary, d: dict, resources: list) -> tuple:
        in_arena = frozenset(i for i, (buf, _, _) in enumerate(resources) if buf is self.arena)
        pipe, layout = self._pipeline(wgpu, lib, d, in_arena)
        bx, by = d["grid"]
        if by > MAX_GROUPS_PER_DIM:  # only x is split (over z): TVM's guard knows x's true size, not y's
            raise ArtifactError(f"shader {d['shader']} launches {by} workgroups in y; WebGPU allows "
                                f"{MAX_GROUPS_PER_DIM}: recompile for smaller shapes")
        words = np.zeros(4, np.uint32)  # PODArgs: no scalar arguments (static shapes), then packGridDimX
        words[0] = bx
        bz = 1
        while bx > MAX_GROUPS_PER_DIM:
            bx, bz = (bx + 1) // 2, bz * 2
        uniform = self.device.create_buffer_with_data(data=words.tobytes(), usage=wgpu.BufferUsage.UNIFORM)
        entries = [{"binding": i, "resource": {"buffer": buf, "offset": off, "size": _padded(size)}}
                   for i, (buf, off, size) in enumerate(resources)]
        entries.append({"binding": len(resources), "resource": {"buffer": uniform, "offset": 0, "size": 16}})
        group = self.device.create_bind_group(layout=layout, entries=entries)
        return pipe, group, (bx, by, bz), uniform

    def run(self, arrays: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        queue = self.device.queue
        for ((buf, off, _), dtype), a in zip(self.inputs, arrays):
            queue.write_buffer(buf, off, _words(np.ascontiguousarray(a, dtype=dtype).tobytes()))
        encoder = self.device.create_command_encoder()
        cpass = encoder.begin_compute_pass()
        for pipe, group, (bx, by, bz), _ in self.dispatches:
            cpass.set_pipeline(pipe)
            cpass.set_bind_group(0, group)
            cpass.dispatch_workgroups(bx, by, bz)
        cpass.end()
        queue.submit([encoder.finish()])
        outs = []
        for (buf, off, size), shape, held, want in self.outputs:  # read_buffer waits for the submitted work
            raw = np.frombuffer(queue.read_buffer(buf, off, _padded(size)), np.uint8)[:size]
            out = raw.view(held).reshape(shape)
            outs.append(out.astype(want) if held != want else out.copy())
        return tuple(outs)
