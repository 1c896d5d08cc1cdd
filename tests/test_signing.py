"""Ed25519-signed artifacts and pinned hashes: ``edgeopt.keygen``/``sign``, ``edgeopt.load(trusted_keys=, sha256=)``
and the CLI. Every refusal happens before any kernel library is loaded."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.cli import main
from edgeopt.errors import ArtifactError
from edgeopt.runtime import signing, tvm_cpu
from edgeopt.runtime.model import read_cpu_artifact
from tests.zip_craft import Entry, artifact, build, manifest_of, members_of, rehash

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(unsigned artifact bytes, outputs on X, key directory with keys a and b)."""
    d = tmp_path_factory.mktemp("signing")
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    compiled = edgeopt.compile(net, [torch.from_numpy(X)])
    compiled.save(d / "m.edgeopt")
    for name in ("a", "b"):
        edgeopt.keygen(d / f"{name}.pem")
    return (d / "m.edgeopt").read_bytes(), compiled(X), d


@pytest.fixture
def signed(built, tmp_path):
    """A copy of the artifact signed with key a: (path, key dir)."""
    blob, _, keys = built
    path = tmp_path / "m.edgeopt"
    path.write_bytes(blob)
    edgeopt.sign(path, keys / "a.pem")
    return path, keys


@pytest.fixture
def no_library(monkeypatch):
    """Fail the test if a kernel library is loaded."""
    monkeypatch.setattr(tvm_cpu, "load_library", lambda *a, **k: pytest.fail("a library was loaded"))


