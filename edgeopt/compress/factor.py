"""Truncated SVD of weight matrices and the choice of ranks (shared by the ``low_rank`` pass and
``edgeopt.compress.low_rank``)."""

from __future__ import annotations

import numpy as np


def svd(w2d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, s, vt = np.linalg.svd(w2d.astype(np.float64), full_matrices=False)
    return u, s, vt


def whitened_svd(w2d: np.ndarray, gram: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The SVD that minimizes the error on the layer's inputs rather than on its weight: with ``gram`` = X^T X of
    the inputs X seen (rows of features) and L its Cholesky factor, ||X (W - W')^T|| = ||(W - W') L||, so W L is
    factored and L^-1 folded back into the right factor. Returns ``(u, s, vt)`` with ``u diag(s) vt = W``."""
    g = gram.astype(np.float64)
    g = g + np.eye(len(g)) * max(1e-6 * float(np.trace(g)) / len(g), 1e-12)  # damped: unseen directions stay
    chol = np.linalg.cholesky(g)
    u, s, vt = np.linalg.svd(w2d.astype(np.float64) @ chol, full_matrices=False)
    return u, s, np.linalg.solve(chol.T, vt.T).T  # vt L^-1


def factors(u: np.ndarray, s: np.ndarray, vt: np.ndarray, rank: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(a [out, rank], b [rank, in])`` with ``a @ b`` the best rank-``rank`` approximation; the singular values
    are split evenly between them (their norms stay alike, which suits later quantization)."""
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).astype(dtype), (root[:, None] * vt[:rank]).astype(dtype)


def saves(rank: int, rows: int, cols: int) -> bool:
    """Whether two layers of ``rank`` cost fewer multiply-adds (and weights) than one ``rows x cols``."""
    return rank * (rows + cols) < rows * cols


#: ranks are multiples of this (a CPU kernel's vector width: an odd width such as 151 has no vector lanes to fill)
RANK_MULTIPLE = 16


def rank_for_energy(s: np.ndarray, energy: float, multiple: int = RANK_MULTIPLE) -> int:
    """The smallest rank keeping ``energy`` of the squared singular values, rounded up to a ``multiple``."""
    e = np.cumsum(s.astype(np.float64) ** 2)
    r = int(np.searchsorted(e, energy * e[-1] * (1 - 1e-12)) + 1)
    return min(len(s), -(-r // multiple) * multiple)


def ranks_for_budget(layers: dict[str, tuple[np.ndarray, int, int]], budget: float,
                     multiple: int = RANK_MULTIPLE) -> dict[str, int]:
    """Ranks (multiples of ``multiple``) for ``layers`` (name -> (singular values, rows, cols)) whose weights total
    at most ``budget`` of their dense weights. Blocks of ``multiple`` singular values are taken greedily by the
    share of their layer's energy they keep per weight they cost (every layer keeps one block). A layer whose
    rank would not save weights stays dense: rank 0 here, its dense weights charged to the budget."""
    total = budget * sum(r * c for _, r, c in layers.values())
    dense: set[str] = set()
    while True:
        left = total - sum(layers[n][1] * layers[n][2] for n in dense)
        ranks = {n: min(multiple, len(layers[n][0])) for n in layers if n not in dense}
        left -= sum(k * (layers[n][1] + layers[n][2]) for n, k in ranks.items())
        cand = []
        for n in ranks:
            s, r, c = layers[n]
            share = s.astype(np.float64) ** 2 / max(float((s.astype(np.float64) ** 2).sum()), 1e-30)
            for j in range(ranks[n], len(s), multiple):
                k = min(multiple, len(s) - j)
                cand.append((share[j:j + k].sum() / (k * (r + c)), j, n, k, k * (r + c)))
        for _, j, n, k, cost in sorted(cand, key=lambda t: (-t[0], t[1])):
            if j == ranks[n] and cost <= left:  # a layer's blocks in order
                ranks[n] += k
                left -= cost
        more = {n for n, k in ranks.items() if not saves(k, *layers[n][1:])}
        if not more:
            return {n: ranks.get(n, 0) for n in layers}
        dense |= more


def pick_ranks(spectra: dict, shapes: dict, energy: float | None, budget: float | None,
               multiple: int = RANK_MULTIPLE) -> dict:
    """The rank of each layer (key -> singular values, key -> (rows, cols)) by ``energy`` or ``budget``; 0 for a
    layer that stays whole (its rank would not save weights)."""
    if budget is not None:
        ranks = ranks_for_budget({k: (spectra[k], *shapes[k]) for k in spectra}, budget, multiple)
    else:
        ranks = {k: rank_for_energy(s, energy, multiple) for k, s in spectra.items()}
    return {k: r if r and saves(r, *shapes[k]) else 0 for k, r in ranks.items()}
