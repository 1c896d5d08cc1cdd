"""Reading an artifact takes memory bounded by what its manifest declares: zip bombs, lying sizes and hostile
safetensors headers are refused before the memory is taken (peak RSS measured in a fresh process)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.errors import ArtifactError
from edgeopt.runtime import safetensors_io, tvm_cpu, zip_members
from tests.zip_craft import Entry, build, manifest_of, members_of, safetensors, zeros_bomb

MB = 1 << 20

_MEASURE = """
import json, sys, tracemalloc
import edgeopt

def peak():  # this process's peak resident memory, in bytes (getrusage's would include the forking parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current size
    rss = True
except OSError:  # not allowed here: tracemalloc's count (Python and numpy allocations) only
    rss = False
base = peak()
tracemalloc.start()
try:
    edgeopt.load(sys.argv[1])
    message = None
except edgeopt.ArtifactError as e:
    message = str(e)
traced = tracemalloc.get_traced_memory()[1]
after = peak()
tracemalloc.reset_peak()
control = b"\\x01" * (200 << 20)  # 200 MB written: the measures must see it
traced_control = tracemalloc.get_traced_memory()[1]
print(json.dumps({"rss": after - base if rss else None, "traced": traced, "message": message,
                  "rss_control": peak() - after if rss else None, "traced_control": traced_control}))
"""


@pytest.fixture(scope="module")
def blob(tmp_path_factory) -> bytes:
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    path = tmp_path_factory.mktemp("limits") / "m.edgeopt"
    edgeopt.compile(net, [torch.randn(2, 8)]).save(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def bomb():
    return zeros_bomb("ir.txt", 1024)  # 1 GiB of zeros in about 1 MB


def _bomb_artifact(blob: bytes, bomb, manifest_size: str, zip_size: str) -> bytes:
    """The artifact with ir.txt replaced by the bomb; the manifest records the bomb's sha256 and either ir.txt's old
    size ("small") or the bomb's ("honest"), and the zip declares the bomb's size or the small one."""
    entry, digest = bomb
    members = members_of(blob)
    small = len(members["ir.txt"])
    m = manifest_of(members)
    m["members"]["ir.txt"] = {"sha256": digest, "size": small if manifest_size == "small" else entry.size}
    bomb_entry = Entry(entry.name, entry.data, crc=entry.crc, size=small if zip_size == "small" else entry.size,
                       raw=True)
    return build([Entry("manifest.json", json.dumps(m).encode())]
                 + [bomb_entry if n == "ir.txt" else Entry(n, d) for n, d in members.items() if n != "manifest.json"])


@pytest.mark.parametrize("manifest_size, zip_size, message", [
    ("small", "bomb", "member 'ir.txt' has size 1073741824 in the zip but"),
    ("honest", "bomb", "to 1073741824 bytes (more than 200x): refused as a zip bomb"),
    ("small", "small", "member 'ir.txt' is damaged (BadZipFile: Bad CRC-32"),
])
def test_zip_bomb_is_refused_with_bounded_memory(blob, bomb, tmp_path, manifest_size, zip_size, message):
    path = tmp_path / "bomb.edgeopt"
    path.write_bytes(_bomb_artifact(blob, bomb, manifest_size, zip_size))
    assert path.stat().st_size < 2 * MB
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["message"] is not None and message in got["message"], got["message"]
    assert got["traced_control"] > 150 * MB, got  # the measures see a 200 MB allocation...
    assert got["traced"] < 100 * MB, got  # ...and loading the bomb took far less than its 1 GiB
    if got["rss"] is not None:
        assert got["rss_control"] > 150 * MB and got["rss"] < 100 * MB, got


def test_the_bomb_helper_really_expands(bomb):
    """The bomb decodes to 1 GiB of zeros (checked on its first 64 MiB: the stream is one block repeated)."""
    entry, _ = bomb
    d = zlib.decompressobj(-15)
    out = d.decompress(entry.data, 64 * MB)
    assert len(out) == 64 * MB and not any(out[:: 4096]) and entry.size == 1 << 30 and len(entry.data) < 2 * MB


def test_safetensors_header_asking_16_gib_is_refused_before_allocating(blob, monkeypatch):
    members = members_of(blob)
    m = manifest_of(members)
    huge = safetensors({"w": {"dtype": "F32", "shape": [4, 1 << 30], "data_offsets": [0, 1 << 34]}}, bytes(64))
    members["weights.safetensors"] = huge
    m["members"]["weights.safetensors"] = {"sha256": hashlib.sha256(huge).hexdigest(),
                                           "size": len(huge)}
    members["manifest.json"] = json.dumps(m).encode()
    crafted = build([Entry(n, d) for n, d in members.items()])
    allocs = []
    real = tvm_cpu.aligned_empty
    monkeypatch.setattr(tvm_cpu, "aligned_empty", lambda shape, dt: allocs.append(shape) or real(shape, dt))
    edgeopt.runtime.Model(blob)
    assert allocs, "the weight reader allocates through tvm_cpu.aligned_empty (the patch point is live)"
    allocs.clear()
    with pytest.raises(ArtifactError, match=r"float32\[4, 1073741824\] is 17179869184 bytes .* of 64 bytes"):
        edgeopt.runtime.Model(crafted)
    assert allocs == []


class _Recorder(io.BytesIO):
    """A stream that counts the bytes read from it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.taken = 0

    def read(self, n=-1):
        data = super().read(n)
        self.taken += len(data)
        return data


