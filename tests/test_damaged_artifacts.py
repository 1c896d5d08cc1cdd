"""Every damaged artifact is refused with ``ArtifactError`` (and nothing else) saying what is wrong: the zip, the
manifest's JSON and schema, the members, the weights' safetensors header, the plan's JSON; then random damage."""

from __future__ import annotations

import json
import random
import re
import zlib

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.errors import ArtifactError
from tests.zip_craft import Entry, artifact, build, manifest_of, members_of, rehash, safetensors


@pytest.fixture(scope="module")
def blob(tmp_path_factory) -> bytes:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    path = tmp_path_factory.mktemp("damaged") / "m.edgeopt"
    edgeopt.compile(net, [torch.randn(2, 8)]).save(path)
    return path.read_bytes()


def edit(change):
    """Damage: ``change(manifest)`` (returns nothing); the members unchanged, so their hashes still match."""
    def craft(b):
        members = members_of(b)
        m = manifest_of(members)
        change(m)
        return artifact(members, m, rehashed=False)

    return craft


def manifest_text(text: bytes):
    """Damage: manifest.json replaced by ``text`` (no other change)."""
    def craft(b):
        return build([Entry(n, text if n == "manifest.json" else d) for n, d in members_of(b).items()])

    return craft


def manifest_with(change, old: str, new: str):
    """Damage: the manifest after ``change``, serialized, with ``old`` replaced by ``new`` in its text."""
    def craft(b):
        m = manifest_of(members_of(b))
        change(m)
        return manifest_text(json.dumps(m).replace(old, new, 1).encode())(b)

    return craft


def member(name: str, data):
    """Damage: member ``name`` replaced by ``data`` (bytes, or a function of the old bytes), hashes recomputed."""
    def craft(b):
        members = members_of(b)
        members[name] = data(members[name]) if callable(data) else data
        return artifact(members)

    return craft


def entries(change):
    """Damage: ``change(list of Entry)`` on the zip's entries (the manifest unchanged)."""
    def craft(b):
        es = [Entry(n, d) for n, d in members_of(b).items()]
        change(es)
        return build(es)

    return craft


def set_entry(name: str, **fields):
    def change(es):
        for e in es:
            if e.name == name:
                for k, v in fields.items():
                    setattr(e, k, v)

    return change


def weights_header(change):
    """Damage: the safetensors header of the weights after ``change(header)``, same data, hashes recomputed."""
    def new(old: bytes) -> bytes:
        n = int.from_bytes(old[:8], "little")
        header = json.loads(old[8 : 8 + n])
        change(header)
        return safetensors(header, old[8 + n :])

    return member("weights.safetensors", new)


def _corrupt(es) -> None:
    """kernels.so's deflate data replaced by garbage; its declared size and CRC kept."""
    e = next(e for e in es if e.name == "kernels.so")
    e.crc, e.size, e.data, e.raw = zlib.crc32(e.data), len(e.data), b"\xff" * 64, True


def _first(header) -> dict:
    return next(v for k, v in header.items() if k != "__metadata__")


def _pad_report(m):
    m["report"]["padding"] = "x" * (9 << 20)


