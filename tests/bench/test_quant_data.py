"""bench/quant_data.py: the real int8 calibration / evaluation data and the fidelity metrics (no torch, ~5 s)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from bench import quant_data as qd  # noqa: E402


def test_photo_crops_are_distinct_rgb_squares_and_prefix_stable():
    crops = qd.photo_crops(230)
    assert len(crops) == 230
    assert all(c.size == (224, 224) and c.mode == "RGB" for c in crops)
    assert len({c.tobytes() for c in crops}) == 230
    arrays = np.stack([np.asarray(c, np.float32) for c in crops[:40]])
    assert arrays.std(axis=(1, 2, 3)).min() > 10  # real photo content, not blank crops
    assert [c.tobytes() for c in qd.photo_crops(12)] == [c.tobytes() for c in crops[:12]]
    assert qd.photo_crops(12, seed=1)[11].tobytes() != crops[11].tobytes()
    assert qd.photo_crops(3, size=64)[2].size == (64, 64)


def test_calibration_and_eval_are_disjoint_normalised_nchw():
    calib, ev = qd.calibration_and_eval(64, 160, norm="lite0")
    assert calib.shape == (64, 3, 224, 224) and ev.shape == (160, 3, 224, 224)
    assert calib.dtype == ev.dtype == np.float32
    assert -1.0 <= min(calib.min(), ev.min()) and max(calib.max(), ev.max()) <= 1.0
    flat_c, flat_e = calib.reshape(64, -1), ev.reshape(160, -1)
    assert len({r.tobytes() for r in flat_c} & {r.tobytes() for r in flat_e}) == 0
    # every photo's centre crop is in the evaluation set, and the normalisations differ only by an affine map
    centres = qd.to_array(qd.photo_crops(len(qd.photo_paths())), "lite0")
    assert {r.tobytes() for r in centres.reshape(len(centres), -1)} <= {r.tobytes() for r in flat_e}
    calib_in, _ = qd.calibration_and_eval(64, 160, norm="imagenet")
    mean, std = qd.NORMS["imagenet"]
    np.testing.assert_allclose(calib_in * std[:, None, None] + mean[:, None, None], calib * 0.5 + 0.5, atol=1e-5)
    with pytest.raises(ValueError):
        qd.calibration_and_eval(4, 4, norm="bogus")


def test_english_sentences_and_minilm_batch():
    s = qd.english_sentences(1000)
    assert len(s) >= 900 and len(set(s)) == len(s)
    assert all(6 <= len(x.split()) <= 60 and x[0].isupper() for x in s)
    assert len(qd.english_sentences(500)) == 500
    ids, mask = qd.minilm_batch(["A man is playing a guitar.", s[0]], seq=128)
    assert ids.shape == mask.shape == (2, 128) and ids.dtype == mask.dtype == np.int64
    assert ids[0, :9].tolist() == [101, 1037, 2158, 2003, 2652, 1037, 2858, 1012, 102]  # models-and-data.md 2.1
    assert mask[0].sum() == 9 and (ids[0, 9:] == 0).all()
    ids, mask = qd.minilm_batch(["Short one here.", s[0]], seq=None)  # padded to the longer sentence only
    assert ids.shape[1] == mask[1].sum() < 128 and mask[0].sum() < ids.shape[1]
    ids, mask = qd.minilm_batch([" ".join(s[:20])], seq=16)  # truncated, still [CLS] ... [SEP]
    assert ids.shape == (1, 16) and mask.all() and ids[0, 0] == 101 and ids[0, -1] == 102


def test_digits_split():
    x_tr, y_tr, x_te, y_te = qd.digits_split()
    assert x_tr.shape == (1437, 1, 8, 8) and x_te.shape == (360, 1, 8, 8)
    assert x_tr.dtype == np.float32 and 0 <= x_tr.min() and x_tr.max() <= 1
    assert y_tr.shape == (1437,) and y_te.shape == (360,) and set(y_te.tolist()) == set(range(10))
    assert not np.array_equal(qd.digits_split(seed=1)[3], y_te)


def test_top1_agreement():
    a = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 3.0, 2.0]])
    b = np.array([[0.0, 1.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [3.0, 1.0, 2.0]])
    assert qd.top1_agreement(a, b) == 0.5
    assert qd.top1_agreement(a, a) == 1.0
    with pytest.raises(ValueError):
        qd.top1_agreement(a, b[:2])


def test_mean_pool_cosines():
    tokens = np.array([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]],
                       [[0.0, 2.0], [9.0, 9.0], [9.0, 9.0]]])
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(qd.mean_pool(tokens, mask), [[2.0, 2.0], [0.0, 2.0]])  # padding ignored
    np.testing.assert_allclose(qd.mean_pool(tokens, np.zeros((2, 3))), 0.0)

    a, b = np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[3.0, 0.0], [-1.0, 1.0]])
    np.testing.assert_allclose(qd.row_cosines(a, b), [1.0, 0.0], atol=1e-12)  # scale-free, orthogonal = 0
    assert qd.mean_cosine(a, b) == pytest.approx(0.5)
    assert qd.mean_cosine(a, -a) == pytest.approx(-1.0)
    np.testing.assert_allclose(np.linalg.norm(qd.l2_normalize(b), axis=1), 1.0)

    # token embeddings + mask: pooled [2, 2] vs [1, 0] -> cos 45 deg; [0, 2] vs [0, 5] -> 1
    other = np.array([[[1.0, 0.0], [1.0, 0.0], [-50.0, 7.0]], [[0.0, 5.0], [-1.0, 0.0], [0.0, 0.0]]])
    np.testing.assert_allclose(qd.row_cosines(tokens, other, mask), [np.sqrt(0.5), 1.0], atol=1e-12)
    assert qd.mean_cosine(tokens, other, mask) == pytest.approx((np.sqrt(0.5) + 1) / 2)
    with pytest.raises(ValueError):
        qd.row_cosines(tokens, other)  # token embeddings need a mask
