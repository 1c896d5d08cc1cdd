"""Make Ed25519 key pairs and sign artifacts (``edgeopt keygen``, ``edgeopt sign``, ``edgeopt.sign``).

    edgeopt.keygen("release.pem")                     # writes release.pem (private) and release.pub.pem
    edgeopt.sign("model.edgeopt", "release.pem")      # adds signature.json; returns the key id
    edgeopt.load("model.edgeopt", trusted_keys=["release.pub.pem"])

The signature format and what it covers are described in ``edgeopt/runtime/signing.py``. Signing verifies the
artifact first (a damaged one is never signed), keeps ``manifest.json``'s bytes and every member's contents as they
are, replaces an earlier signature by the same key and keeps those by other keys. Needs ``cryptography``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile

from .errors import ArtifactError
from .runtime import signing
from .runtime.artifact import MANIFEST, SIGNATURE, every_member, hash_only, read_artifact
from .runtime.zip_members import CHUNK


def keygen(private_path: str | os.PathLike, public_path: str | os.PathLike | None = None,
           overwrite: bool = False) -> str:
    """Write a new Ed25519 key pair as PEM files (the private key readable by its owner only; the public key at
    ``public_path``, default ``<private without .pem>.pub.pem``); returns the key id."""
    ed25519, serialization = signing.crypto()
    private_path = os.fspath(private_path)
    public_path = os.fspath(public_path) if public_path is not None else _public_path(private_path)
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    for path in (private_path, public_path):
        if os.path.exists(path) and not overwrite:
            raise ArtifactError(f"{path} exists: keygen does not overwrite keys (remove it, or pass overwrite)")
    _write(private_path, private_pem, 0o600)
    _write(public_path, public_pem, 0o644)
    return signing.key_id(key.public_key())


def _public_path(private_path: str) -> str:
    stem = private_path[:-4] if private_path.endswith(".pem") else private_path
    return stem + ".pub.pem"


def _write(path: str, data: bytes, mode: int) -> None:
    if os.path.exists(path):
        os.remove(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def private_key(key, password: bytes | None = None):
    """An Ed25519 private key from PEM text (str or bytes), a path to a PEM file, 32 raw seed bytes, or a key."""
    ed25519, serialization = signing.crypto()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    data, source = signing.key_bytes(key, "the private key")
    try:
        if len(data) == 32 and b"-----BEGIN" not in data:
            return ed25519.Ed25519PrivateKey.from_private_bytes(data)
        loaded = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as e:
        raise ArtifactError(f"{source} is not a PEM private key or 32 raw bytes ({e})") from None
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise ArtifactError(f"{source} is a {type(loaded).__name__}, not an Ed25519 key (make one with "
                            "`edgeopt keygen`)")
    return loaded


def sign(path: str | os.PathLike, key, out: str | os.PathLike | None = None, password: bytes | None = None) -> str:
    """Sign the artifact at ``path`` with the Ed25519 private ``key`` (see ``private_key``), writing it to ``out``
    (default: in place, replaced atomically); returns the key id. The artifact is verified first."""
    key = private_key(key, password)
    path = os.fspath(path)
    out = os.fspath(out) if out is not None else path
    what = f"artifact {path!r}"
    read_artifact(path, what, consumers=every_member(hash_only))  # verified, the members hashed, not kept
    kid = signing.key_id(key.public_key())
    with zipfile.ZipFile(path) as zin:
        manifest_bytes = zin.read(MANIFEST)  # verified above; at most MAX_MANIFEST_BYTES
        kept = []
        if SIGNATURE in zin.namelist():
            kept = [signing.entry(k, s) for k, s in signing.decode(zin.read(SIGNATURE), what) if k != kid]
        sig = signing.entry(kid, key.sign(signing.message(manifest_bytes)))
        fd, tmp = tempfile.mkstemp(prefix=".edgeopt-sign-", dir=os.path.dirname(os.path.abspath(out)))
        try:
            with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zout:
                for info in zin.infolist():
                    if info.filename != SIGNATURE:
                        _copy(zin, zout, info)
                zout.writestr(SIGNATURE, signing.encode(kept + [sig]))
            os.chmod(tmp, os.stat(path).st_mode & 0o777)
            os.replace(tmp, out)
        except BaseException:
            os.unlink(tmp)
            raise
    return kid


def _copy(zin: zipfile.ZipFile, zout: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """One member copied byte for byte (recompressed), streamed."""
    new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    new.compress_type = zipfile.ZIP_DEFLATED
    new.external_attr = info.external_attr
    with zin.open(info) as src, zout.open(new, "w", force_zip64=info.file_size >= 1 << 31) as dst:
        shutil.copyfileobj(src, dst, CHUNK)