DAMAGES = [
    # the file and the zip
    ("truncated", lambda b: b[: len(b) // 2], "not a zip file, or truncated"),
    ("not a zip", lambda b: b"hello", "not a zip file"),
    ("empty file", lambda b: b"", "not a zip file"),
    ("no manifest", entries(lambda es: es.pop(0)), "has no manifest.json"),
    ("too many entries", entries(lambda es: es.extend(Entry(f"x{i}", b"") for i in range(10_010))),
     "zip entries (an artifact has at most"),
    ("duplicate entry", entries(lambda es: es.append(Entry("plan.json", b"{}"))), "two zip entries named 'plan.json'"),
    ("encrypted entry", entries(set_entry("plan.json", flags=1)), "zip entry 'plan.json' is encrypted"),
    ("bzip2 entry", entries(set_entry("plan.json", method=12)), "compression method 12"),
    ("AES entry", entries(set_entry("kernels.so", method=99)), "compression method 99"),
    ("CRC error", entries(set_entry("plan.json", crc=12345)), "member 'plan.json' is damaged (BadZipFile: Bad CRC-32"),
    ("corrupt deflate data", entries(_corrupt), "member 'kernels.so' is damaged (error: Error -3"),
    ("declared size differs", entries(set_entry("ir.txt", size=7)), "has size 7 in the zip but"),
    ("extra member", entries(lambda es: es.append(Entry("evil.pkl", b"x"))), "does not list: ['evil.pkl']"),
    ("missing member", entries(lambda es: es.pop()), "is missing member 'ir.txt'"),
    ("signature.json too large", entries(lambda es: es.append(Entry("signature.json", b" " * (65 << 10)))),
     "signature.json is 66560 bytes (at most 65536)"),
    *[(f"entry named {n!r}", entries(lambda es, n=n: es.append(Entry(n, b"x"))), "holds a zip entry named")
      for n in ("/etc/passwd", "../up.so", "a\\b", "dir/", "a//b", "./x", "ctl\x01", "nul\x7f", "ünï")],
    # the manifest's JSON
    ("manifest not JSON", manifest_text(b"{not json"), "manifest.json is unreadable"),
    ("manifest nesting bomb", manifest_text(b"[" * 100_000 + b"]" * 100_000), "JSON nested too deeply"),
    ("manifest is a list", manifest_text(b"[1, 2]"), "manifest.json is not a JSON object"),
    ("manifest not UTF-8", manifest_text(b'{"format": "\xff"}'), "not UTF-8"),
    ("manifest too large", edit(_pad_report), "manifest.json is 94"),
    ("NaN literal", edit(lambda m: m["report"].update(compile_seconds=float("nan"))), "JSON constant NaN"),
    ("Infinity literal", edit(lambda m: m["report"].update(weight_bytes=float("inf"))), "JSON constant Infinity"),
    ("number overflows", manifest_with(lambda m: m["report"].update(compile_seconds=0.123456789), "0.123456789",
                                       "1e999"),
     "number 1e999 is out of range"),
    ("huge integer", manifest_with(lambda m: m["report"].update(num_kernels=987654321), "987654321", "9" * 5000),
     "integer of 5000 characters"),
    ("duplicate key", manifest_with(lambda m: None, "{", '{"format": "edgeopt-artifact", '),
     "key 'format' appears twice"),
    # the manifest's schema
    ("format", edit(lambda m: m.update(format="zip")), "is not an edgeopt artifact (format 'zip')"),
    ("format_version 99", edit(lambda m: m.update(format_version=99)), "artifact format version 99;"),
    ("format_version str", edit(lambda m: m.update(format_version="1")), "artifact format version '1';"),
    ("format_version bool", edit(lambda m: m.update(format_version=True)), "artifact format version True;"),
    ("tvm_version int", edit(lambda m: m.update(tvm_version=27)), "field manifest.tvm_version has type int"),
    ("no target", edit(lambda m: m.pop("target")), "field manifest.target is missing"),
    ("target str", edit(lambda m: m.update(target="host")), "field manifest.target has type str"),
    ("target.runtime int", edit(lambda m: m["target"].update(runtime=1)), "field target.runtime has type int"),
    ("cpu_features int", edit(lambda m: m["target"].update(cpu_features=[1])), "target.cpu_features holds a int"),
    ("cpu_features str", edit(lambda m: m["target"].update(cpu_features="avx2")), "target.cpu_features has type str"),
    ("mcpu list", edit(lambda m: m["target"].update(mcpu=["znver4"])), "field target.mcpu has type list"),
    ("compute_capability", edit(lambda m: m["target"].update(compute_capability=[8])),
     "target.compute_capability is not [major, minor]"),
    ("levels dict", edit(lambda m: m["target"].update(levels={"a": 1})), "field target.levels has type dict"),
    ("level names no member", edit(lambda m: m["target"].update(levels=[{"plan": "nope.json"}])),
     "target.levels[0].plan names 'nope.json'"),
    ("levels empty", edit(lambda m: m["target"].update(levels=[])), "target.levels is empty"),
    ("level without a name",
     edit(lambda m: m["target"].update(levels=[{"plan": "plan.json", "library": "kernels.so"}])),
     "target.levels[0].level is missing"),
    ("inputs dict", edit(lambda m: m.update(inputs={})), "field manifest.inputs has type dict"),
    ("input shape str", edit(lambda m: m["inputs"][0].update(shape=["2", 8])), "inputs[0].shape is not a list"),
    ("input shape negative", edit(lambda m: m["inputs"][0].update(shape=[-2, 8])), "inputs[0].shape is not a list"),
    ("output dtype", edit(lambda m: m["outputs"][0].update(dtype="c64")), "outputs[0].dtype is not one of"),
    ("members list", edit(lambda m: m.update(members=[])), "field manifest.members has type list"),
    ("member entry str", edit(lambda m: m["members"].update({"plan.json": "abc"})), "members['plan.json'] has type"),
    ("sha256 int", edit(lambda m: m["members"]["ir.txt"].update(sha256=5)), "members['ir.txt'].sha256 has type int"),
    ("sha256 upper case", edit(lambda m: m["members"]["ir.txt"].update(sha256="A" * 64)),
     "sha256 is not 64 lowercase hex digits"),
    ("size str", edit(lambda m: m["members"]["ir.txt"].update(size="1")), "members['ir.txt'].size has type str"),
    ("size negative", edit(lambda m: m["members"]["ir.txt"].update(size=-1)), "members['ir.txt'].size is negative"),
    ("size bool", edit(lambda m: m["members"]["ir.txt"].update(size=True)), "members['ir.txt'].size has type bool"),
    ("no plan listed", edit(lambda m: m["members"].pop("plan.json")), "does not list 'plan.json'"),
    ("member name ..", edit(lambda m: m["members"].update({"../x": m["members"]["ir.txt"]})),
     "is not a valid member name (has a '.' or '..' component)"),
    ("member name reserved", edit(lambda m: m["members"].update({"manifest.json": m["members"]["ir.txt"]})),
     "is not a valid member name (is reserved)"),
    ("report list", edit(lambda m: m.update(report=[])), "field manifest.report has type list"),
    ("report number str", edit(lambda m: m["report"].update(arena_bytes="big")), "report.arena_bytes has type str"),
    # the weights' safetensors header (hashes recomputed: only the reader's own checks stand)
    ("weights empty", member("weights.safetensors", b""), "truncated (no header size)"),
    ("weights header too long", member("weights.safetensors", lambda w: (1 << 40).to_bytes(8, "little") + w[8:]),
     "safetensors header of 1099511627776 bytes does not fit"),
    ("weights header not JSON", member("weights.safetensors", lambda w: safetensors({})[:8] + b"{x" + w[10:]),
     "safetensors header is unreadable"),
    ("weights header a list", member("weights.safetensors", safetensors([])), "header is not a JSON object"),
    ("weights header nesting bomb", member("weights.safetensors", (20_000).to_bytes(8, "little")
                                           + b"[" * 10_000 + b"]" * 10_000), "JSON nested too deeply"),
    ("weights dtype", weights_header(lambda h: _first(h).update(dtype="BF16")), "no dtype this reader knows"),
    ("weights shape", weights_header(lambda h: _first(h).update(shape=[-1, 4])), "shape is not a list of sizes"),
    ("weights offsets", weights_header(lambda h: _first(h).update(data_offsets=[0, "128"])),
     "data_offsets is not [start, end]"),
    ("weights past the data", weights_header(lambda h: _first(h).update(shape=[80, 4], data_offsets=[0, 1280])),
     "has inconsistent offsets"),
    ("weights 16 GiB", weights_header(lambda h: h.update(big={"dtype": "F32", "shape": [4, 1 << 30],
                                                              "data_offsets": [0, 1 << 34]})),
     "float32[4, 1073741824] is 17179869184 bytes"),
    ("weights overlap", weights_header(lambda h: [v.update(data_offsets=[0, 128], shape=[8, 4]) for v in h.values()]),
     "overlap"),
    ("weights truncated", member("weights.safetensors", lambda w: w[:-4]), "has inconsistent offsets"),
    ("weights lack a constant", weights_header(lambda h: h.pop("p_0_bias")), "weight 'p_0_bias' is missing"),
    # the plan's JSON (its schema is the plan validator's)
    ("plan not JSON", member("plan.json", b"{"), "plan or weights unreadable"),
    ("plan nesting bomb", member("plan.json", b"[" * 100_000), "JSON nested too deeply"),
    ("plan NaN", member("plan.json", b'{"steps": NaN}'), "JSON constant NaN"),
]


@pytest.mark.parametrize("craft, message", [d[1:] for d in DAMAGES], ids=[d[0] for d in DAMAGES])
def test_damage_is_an_artifact_error(blob, tmp_path, craft, message):
    path = tmp_path / "bad.edgeopt"
    path.write_bytes(craft(blob))
    with pytest.raises(ArtifactError, match=re.escape(message)):
        edgeopt.load(str(path))


def test_the_crafted_artifacts_are_otherwise_intact(blob, tmp_path):
    """The helpers rebuild a loadable artifact when nothing is changed, so each damage above is the only fault."""
    members = members_of(blob)
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    want = edgeopt.runtime.Model(blob)(x)
    for craft in (lambda b: artifact(members, rehash(manifest_of(members), members)), edit(lambda m: None),
                  member("ir.txt", lambda d: d), entries(lambda es: None), weights_header(lambda h: None)):
        path = tmp_path / "same.edgeopt"
        path.write_bytes(craft(blob))
        np.testing.assert_array_equal(edgeopt.load(str(path))(x), want)


def test_random_damage_is_an_artifact_error(blob, tmp_path):
    """Flipped bytes, truncations and insertions anywhere in the file: an ``ArtifactError`` or, where the byte did
    not matter (a timestamp), a model that loads; never another exception."""
    rng = random.Random(20)
    refused = 0
    path = tmp_path / "fuzz.edgeopt"
    tries = 1000
    for i in range(tries):
        data = bytearray(blob)
        pos = rng.randrange(len(data))
        kind = i % 3
        if kind == 0:
            data[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del data[pos:]
        else:
            data[pos:pos] = rng.randbytes(rng.randrange(1, 9))
        path.write_bytes(bytes(data))
        try:
            edgeopt.load(str(path))
        except ArtifactError:
            refused += 1
    assert refused > tries * 0.8, refused


def test_random_manifest_damage_is_an_artifact_error(blob, tmp_path):
    """Characters of manifest.json changed, deleted or inserted (the zip itself intact): an ``ArtifactError`` or,
    where the change kept a valid manifest (a report figure), a model that loads; never another exception."""
    rng = random.Random(6)
    members = members_of(blob)
    text = members["manifest.json"].decode()
    refused, tries = 0, 300
    for i in range(tries):
        pos = rng.randrange(len(text))
        junk = rng.choice('{}[]",:0123456789.-eEtrufalsn \\x')
        bad = text[:pos] + (junk if i % 3 else "") + text[pos + (i % 3 != 2) :]
        try:
            edgeopt.runtime.Model(artifact({**members, "manifest.json": bad.encode()}, rehashed=False))
        except ArtifactError:
            refused += 1
    assert tries * 0.3 < refused < tries, refused  # many edits break it; some (whitespace) leave it loadable


def test_signature_is_the_only_unlisted_member(blob):
    """A stray member is refused, but not ``signature.json`` (never read without keys): a signed artifact loads
    without keys."""
    members = members_of(blob)
    edgeopt.runtime.Model(artifact({**members, "signature.json": b"not even JSON"}))
    with pytest.raises(ArtifactError, match="does not list"):
        edgeopt.runtime.Model(artifact({**members, "signature.jsn": b"{}"}))