def test_keygen_writes_a_pem_pair_and_never_overwrites(tmp_path):
    kid = edgeopt.keygen(tmp_path / "k.pem")
    private, public = (tmp_path / "k.pem").read_bytes(), (tmp_path / "k.pub.pem").read_bytes()
    assert private.startswith(b"-----BEGIN PRIVATE KEY-----") and public.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert os.stat(tmp_path / "k.pem").st_mode & 0o777 == 0o600
    assert kid == next(iter(signing.public_keys(public))) and kid.startswith("ed25519:") and len(kid) == 8 + 64
    with pytest.raises(ArtifactError, match="exists: keygen does not overwrite"):
        edgeopt.keygen(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").read_bytes() == private
    assert edgeopt.keygen(tmp_path / "k.pem", overwrite=True) != kid


def test_signing_adds_only_the_signature(built, signed):
    blob, _, keys = built
    path, _ = signed
    before, after = members_of(blob), members_of(path.read_bytes())
    assert set(after) == set(before) | {"signature.json"}
    assert all(after[n] == before[n] for n in before)  # the manifest's bytes included: they are what is signed
    doc = json.loads(after["signature.json"])
    kid_a = next(iter(signing.public_keys(keys / "a.pub.pem")))
    assert doc["format"] == "edgeopt-signature" and [s["key_id"] for s in doc["signatures"]] == [kid_a]
    assert len(base64.b64decode(doc["signatures"][0]["signature"])) == 64


def test_a_signed_artifact_loads_with_its_key_and_without_keys(built, signed):
    _, want, _ = built
    path, keys = signed
    np.testing.assert_array_equal(edgeopt.load(str(path), trusted_keys=[keys / "a.pub.pem"])(X), want)
    np.testing.assert_array_equal(edgeopt.load(str(path))(X), want)  # the signature is optional to a loader
    np.testing.assert_array_equal(edgeopt.load(str(path), trusted_keys=[keys / "b.pub.pem", keys / "a.pub.pem"])(X),
                                  want)


def test_trusted_keys_take_pem_paths_and_raw_bytes(signed):
    from cryptography.hazmat.primitives import serialization

    path, keys = signed
    pem = (keys / "a.pub.pem").read_bytes()
    key = serialization.load_pem_public_key(pem)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for form in (pem, pem.decode(), str(keys / "a.pub.pem"), keys / "a.pub.pem", raw, key, [raw]):
        edgeopt.load(str(path), trusted_keys=form)
    for bad, why in ((b"x" * 31, "not a PEM public key"), (keys / "a.pem", "not a PEM public key"),
                     ([], "trusted_keys is empty"), ([42], "is a int"), (keys / "nope.pem", "cannot read"),
                     (7, "must be a list")):
        with pytest.raises(ArtifactError, match=why):
            edgeopt.load(str(path), trusted_keys=bad)


def _with(path, change, keys) -> bytes:
    """The signed artifact's members after ``change(members, key dir)``; zip rebuilt, nothing rehashed."""
    members = members_of(path.read_bytes())
    change(members, keys)
    return build([Entry(n, d) for n, d in members.items()])


def _flip_weight(members, keys=None):
    w = bytearray(members["weights.safetensors"])
    w[-1] ^= 1
    members["weights.safetensors"] = bytes(w)


def _flip_weight_and_rehash(members, keys):
    _flip_weight(members)
    members["manifest.json"] = json.dumps(rehash(manifest_of(members), members)).encode()


def _edit_report(members, keys):
    m = manifest_of(members)
    m["report"]["num_kernels"] = 1000
    members["manifest.json"] = json.dumps(m).encode()


def _same_key_other_bytes(members, keys):
    from edgeopt.signer import private_key

    kid = json.loads(members["signature.json"])["signatures"][0]["key_id"]
    members["signature.json"] = signing.encode([signing.entry(kid, private_key(keys / "a.pem").sign(b"other"))])


def _bad_base64(members, keys):
    doc = json.loads(members["signature.json"])
    doc["signatures"][0]["signature"] = "not base64!"
    members["signature.json"] = json.dumps(doc).encode()


REFUSALS = [
    ("unsigned", lambda m, k: m.pop("signature.json"), "is not signed, and trusted_keys requires a signature"),
    ("member changed", _flip_weight, "sha256 of member 'weights.safetensors' does not match"),
    ("member changed, manifest rehashed", _flip_weight_and_rehash, "does not match its manifest"),
    ("manifest changed", _edit_report, "does not match its manifest: the manifest was changed after signing"),
    ("signature over other bytes", _same_key_other_bytes, "does not match its manifest"),
    ("signature not base64", _bad_base64, "signature.json is damaged (the signature of ed25519:"),
    ("signature not JSON", lambda m, k: m.update({"signature.json": b"{"}), "signature.json is damaged"),
    ("signature empty list", lambda m, k: m.update({"signature.json": signing.encode([])}), "1 to 64 entries"),
    ("signature other algorithm", lambda m, k: m.update({"signature.json": json.dumps(
        {"format": "edgeopt-signature", "format_version": 1, "signatures": [{"algorithm": "rsa"}]}).encode()}),
     "an entry is not an ed25519 signature"),
]


@pytest.mark.parametrize("change, message", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refused_before_any_library_is_loaded(signed, no_library, tmp_path, change, message):
    path, keys = signed
    bad = tmp_path / "bad.edgeopt"
    bad.write_bytes(_with(path, change, keys))
    with pytest.raises(ArtifactError, match=message.replace("(", r"\(")):
        edgeopt.load(str(bad), trusted_keys=[keys / "a.pub.pem"])


def test_a_key_not_trusted_is_refused(signed, no_library):
    path, keys = signed
    with pytest.raises(ArtifactError, match="is signed by ed25519:.*none of which is a trusted key"):
        edgeopt.load(str(path), trusted_keys=[keys / "b.pub.pem"])
    with pytest.raises(ArtifactError, match="none of which is a trusted key"):
        read_cpu_artifact(str(path), "artifact", "the C++ runner", trusted_keys=[keys / "b.pub.pem"])


def test_the_library_patch_point_is_the_one_loading_uses(signed, monkeypatch):
    """The ``no_library`` guard above is live: a verified load does reach ``tvm_cpu.load_library``."""
    path, keys = signed

    def reached(*a, **k):
        raise RuntimeError("reached load_library")

    monkeypatch.setattr(tvm_cpu, "load_library", reached)
    with pytest.raises(RuntimeError, match="reached load_library"):
        edgeopt.load(str(path), trusted_keys=[keys / "a.pub.pem"])


def test_signing_again_replaces_its_own_entry_and_keeps_others(signed):
    path, keys = signed
    edgeopt.sign(path, keys / "b.pem")
    edgeopt.sign(path, keys / "a.pem")
    sigs = json.loads(members_of(path.read_bytes())["signature.json"])["signatures"]
    assert sorted(s["key_id"] for s in sigs) == sorted(signing.public_keys([keys / "a.pub.pem", keys / "b.pub.pem"]))
    for k in ("a", "b"):
        edgeopt.load(str(path), trusted_keys=[keys / f"{k}.pub.pem"])


def test_a_damaged_artifact_is_never_signed(built, tmp_path):
    blob, _, keys = built
    bad = tmp_path / "bad.edgeopt"
    members = members_of(blob)
    _flip_weight(members)
    bad.write_bytes(build([Entry(n, d) for n, d in members.items()]))
    with pytest.raises(ArtifactError, match="sha256 of member 'weights.safetensors'"):
        edgeopt.sign(bad, keys / "a.pem")
    assert "signature.json" not in members_of(bad.read_bytes())
    with pytest.raises(ArtifactError, match="not a PEM private key"):
        edgeopt.sign(tmp_path / "bad.edgeopt", keys / "a.pub.pem")


def test_sha256_pins_the_whole_file_before_it_is_parsed(built, tmp_path, monkeypatch):
    blob, want, _ = built
    path = tmp_path / "m.edgeopt"
    path.write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    np.testing.assert_array_equal(edgeopt.load(str(path), sha256=digest.upper())(X), want)
    from edgeopt.runtime import zip_members

    monkeypatch.setattr(zip_members, "open_zip", lambda *a: pytest.fail("the zip was parsed"))
    path.write_bytes(blob + b"\0")  # a byte that changes nothing the zip reader checks
    with pytest.raises(ArtifactError, match=f"has sha256 [0-9a-f]{{64}}, not the pinned {digest}"):
        edgeopt.load(str(path), sha256=digest)
    with pytest.raises(ArtifactError, match="64 hex digits"):
        edgeopt.load(str(path), sha256="abc")


def test_the_runtime_needs_cryptography_only_for_keys(signed, monkeypatch):
    path, keys = signed
    r = subprocess.run([sys.executable, "-c", "import sys, edgeopt; edgeopt.load(sys.argv[1]); "
                        "assert 'cryptography' not in sys.modules, 'imported'", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for mod in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "cryptography", None)  # as if not installed
    with pytest.raises(ArtifactError, match=r"pip install cryptography"):
        edgeopt.load(str(path), trusted_keys=[keys / "a.pub.pem"])


def test_cli_keygen_sign_verify(built, tmp_path, capsys):
    blob, _, _ = built
    path = tmp_path / "m.edgeopt"
    path.write_bytes(blob)
    assert main(["keygen", str(tmp_path / "k.pem")]) == 0
    assert "key id:      ed25519:" in capsys.readouterr().out
    assert main(["verify", str(path)]) == 0
    assert "intact" in capsys.readouterr().out
    assert main(["verify", str(path), "--key", str(tmp_path / "k.pub.pem")]) == 1
    assert "edgeopt: " in capsys.readouterr().err
    assert main(["sign", str(path), "--key", str(tmp_path / "k.pem"), "-o", str(tmp_path / "s.edgeopt")]) == 0
    assert "signed" in capsys.readouterr().out and path.read_bytes() == blob
    assert main(["verify", str(tmp_path / "s.edgeopt"), "--key", str(tmp_path / "k.pub.pem")]) == 0
    assert "signature verified" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "s.edgeopt")]) == 0
    assert "(not verified: give --key)" in capsys.readouterr().out
    assert main(["verify", str(path), "--sha256", hashlib.sha256(blob).hexdigest()]) == 0
    assert "sha256 verified" in capsys.readouterr().out
    with zipfile.ZipFile(tmp_path / "s.edgeopt") as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["ir.txt"] += b"!"
    (tmp_path / "t.edgeopt").write_bytes(artifact(members))
    assert main(["verify", str(tmp_path / "t.edgeopt"), "--key", str(tmp_path / "k.pub.pem")]) == 1
    assert "does not match its manifest" in capsys.readouterr().err