def test_safetensors_sizes_are_checked_before_reading_or_allocating(monkeypatch):
    allocs = []

    def alloc(shape, dt):
        allocs.append(shape)
        return np.empty(shape, dt)

    s = _Recorder((1 << 40).to_bytes(8, "little") + bytes(100))
    with pytest.raises(ValueError, match="header of 1099511627776 bytes does not fit in 108 bytes"):
        safetensors_io.read_into(s, alloc)
    assert s.taken == 8
    big = safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "b": {"dtype": "I64", "shape": [1 << 31], "data_offsets": [8, 8 + (1 << 34)]}}, bytes(8))
    with pytest.raises(ValueError, match="'b' has inconsistent offsets"):
        safetensors_io.read_into(_Recorder(big), alloc)
    assert allocs == []  # not even the small tensor: the whole header is checked first
    many = {f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for i in range(10)}
    monkeypatch.setattr(safetensors_io, "MAX_TENSORS", 5)
    with pytest.raises(ValueError, match="lists 10 tensors"):
        safetensors_io.loads(safetensors(many))
    assert safetensors_io.loads(safetensors_io.dumps({"x": np.arange(3, dtype=np.int8)}))["x"].tolist() == [0, 1, 2]


def test_a_member_is_never_read_past_its_size_plus_one():
    raw = _Recorder(bytes(10 * MB))
    reader = zip_members.HashingReader(raw, 100)
    with pytest.raises(ValueError, match="more than the 100 bytes"):
        reader.drain()
    assert raw.taken == 101
    raw = _Recorder(bytes(10 * MB))
    with pytest.raises(ValueError, match="more than the 100 bytes"):
        zip_members.HashingReader(raw, 100).readinto(bytearray(MB))
    assert raw.tell() == 101


def test_every_size_is_checked_before_any_member_is_decompressed(blob, monkeypatch):
    """A wrong size on the last member is refused having opened the manifest only; an oversized manifest is
    refused without opening it."""
    members = members_of(blob)
    es = [Entry(n, d) for n, d in members.items()]
    es[-1].size = len(es[-1].data) + 1
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(
        getattr(name, "filename", name)) or real_open(self, name, *a, **k))
    with pytest.raises(ArtifactError, match=f"member '{es[-1].name}' has size {es[-1].size} in the zip"):
        edgeopt.runtime.Model(build(es))
    assert opened == ["manifest.json"]
    opened.clear()
    es = [Entry(n, d + b" " * (9 * MB) if n == "manifest.json" else d) for n, d in members.items()]
    with pytest.raises(ArtifactError, match=r"manifest.json is 94\d+ bytes \(at most 8388608\)"):
        edgeopt.runtime.Model(build(es))
    assert opened == []


def test_compression_ratio_guard():
    info = zipfile.ZipInfo("w")
    info.file_size, info.compress_size = 100 * MB, 100 * 1024
    with pytest.raises(ArtifactError, match="refused as a zip bomb"):
        zip_members.check_declared(info, 100 * MB, "artifact")
    info.compress_size = 50 * MB  # weights compress ~1.1x, kernels ~4x
    zip_members.check_declared(info, 100 * MB, "artifact")
    info.file_size, info.compress_size = MB, 1000  # small members may compress any amount
    zip_members.check_declared(info, MB, "artifact")
