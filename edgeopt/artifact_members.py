"""How a compile's builds become an artifact's members: the weights (dense, or mask and values where mostly zero),
each CPU level's plan, library and differing weights, and the weights several functions share (a weight equal in
bytes is stored once)."""

from __future__ import annotations

import numpy as np

from .runtime.safetensors_io import dumps as safetensors_dumps


def store_weights(weights: dict, members: dict, report: dict) -> dict:
    """Write ``weights`` into ``members``: mostly-zero ones (magnitude pruning) as mask and values in their own
    member (``edgeopt.runtime.sparse_weights``), the rest dense; returns the manifest's ``sparse_weights``."""
    from .runtime import sparse_weights

    dense, sparse, spec = sparse_weights.encode(weights)
    members["weights.safetensors"] = safetensors_dumps(dense)
    if spec:
        members[sparse_weights.MEMBER] = safetensors_dumps(sparse)
        report["sparse_weights"] = {"count": len(spec),
                                    "dense_bytes": int(sum(weights[k].nbytes for k in spec)),
                                    "stored_bytes": int(sum(a.nbytes for a in sparse.values()))}
    return spec


def level_members(name: str | None, b, base, members: dict) -> dict:
    """Add CPU level ``name``'s build ``b`` (``edgeopt.api``'s ``_Built``: its plan, library and weights) to
    ``members``. The baseline build ``base``'s are the artifact's own ``plan.json``, ``kernels.so`` and
    ``weights.safetensors``; another level stores only the weights whose name or bytes differ from the baseline's.
    Returns the level's member names for the manifest."""
    if b is base:
        return {"plan": "plan.json", "library": "kernels.so"}
    own = {k: a for k, a in b.consts.items()
           if k not in base.consts or base.consts[k].dtype != a.dtype or base.consts[k].shape != a.shape
           or not np.array_equal(base.consts[k], a)}
    out = {"plan": f"levels/{name}/plan.json", "library": f"levels/{name}/kernels.so", "ir": f"levels/{name}/ir.txt"}
    members[out["plan"]], members[out["library"]] = compact_json(b.lowered.plan), b.lib
    members[out["ir"]] = str(b.graph).encode()
    if own:
        out["weights"] = f"levels/{name}/weights.safetensors"
        members[out["weights"]] = safetensors_dumps(own)
    return out


def digest(a: np.ndarray) -> tuple:
    import hashlib

    return a.dtype.str, a.shape, hashlib.sha256(np.ascontiguousarray(a).view(np.uint8).data).hexdigest()


def share_weights(plan: dict, consts: dict, weights: dict, known: dict, prefix: str) -> dict:
    """``plan`` with each weight renamed to the one in ``weights`` with the same bytes (stored once: ``known`` maps
    ``digest`` to name), or, when its name is taken by other bytes, to a name of its own (``prefix``.name); adds the
    weights it keeps to ``weights`` and ``known``."""
    rename = {}
    for name, arr in consts.items():
        d = digest(arr)
        if d in known:
            rename[name] = known[d]
            continue
        new = name
        while new in weights or (new != name and new in plan["values"]):
            new = f"{prefix}.{new}"
        weights[new] = arr
        known[d] = rename[name] = new
    values = {rename.get(k, k): ({**v, "of": rename.get(v["of"], v["of"])} if "of" in v else v)
              for k, v in plan["values"].items()}
    if len(values) != len(plan["values"]):
        raise AssertionError(f"edgeopt bug: sharing weights with function {prefix!r} renamed a weight onto a value")
    steps = [{**st, "args": [rename.get(a, a) for a in st["args"]]} for st in plan["steps"]]
    return {**plan, "values": values, "steps": steps}


def tile_use(built) -> dict:
    """``{"amx_tiles": True}`` where a kernel of ``built`` runs on AMX tiles (``edgeopt.lower.amx``): the runtime
    then asks Linux for the tile state before it loads the library (``edgeopt.runtime.amx_permission``)."""
    return {"amx_tiles": True} if any(",amx" in k.get("schedule", "") for k in built.lowered.kernels) else {}


def compact_json(obj) -> bytes:
    """``obj`` as JSON bytes without spaces (a plan is the biggest JSON an artifact holds)."""
    import json

    return json.dumps(obj, separators=(",", ":")).encode()
