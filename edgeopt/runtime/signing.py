"""Ed25519 signatures of artifacts: what is signed, where the signature lives, and checking it when loading.

What is signed: the exact bytes of ``manifest.json``, prefixed with ``DOMAIN`` (so an edgeopt signature can never be
taken for a signature of something else). The manifest records the sha256 and size of every member, and loading
refuses any member it does not list (save ``signature.json``) or whose hash differs, so a valid signature covers
the whole artifact: plan, weights and kernel library.

Where it lives: the zip member ``signature.json``, which the manifest does not list (signing adds it without
changing a byte of the manifest, and an artifact signed later still loads without keys)::

    {"format": "edgeopt-signature", "format_version": 1,
     "signatures": [{"algorithm": "ed25519",
                     "key_id": "ed25519:<sha256 of the 32-byte raw public key, hex>",
                     "signature": "<64-byte Ed25519 signature, base64>"}]}

One entry per signing key (signing again with the same key replaces its entry). The public key itself is not
stored: the loader must already hold it.

Checking (``verify``, called by ``read_artifact`` when ``trusted_keys`` is given, before any member is read, so
before any library is loaded): the artifact must carry a signature whose ``key_id`` is one of the trusted keys and
which verifies over the manifest; otherwise ``ArtifactError`` says which: not signed, signed by other keys, or a
signature that does not match (the manifest changed after signing). The ``cryptography`` package is imported only
here, only when keys are given (``pip install cryptography``, or ``edgeopt[sign]``); making keys and signing is
``edgeopt/signer.py``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from ..errors import ArtifactError
from . import strict_json

SIG_FORMAT = "edgeopt-signature"
SIG_VERSION = 1
ALGORITHM = "ed25519"
DOMAIN = b"edgeopt artifact manifest signature v1\n"
MAX_SIGNATURE_BYTES = 64 << 10
MAX_SIGNATURES = 64
INSTALL = "pip install cryptography (or pip install 'edgeopt[sign]')"


def crypto():
    """The ``cryptography`` package's Ed25519 and serialization modules; ``ArtifactError`` saying how to install."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ArtifactError(f"artifact signatures need the cryptography package: {INSTALL}") from None
    return ed25519, serialization


def message(manifest_bytes: bytes) -> bytes:
    """The bytes an artifact's signature signs."""
    return DOMAIN + bytes(manifest_bytes)


def raw_public(key) -> bytes:
    """The 32 raw bytes of an Ed25519 public key object."""
    _, serialization = crypto()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key) -> str:
    """``ed25519:<sha256 of the raw public key>``: how signatures name their key."""
    return f"{ALGORITHM}:{hashlib.sha256(raw_public(key)).hexdigest()}"


def public_keys(trusted_keys) -> dict[str, object]:
    """{key_id: Ed25519 public key} from ``trusted_keys``: one key or a list of them, each PEM text (str or bytes),
    a path to a PEM file, 32 raw bytes, or a ``cryptography`` Ed25519 public key. ``ArtifactError`` when one is
    not an Ed25519 public key, or the list is empty (an empty list would refuse every artifact)."""
    ed25519, serialization = crypto()
    if isinstance(trusted_keys, (str, bytes, bytearray, os.PathLike, ed25519.Ed25519PublicKey)):
        trusted_keys = [trusted_keys]
    try:
        items = list(trusted_keys)
    except TypeError:
        raise ArtifactError(f"trusted_keys must be a list of public keys, got {type(trusted_keys).__name__}") from None
    if not items:
        raise ArtifactError("trusted_keys is empty: give the public key(s) the artifact must be signed with")
    keys = {}
    for i, item in enumerate(items):
        key = _public_key(item, f"trusted key #{i + 1}", ed25519, serialization)
        keys[key_id(key)] = key
    return keys


def key_bytes(item, name: str) -> tuple[bytes, str]:
    """(bytes, a description for errors) of a key given as PEM text (str or bytes), a path to a PEM file or 32 raw
    bytes; ``ArtifactError`` when it is none of these or the file cannot be read."""
    data, source = item, name
    if isinstance(item, str) and "-----BEGIN" in item:
        data = item.encode()
    elif isinstance(item, (str, os.PathLike)):
        source = f"{name} ({os.fspath(item)})"
        try:
            with open(item, "rb") as f:
                data = f.read(MAX_SIGNATURE_BYTES)
        except OSError as e:
            raise ArtifactError(f"cannot read {source}: {e}") from None
    if not isinstance(data, (bytes, bytearray)):
        raise ArtifactError(f"{name} is a {type(item).__name__}; give PEM text, a path or 32 raw bytes")
    return bytes(data), source


