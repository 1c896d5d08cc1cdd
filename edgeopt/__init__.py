"""edgeopt: compile pretrained PyTorch models into small, fast artifacts for edge devices.

    compiled = edgeopt.compile(model, example_inputs, target="host")
    y = compiled(x)
    compiled.save("model.edgeopt")
    m = edgeopt.load("model.edgeopt")
    edgeopt.keygen("release.pem"); edgeopt.sign("model.edgeopt", "release.pem")   # optional: Ed25519 signatures
    m = edgeopt.load("model.edgeopt", trusted_keys=["release.pub.pem"])           # refused unless signed by that key
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


def __getattr__(name):
    if name in ("QuantConfig", "QuantizationError"):  # lazily: importing edgeopt stays light for the runtime
        from . import quant

        return getattr(quant, name)
    if name == "Compress":
        from .compress import Compress

        return Compress
    if name == "explore":
        from .compress.explore import explore

        return explore
    if name == "RemoteTuning":
        from .tuning import RemoteTuning

        return RemoteTuning
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'edgeopt' has no attribute {name!r}")


def compile(model, example_inputs=None, target="host", **options):
    """Compile ``model`` for ``target``; see :func:`edgeopt.api.compile`."""
    from .api import compile as _compile

    return _compile(model, example_inputs, target, **options)


def sign(path, private_key, out=None, password=None) -> str:
    """Sign the artifact at ``path`` with an Ed25519 private key (PEM text, a path, or 32 raw bytes); returns the
    key id. ``edgeopt.load(path, trusted_keys=[public key])`` then accepts it. See :func:`edgeopt.signer.sign`."""
    from .signer import sign as _sign

    return _sign(path, private_key, out=out, password=password)


def keygen(private_path, public_path=None, overwrite=False) -> str:
    """Write a new Ed25519 key pair as PEM files; returns the key id. See :func:`edgeopt.signer.keygen`."""
    from .signer import keygen as _keygen

    return _keygen(private_path, public_path, overwrite=overwrite)


def tune(model, example_inputs, target="host", **options):
    """Tune ``model``'s kernels with MetaSchedule into a tuning database; see :func:`edgeopt.tuning.tune`."""
    from .tuning import tune as _tune

    return _tune(model, example_inputs, target, **options)


__all__ = [
    "ArtifactError", "EdgeoptError", "InputError", "PassError", "TargetError", "TuningError",
    "UnsupportedModelError", "__version__", "compile", "keygen", "load", "sign", "tune",
]
