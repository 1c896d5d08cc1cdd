"""Frontend conversions that are not covered by the model zoo."""

from __future__ import annotations

import numpy as np
import torch

import edgeopt


def test_conv1d_reshapes_its_weight_into_a_view():
    """Conv1d is a conv2d over height 1; its weight reaches the kernel through a reshape (a view of a constant)."""
    m = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv1d(4, 2, 1)).eval()
    x = torch.randn(1, 3, 10)
    compiled = edgeopt.compile(m, (x,))
    with torch.no_grad():
        ref = m(x).numpy()
    np.testing.assert_allclose(compiled(x), ref, rtol=1e-5, atol=1e-5)
