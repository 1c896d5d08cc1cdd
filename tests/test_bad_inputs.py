"""Inputs a compiled model cannot take are one ``edgeopt.InputError`` naming the input and the dtype it expects:
torch dtypes numpy lacks (bfloat16), sparse or meta tensors, ragged lists, objects, text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.errors import InputError


@pytest.fixture(scope="module")
def compiled():
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    return edgeopt.compile(net, [torch.randn(2, 8)]), net


@pytest.mark.parametrize("make, message", [
    (lambda: torch.randn(2, 8).to(torch.bfloat16), "expected dtype float32, got a torch tensor of torch.bfloat16, "
     r"which numpy cannot hold \(.*\); convert it with .to\(torch.float32\)"),
    (lambda: torch.randn(2, 8).to_sparse(), "got a torch tensor of torch.float32, which numpy cannot hold"),
    (lambda: torch.empty(2, 8, device="meta"), "which numpy cannot hold"),
    (lambda: torch.randn(2, 8, dtype=torch.complex64), "expected dtype float32, got complex64"),
    (lambda: [[1.0] * 8, [1.0] * 7], "expected an array of dtype float32, got a list that is not one"),
    (lambda: object(), "got object"),
    (lambda: None, "got NoneType"),
    (lambda: "abc", "got str 'abc', which is an array of <U3"),
    (lambda: np.full((2, 8), "x"), "which is an array of <U1"),
    (lambda: {"a": 1}, "got dict"),
    (lambda: np.zeros((2, 8), np.float64), "expected dtype float32, got float64"),
])
def test_unconvertible_inputs_are_input_errors(compiled, make, message):
    model, _ = compiled
    with pytest.raises(InputError, match="^input 'input': .*" + message):
        model(make())
    loaded = edgeopt.runtime.Model(model._artifact)  # the runtime's own model: the same check
    with pytest.raises(InputError):
        loaded(make())


def test_convertible_inputs_still_run(compiled):
    model, net = compiled
    x = torch.randn(2, 8, requires_grad=True)
    want = net(x).detach().numpy()
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(np.asarray(x.detach(), np.float32)), want, rtol=1e-5, atol=1e-6)
