"""edgeopt: compile pretrained PyTorch models into small, fast artifacts for edge devices.

    compiled = edgeopt.compile(model, example_inputs, target="host")
    y = compiled(x)
    compiled.save("model.edgeopt")
    m = edgeopt.load("model.edgeopt")
    edgeopt.tune(model, example_inputs, tuning_db="t.json")   # optional: MetaSchedule, then compile(tuning_db=)

Importing ``edgeopt`` (and ``edgeopt.runtime``) does not import torch or TVM's compiler: the runtime
runs artifacts on devices that have neither.
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    ArtifactError,
    EdgeoptError,
    InputError,
    PassError,
    TargetError,
    TuningError,
    UnsupportedModelError,
)
from .runtime import load  # noqa: E402


def compile(model, example_inputs, target="host", **options):
    """Compile ``model`` for ``target``; see :func:`edgeopt.api.compile`."""
    from .api import compile as _compile

    return _compile(model, example_inputs, target, **options)


def tune(model, example_inputs, target="host", **options):
    """Tune ``model``'s kernels with MetaSchedule into a tuning database; see :func:`edgeopt.tuning.tune`."""
    from .tuning import tune as _tune

    return _tune(model, example_inputs, target, **options)


__all__ = [
    "ArtifactError", "EdgeoptError", "InputError", "PassError", "TargetError", "TuningError",
    "UnsupportedModelError", "__version__", "compile", "load", "tune",
]
