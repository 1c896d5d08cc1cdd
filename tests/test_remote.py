"""edgeopt.remote against a TVM RPC server started on loopback: upload, run, time and fetch outputs; errors for an
unreachable server, wrong inputs, a tampered artifact and a library the board cannot load."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt import remote
from edgeopt.errors import ArtifactError, InputError

pytestmark = pytest.mark.slow  # starts an RPC server process (about 5 s)


@pytest.fixture(scope="module")
def server():
    from tvm import rpc

    srv = rpc.Server(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    yield srv
    srv.terminate()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.Flatten(),
                              torch.nn.Linear(32 * 8 * 8, 10)).eval()
    x = torch.randn(1, 3, 8, 8)
    c = edgeopt.compile(net, [x])
    path = tmp_path_factory.mktemp("remote") / "net.edgeopt"
    c.save(path)
    with torch.no_grad():
        ref = net(x).numpy()
    return str(path), x.numpy(), ref, c


def test_runs_and_times_on_the_board(server, compiled):
    path, x, ref, c = compiled
    r = remote.run(path, [x], "127.0.0.1", server.port, number=3, repeat=3)
    assert len(r.outputs) == 1 and r.outputs[0].shape == ref.shape
    np.testing.assert_allclose(r.outputs[0], ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(r.outputs[0], c(x))  # the same kernels as a local run
    assert [k["kernel"] for k in sorted(r.kernels, key=lambda k: k["step"])] == \
        [s["kernel"] for s in c.plan["steps"]]
    assert r.latency_ms > 0 and all(k["median_ms"] > 0 for k in r.kernels)
    assert r.latency_ms == pytest.approx(sum(k["median_ms"] for k in r.kernels))
    assert r.kernels[0]["median_ms"] == max(k["median_ms"] for k in r.kernels)  # slowest first
    assert "conv2d_winograd" in c.ir  # the Winograd kernel runs remotely too


def test_bench_command_times_on_the_board(server, compiled, tmp_path, capsys):
    from edgeopt.cli import main

    path, x, ref, c = compiled
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "b.json"
    assert main(["bench", path, "--input", str(tmp_path / "x.npy"), "--remote", f"127.0.0.1:{server.port}",
                 "--repeat", "10", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    import json

    b = json.loads(out.read_text())
    assert b["where"] == f"127.0.0.1:{server.port}" and b["median_ms"] > 0
    assert len(b["kernels"]) == len(c.plan["steps"]) and "on the board's clock" in text


class ReshapeBetweenLinears(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 12), torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)).reshape(6, 4))


@pytest.fixture(scope="module")
def tracked_server():
    """A tracker on loopback and a board's server registered with it under a key (tornado runs the tracker)."""
    import time

    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    tracker = Tracker(host="127.0.0.1", port=9300, port_end=9400, silent=True)
    srv = rpc.Server(host="127.0.0.1", port=9190, port_end=9290, silent=True, tracker_addr=("127.0.0.1", tracker.port),
                     key="edgeopt-test")
    try:
        for _ in range(60):  # the server registers asynchronously
            queue = rpc.connect_tracker("127.0.0.1", tracker.port).summary()["queue_info"]
            if queue.get("edgeopt-test", {}).get("free"):
                break
            time.sleep(0.25)
        else:
            pytest.fail(f"the RPC server did not register with the tracker: {queue}")
        yield tracker
    finally:
        srv.terminate()
        tracker.terminate()


def test_runs_through_a_tracker(tracked_server, compiled):
    path, x, ref, c = compiled
    r = remote.run(path, [x], tracker=("127.0.0.1", tracked_server.port), key="edgeopt-test", number=1, repeat=1)
    np.testing.assert_array_equal(r.outputs[0], c(x))
    assert r.latency_ms > 0


def test_views_alias_their_source_on_the_board(server, tmp_path):
    """The reshape is a view (no kernel): the board's result is right only if the view aliases its source there."""
    torch.manual_seed(0)
    net, x = ReshapeBetweenLinears().eval(), torch.randn(2, 8)
    c = edgeopt.compile(net, [x])
    assert [v["kind"] for v in c.plan["values"].values()].count("view") == 1
    c.save(tmp_path / "m.edgeopt")
    got = remote.run(str(tmp_path / "m.edgeopt"), [x.numpy()], "127.0.0.1", server.port, number=1, repeat=1)
    with torch.no_grad():
        np.testing.assert_allclose(got.outputs[0], net(x).numpy(), rtol=1e-5, atol=1e-6)


def test_unreachable_server_names_the_address_and_how_to_start_one(compiled):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(remote.RemoteError, match=rf"127\.0\.0\.1:{port}.*tvm\.exec\.rpc_server"):
        remote.run(compiled[0], [compiled[1]], "127.0.0.1", port)


def test_wrong_inputs_are_refused_before_connecting(compiled):
    path, x, _, _ = compiled
    with pytest.raises(InputError, match=r"expected float32\[1, 3, 8, 8\], got float64"):
        remote.run(path, [x.astype(np.float64)], "127.0.0.1", 1)
    with pytest.raises(InputError, match="takes 1 input"):
        remote.run(path, [x, x], "127.0.0.1", 1)


def test_tampered_artifact_is_refused(tmp_path, compiled):
    import zipfile

    src = compiled[0]
    bad = tmp_path / "bad.edgeopt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, data[:-1] + bytes([data[-1] ^ 1]) if item.filename == "plan.json" else data)
    with pytest.raises(ArtifactError, match="sha256"):
        remote.run(str(bad), [compiled[1]], "127.0.0.1", 1)


@pytest.mark.arm
def test_a_library_the_board_cannot_load_is_a_remote_error(server, tmp_path):
    """An aarch64 artifact sent to this x86-64 'board': the load fails on the server, reported with the target."""
    net = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    path = tmp_path / "arm.edgeopt"
    edgeopt.compile(net, [torch.randn(2, 8)], target="arm").save(path)
    with pytest.raises(remote.RemoteError, match="could not load the kernel library built for arm"):
        remote.run(str(path), [np.zeros((2, 8), np.float32)], "127.0.0.1", server.port)


def test_a_key_without_a_tracker_is_refused(compiled):
    with pytest.raises(remote.RemoteError, match="give tracker="):
        remote.run(compiled[0], [compiled[1]], "127.0.0.1", 1, key="rk3588")