def _public_key(item, name: str, ed25519, serialization):
    if isinstance(item, ed25519.Ed25519PublicKey):
        return item
    data, source = key_bytes(item, name)
    try:
        if len(data) == 32 and b"-----BEGIN" not in data:
            return ed25519.Ed25519PublicKey.from_public_bytes(data)
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise ArtifactError(f"{source} is not a PEM public key or 32 raw bytes ({e})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ArtifactError(f"{source} is a {type(key).__name__}, not an Ed25519 public key (make one with "
                            "`edgeopt keygen`)")
    return key


def encode(signatures: list[dict]) -> bytes:
    """``signature.json``'s bytes for ``signatures`` (entries as in the module docstring)."""
    import json

    doc = {"format": SIG_FORMAT, "format_version": SIG_VERSION, "signatures": signatures}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def entry(key_id_: str, signature: bytes) -> dict:
    """One entry of ``signatures``."""
    return {"algorithm": ALGORITHM, "key_id": key_id_, "signature": base64.b64encode(signature).decode()}


def decode(data: bytes, what: str) -> list[tuple[str, bytes]]:
    """[(key_id, 64-byte signature)] from ``signature.json``'s bytes; ``ArtifactError`` when it is malformed."""
    def bad(why: str):
        return ArtifactError(f"{what}: signature.json is damaged ({why})")

    try:
        doc = strict_json.loads(data)
    except ValueError as e:
        raise bad(str(e)) from None
    if not isinstance(doc, dict) or doc.get("format") != SIG_FORMAT:
        raise bad(f"not an {SIG_FORMAT} document")
    if type(doc.get("format_version")) is not int or doc["format_version"] != SIG_VERSION:
        raise bad(f"format version {str(doc.get('format_version'))[:20]}; this runtime reads {SIG_VERSION}")
    sigs = doc.get("signatures")
    if not isinstance(sigs, list) or not 0 < len(sigs) <= MAX_SIGNATURES:
        raise bad(f"'signatures' must be a list of 1 to {MAX_SIGNATURES} entries")
    out = []
    for s in sigs:
        if not isinstance(s, dict) or s.get("algorithm") != ALGORITHM:
            raise bad(f"an entry is not an {ALGORITHM} signature")
        kid, sig = s.get("key_id"), s.get("signature")
        if not isinstance(kid, str) or not isinstance(sig, str):
            raise bad("an entry's key_id or signature is not a string")
        try:
            raw = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            raise bad(f"the signature of {kid[:80]} is not base64") from None
        if len(raw) != 64:
            raise bad(f"the signature of {kid[:80]} is {len(raw)} bytes, not 64")
        out.append((kid, raw))
    return out


def verify(manifest_bytes: bytes, signature_bytes: bytes | None, keys: dict, what: str) -> str:
    """The key_id of a trusted key whose signature over ``manifest_bytes`` verifies; ``ArtifactError`` otherwise."""
    if signature_bytes is None:
        raise ArtifactError(f"{what} is not signed, and trusted_keys requires a signature by one of "
                            f"{_ids(keys)}: sign it with `edgeopt sign` (or edgeopt.sign)")
    sigs = decode(signature_bytes, what)
    mine = [(kid, sig) for kid, sig in sigs if kid in keys]
    if not mine:
        raise ArtifactError(f"{what} is signed by {_ids(dict(sigs))}, none of which is a trusted key "
                            f"({_ids(keys)})")
    from cryptography.exceptions import InvalidSignature

    for kid, sig in mine:
        try:
            keys[kid].verify(sig, message(manifest_bytes))
            return kid
        except InvalidSignature:
            continue
    raise ArtifactError(f"{what}: its signature by trusted key {_ids(dict(mine))} does not match its manifest: the "
                        "manifest was changed after signing, or the signature is damaged")


def _ids(keys: dict) -> str:
    return ", ".join(k[:24] + "..." if len(k) > 24 else k for k in keys)
