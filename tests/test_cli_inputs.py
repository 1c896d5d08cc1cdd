"""How the command line matches array files to a model's inputs: by name where every input has an array of its name
(a tokenizer's output saved with ``np.savez(f, **batch)``, its extra arrays left out), else in order, with a clear
error for a count that does not fit or an order that names contradict; ``edgeopt compare --data`` splits a stack
into batches of the traced size, as ``--calibration`` does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeopt.cli import main
from edgeopt.commands.sources import SourceError, input_names, match_inputs, required_inputs

IDS, MASK, TYPES = (np.full((1, 4), v, np.int64) for v in (1, 2, 3))


def test_arrays_named_as_every_input_are_matched_by_name_and_the_rest_left_out():
    got = match_inputs([("token_type_ids", TYPES), ("attention_mask", MASK), ("input_ids", IDS)],
                       ["input_ids", "attention_mask"], "x.npz")
    assert [a[0, 0] for a in got] == [1, 2]


def test_arrays_not_named_as_the_inputs_are_taken_in_order():
    assert [a[0, 0] for a in match_inputs([("arr_0", MASK), ("arr_1", IDS)], ["ids", "mask"], "x.npz")] == [2, 1]
    assert [a[0, 0] for a in match_inputs([("b", MASK), ("a", IDS)], None, "x.npz")] == [2, 1]


def test_an_order_that_the_names_contradict_is_refused():
    with pytest.raises(SourceError, match=r"'mask' is input 1"):
        match_inputs([("mask", MASK), ("other", IDS)], ["ids", "mask"], "x.npz")


def test_a_count_that_does_not_fit_names_the_inputs():
    with pytest.raises(SourceError, match=r"3 array\(s\) \(a, b, c\) for the model's 2 input\(s\) \(ids, mask\)"):
        match_inputs([("a", IDS), ("b", MASK), ("c", TYPES)], ["ids", "mask"], "x.npz")
    with pytest.raises(SourceError, match=r"1 array\(s\) \(a\) for the model's 2 to 3 input\(s\)"):
        match_inputs([("a", IDS)], ["ids", "mask", "types"], "x.npz", required=2)


class _Encoder(torch.nn.Module):
    def forward(self, input_ids, attention_mask, token_type_ids=None):
        out = input_ids * 10 + attention_mask
        return out if token_type_ids is None else out + 100 * token_type_ids


def test_a_forwards_optional_inputs_may_be_left_off_the_end():
    names, need = input_names(_Encoder()), required_inputs(_Encoder())
    assert names == ["input_ids", "attention_mask", "token_type_ids"] and need == 2
    got = match_inputs([("attention_mask", MASK), ("input_ids", IDS), ("labels", TYPES)], names, "x", need)
    assert [a[0, 0] for a in got] == [1, 2]  # labels: not an input, left out
    assert len(match_inputs([("a", IDS), ("b", MASK)], names, "x", need)) == 2  # in order, the default kept
    with pytest.raises(SourceError, match="for the model's 2 to 3 input"):
        match_inputs([("input_ids", IDS)], names, "x", need)


def test_an_exported_programs_names_are_its_user_inputs():
    ep = torch.export.export(_Encoder(), (torch.ones(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long)))
    assert input_names(ep) == ["input_ids", "attention_mask"]


def test_an_onnx_files_names_leave_out_its_weights(tmp_path):
    from onnx import TensorProto, helper, numpy_helper, save

    x = helper.make_tensor_value_info("pixel:values", TensorProto.FLOAT, [1, 3])
    w = numpy_helper.from_array(np.ones(3, np.float32), "w")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Mul", ["pixel:values", "w"], ["y"])], "g",
                              [x, helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])], [y], initializer=[w])
    save(helper.make_model(graph), tmp_path / "m.onnx")
    assert input_names(str(tmp_path / "m.onnx")) == ["pixel_values"]  # as the graph names it


ENCODER = """import torch
class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.proj = torch.nn.Linear(8, 8)
    def forward(self, input_ids, attention_mask):
        h = self.proj(self.emb(input_ids)) * attention_mask.unsqueeze(-1).float()
        return h.sum(1) / attention_mask.sum(1, keepdim=True).float()
def make():
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 6))
    return Encoder().eval(), (ids, torch.ones(2, 6, dtype=torch.long))
"""


def test_tokenizer_style_files_run_compile_and_compare_by_name(tmp_path, capsys):
    """A tokenizer's output saved by name, keys in its own order and with an input the model does not take, is read
    right by ``run``, ``compile --calibration`` and ``compare --data``; ``compare`` splits 6 samples into 3 batches
    of the traced 2."""
    (tmp_path / "enc.py").write_text(ENCODER)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, (6, 6)).astype(np.int64)
    mask = (rng.random((6, 6)) < 0.8).astype(np.int64)
    mask[:, 0] = 1
    np.savez(tmp_path / "tok.npz", token_type_ids=np.zeros_like(ids), attention_mask=mask, input_ids=ids)
    np.savez(tmp_path / "one.npz", token_type_ids=np.zeros_like(ids[:2]), attention_mask=mask[:2], input_ids=ids[:2])
    art, model = str(tmp_path / "m.edgeopt"), f"{tmp_path / 'enc.py'}:make"

    assert main(["compile", model, "-o", art, "--quantize", "int8", "--calibration", str(tmp_path / "tok.npz"),
                 "--report", str(tmp_path / "r.json"), "--no-cache"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["pass_stats"]["quantize_static"]["calibration_batches"] == 3

    assert main(["run", art, "--input", str(tmp_path / "one.npz"), "-o", str(tmp_path / "out")]) == 0
    import importlib.util

    spec = importlib.util.spec_from_file_location("enc_model", tmp_path / "enc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with torch.no_grad():
        ref = mod.make()[0](torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2])).numpy()
    got = np.load(tmp_path / "out" / "output_0.npy")
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()  # int8; a swapped mask and ids would be far off

    capsys.readouterr()
    assert main(["compare", art, model, "--data", str(tmp_path / "tok.npz"), "--json", str(tmp_path / "c.json")]) == 0
    assert "on 3 batch(es)" in capsys.readouterr().out
    assert json.loads((tmp_path / "c.json").read_text())["outputs"][0]["cosine"] > 0.99

    np.savez(tmp_path / "bad.npz", attention_mask=mask, ids=ids)  # in order, but the mask first: refused
    assert main(["compare", art, model, "--data", str(tmp_path / "bad.npz")]) == 1
    assert "'attention_mask' is input 1" in capsys.readouterr().err
