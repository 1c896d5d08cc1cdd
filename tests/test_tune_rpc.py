"""Tuning at scale: MetaSchedule's RPC runner times candidates on the boards registered with a TVM RPC tracker,
several at once. Here: a tracker and two RPC servers on loopback (each a 'board'), registered under one key."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import edgeopt
from edgeopt.tuning_db import TuningDB
from tests.conftest import rel_err

pytestmark = pytest.mark.slow  # starts a tracker and two servers, then a real (short) search

KEY = "edgeopt-tune-test"


@pytest.fixture(scope="module")
def two_boards():
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    tracker = Tracker(host="127.0.0.1", port=9500, port_end=9600, silent=True)
    servers = [rpc.Server(host="127.0.0.1", port=9600 + 50 * i, port_end=9650 + 50 * i, silent=True,
                          tracker_addr=("127.0.0.1", tracker.port), key=KEY) for i in range(2)]
    try:
        for _ in range(120):  # servers register asynchronously
            queue = rpc.connect_tracker("127.0.0.1", tracker.port).summary()["queue_info"]
            if queue.get(KEY, {}).get("free") == 2:
                break
            time.sleep(0.25)
        else:
            pytest.fail(f"the two RPC servers did not register with the tracker: {queue}")
        yield tracker
    finally:
        for s in servers:
            s.terminate()
        tracker.terminate()


def test_candidates_are_timed_on_two_boards_at_once(two_boards, tmp_path):
    from tvm import rpc

    busy = {"both": False, "polls": 0}
    stop = threading.Event()

    def watch():  # the tracker's view: how many of the key's boards are free while tuning runs
        client = rpc.connect_tracker("127.0.0.1", two_boards.port)
        while not stop.is_set():
            free = client.summary()["queue_info"].get(KEY, {}).get("free", 2)
            busy["polls"] += 1
            busy["both"] |= free == 0
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    torch.manual_seed(0)
    model, x = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU()).eval(), torch.randn(8, 64)
    path = tmp_path / "tuning.json"
    remote = edgeopt.RemoteTuning(tracker=("127.0.0.1", two_boards.port), key=KEY, workers=2)
    try:
        (r,) = edgeopt.tune(model, (x,), tuning_db=path, trials=8, cost_model="random", strategy="replay-trace",
                            min_speedup=0, progress=False, seed=0, rpc=remote)
    finally:
        stop.set()
        watcher.join(5)
    assert r["status"] == "tuned" and r["trials"] >= 2 and r["hand_ms"] > 0 and r["tuned_ms"] > 0, r
    assert busy["polls"] > 10 and busy["both"], "the tracker never saw both boards busy at once"
    (rec,) = next(iter(TuningDB.load(path).targets.values())).values()
    assert rec["trials"] == r["trials"]
    c = edgeopt.compile(model, (x,), tuning_db=path)
    assert c.report["tuned_kernels"] == 1
    with torch.no_grad():
        assert rel_err(model(x).numpy(), c(x)) < 1e-5


def test_remote_tuning_is_a_typed_setting():
    with pytest.raises(edgeopt.TuningError, match="RemoteTuning"):
        edgeopt.tune(torch.nn.ReLU(), (torch.randn(2),), rpc={"tracker": ("h", 1)}, trials=1, cost_model="random")
