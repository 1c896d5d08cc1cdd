"""``CompiledModel``: what ``edgeopt.compile`` returns. Call it, read its IR, plan and report, compare a quantized
model with its float original layer by layer, and save it as one artifact file."""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from .errors import ArtifactError, TargetError
from .runtime.devices import check_device
from .runtime.model import Model


class CompiledModel:
    """A compiled model: call it, read its IR and report, save it as one artifact file.

    An artifact for a device this machine cannot run (e.g. ``target="arm"`` on x86-64) is never loaded here:
    ``save``, ``report``, ``ir`` and ``plan`` work, and calling it raises ``TargetError`` saying where to run it.
    """

    def __init__(self, artifact: bytes, graph, report: dict, target: dict | None = None,
                 plan_json: bytes | None = None, quantization=None):
        self._artifact = artifact
        self._quantization = quantization  # the quantization pass, with the graphs before and after it
        self._graph, self._ir_text = graph, None
        self.report = report
        self._not_here = cannot_run_here(target) if target is not None else None
        self._model = None if self._not_here else Model(artifact, what="compiled artifact")
        self._plan_json, self._plan = plan_json, None

    @classmethod
    def from_cache(cls, artifact: bytes, ir_text: str, t0: float) -> CompiledModel:
        """A compile served whole by the model cache (``edgeopt.cache.models``): the artifact as first compiled;
        ``report`` is its report with this compile's time (since ``t0``, a ``perf_counter``) and
        ``report["cache"]["model"] == "hit"``; ``graph`` is rebuilt from the IR text and the artifact's weights when
        first read."""
        import io
        import json
        import zipfile

        with zipfile.ZipFile(io.BytesIO(artifact)) as z:  # the store checked the bytes' sha256; loading checks all
            manifest, plan_json = json.loads(z.read("manifest.json")), z.read("plan.json")
        report = {**manifest["report"], "cache": {"model": "hit", "kernels_reused": 0, "kernels_compiled": 0}}
        cm = cls(artifact, None, report, manifest["target"], plan_json)
        cm._ir_text = ir_text
        report["compile_seconds"] = round(time.perf_counter() - t0, 4)
        return cm

    @property
    def graph(self):
        """The IR graph after all passes."""
        if self._graph is None:
            from .cache.models import graph_from_artifact

            self._graph = graph_from_artifact(self._artifact, self._ir_text)
        return self._graph

    @graph.setter
    def graph(self, g) -> None:
        self._graph = g

    @property
    def ir(self) -> str:
        """The IR after all passes, as text."""
        return self._ir_text if self._graph is None else str(self._graph)

    @property
    def plan(self) -> dict:
        """The execution plan stored in the artifact (values, kernel steps)."""
        if self._model is not None:
            return self._model.plan
        if self._plan is None:  # a model that cannot run here: parse the plan the compiler wrote, once
            import json

            if self._plan_json is None:
                from .runtime.artifact import read_artifact

                self._plan_json = read_artifact(self._artifact, "compiled artifact")[1]["plan.json"]
            self._plan = json.loads(self._plan_json)
        return self._plan

    def _runtime_model(self) -> Model:
        if self._model is None:
            raise TargetError(self._not_here)
        return self._model

    def __call__(self, *args, **kwargs):
        return self._runtime_model()(*args, **kwargs)

    def profile(self, *args, repeat: int = 20, **kwargs) -> list[dict]:
        """Per-kernel times on these inputs, slowest first (see ``edgeopt.runtime.Model.profile``)."""
        return self._runtime_model().profile(*args, repeat=repeat, **kwargs)

    def compare(self, model=None, data=None) -> list[dict]:
        """Per-layer error of this quantized model against its float original, worst (lowest SQNR) first: for each
        conv / linear / matmul output (``layer``: its IR value name; ``module``: its module's, as
        ``QuantConfig.keep_float`` takes it) its SQNR (dB), cosine and the noise the layer itself adds
        (``added_noise``), on ``data`` (input batches as ``calibration_data`` takes them; default: up to 8
        calibration batches). Given the float
        torch ``model``, a last row ``"output"`` compares this artifact's outputs with PyTorch's on ``data``."""
        from .quant.compare import cosine, layer_errors, sqnr_db
        from .quant.setup import calibration_batches

        p = self._quantization
        if p is None or not hasattr(p, "float_graph"):
            from .quant import QuantizationError

            raise QuantizationError("compare() is for models compiled with quantize=...")
        if data is not None:
            batches = calibration_batches(data, p.float_graph, "data batch")
        elif getattr(p, "calibration", None):
            batches = p.calibration[:8]
        else:
            raise ValueError("compare() needs data: a list of input batches")
        rows = layer_errors(p.float_graph, p.quant_graph, batches)
        if model is not None:
            import torch

            with torch.inference_mode():
                ref = [model(*[torch.from_numpy(a) for a in b]) for b in batches]
            ref = np.concatenate([np.asarray(getattr(r, "last_hidden_state", r[0] if isinstance(r, tuple) else r))
                                  .reshape(-1) for r in ref])
            got = [self(*b) for b in batches]
            got = np.concatenate([np.asarray(g[0] if isinstance(g, tuple) else g).reshape(-1) for g in got])
            rows.append({"layer": "output", "module": None, "op": "model", "source": None,
                         "sqnr_db": round(sqnr_db(ref, got), 2), "cosine": round(cosine(ref, got), 6)})
        return rows

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "wb") as f:
            f.write(self._artifact)

    def __repr__(self) -> str:
        r = self.report
        return f"<CompiledModel target={r['target']} kernels={r['num_kernels']} weights={r['weight_bytes']}B>"


def cannot_run_here(target: dict) -> str | None:
    """Why this machine cannot run an artifact for ``target`` (the runtime's own device check), or None."""
    try:
        check_device(target)
    except ArtifactError as e:
        cpu, arch = target.get("mcpu") or target.get("cuda_arch"), target.get("arch")
        why = f"this machine is {platform.machine()}" if arch and arch != platform.machine() else str(e)
        emulated = (f", or emulated here with edgeopt.emulate.run('m.edgeopt', inputs, cpu={cpu!r})"
                    if target.get("name") == "arm" else "")
        which = f" ({arch}, {cpu})" if arch or cpu else ""
        return (f"this model was compiled for target {target.get('name')!r}{which} and cannot run here "
                f"({why}). Save it with compiled.save('m.edgeopt') and run the artifact on the device with "
                f"edgeopt.load('m.edgeopt'){emulated}")
    return None
