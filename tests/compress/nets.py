"""Small nets whose channels couple in every way pruning must handle (shared by the compression tests)."""

from __future__ import annotations

import torch
from torch import nn


class ConcatNet(nn.Module):
    """Two branches concatenated on the channels (Inception / DenseNet), a residual over the concat, a flatten
    into a linear (each channel is H*W features of it)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 6, 1)
        self.b = nn.Sequential(nn.Conv2d(8, 10, 3, padding=1), nn.BatchNorm2d(10), nn.ReLU())
        self.mix = nn.Conv2d(16, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.head = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        c = torch.cat([self.a(s), self.b(s)], dim=1)
        y = torch.relu(self.mix(c)) + c
        y = self.dw(y)
        return self.head(nn.functional.avg_pool2d(y, 2).flatten(1))


class HeadsNet(nn.Module):
    """Multi-head self-attention written out (reshape into heads, transpose, matmul, softmax, merge heads), an
    MLP, residuals and a layer norm: heads and MLP neurons are prunable, the layer-normed width is not."""

    def __init__(self, d: int = 32, heads: int = 4, hidden: int = 64, fixed_heads: bool = False):
        super().__init__()
        #: fixed_heads: reshape by the head count given here (a pruned copy cannot run); else by the head size
        self.h, self.dh, self.fixed = heads, d // heads, fixed_heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.up, self.down = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        b, t, d = x.shape
        split = lambda z: z.reshape(b, t, self.h if self.fixed else -1, self.dh).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / self.dh ** 0.5, dim=-1)
        y = x + self.o((att @ v).transpose(1, 2).reshape(b, t, -1))
        return self.norm(y + self.down(nn.functional.gelu(self.up(y))))


def randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (so folding and slicing bugs change numbers)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


class GroupedNet(nn.Module):
    """A grouped conv (ResNeXt), a depthwise conv with a channel multiplier, and a linear tied to another."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.mult = nn.Conv2d(16, 32, 3, padding=1, groups=16)  # two filters per input channel
        self.pw = nn.Conv2d(32, 32, 1)
        self.a = nn.Linear(32, 32)
        self.b = nn.Linear(32, 32)
        self.b.weight = self.a.weight  # tied
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        y = torch.relu(self.pw(self.mult(torch.relu(self.grouped(torch.relu(self.stem(x)))))))
        y = y.mean((2, 3))
        return self.head(torch.relu(self.a(y)) + torch.relu(self.b(y)))


class MultiQueryNet(nn.Module):
    """Multi-query attention written out: many query heads, one key/value head expanded to them."""

    def __init__(self, d: int = 32, heads: int = 4):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.q, self.o = nn.Linear(d, d), nn.Linear(d, d)
        self.k, self.v = nn.Linear(d, self.dh), nn.Linear(d, self.dh)

    def forward(self, x):
        b, t, d = x.shape
        q = self.q(x).reshape(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k(x).unsqueeze(1).expand(b, self.h, t, self.dh)
        v = self.v(x).unsqueeze(1).expand(b, self.h, t, self.dh)
        att = torch.softmax(q @ k.transpose(-1, -2) / self.dh ** 0.5, dim=-1)
        return x + self.o((att @ v).transpose(1, 2).reshape(b, t, d))
