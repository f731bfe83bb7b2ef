"""The one input pipeline every framework gets: normalize, subset, resize (cached), seeded batch order.

Everything here is numpy and runs once, so all frameworks train on bit-identical float32 arrays:

- Normalization: ``(x / 255 - MEAN) / STD`` with MEAN = 0.2860 and STD = 0.3530, the training-set pixel
  mean and std of Fashion-MNIST (``/work/shared/data/fashion-mnist/SOURCE.md``, "Pixel statistics"),
  evaluated in float64 and rounded once to float32.
- Subsets: class-balanced. ``n`` samples are spread evenly over the classes present (the lowest
  ``n % C`` labels get one more); each class's samples are drawn with
  ``np.random.default_rng([subset_seed, split]).permutation`` (split 0 train, 1 test), classes in label
  order. The chosen indices are sorted, so a subset keeps the official order.
- Resize: bilinear, ``align_corners=False`` (half-pixel centres, source index clamped at 0 and at the last
  pixel, no antialiasing), i.e. the semantics of PyTorch's ``F.interpolate(mode="bilinear",
  align_corners=False)``; rows are interpolated first, then columns, in float64, then normalized.
- Resize cache: ``<cache_dir>/<split>-<S>px-<N>-<key>.npy`` (default cache_dir
  ``$XDG_CACHE_HOME/bnparity/prepared``), ``key`` a sha256 of the selected source pixels, the size and
  the constants; written atomically. A split up to ``MAX_IN_MEMORY_BYTES`` (1 GiB of float32, e.g. all
  60000 train images up to 64x64) is loaded into memory; a larger one (60000 x 224 x 224 is 12 GB) is
  returned as a read-only ``np.memmap`` of the float32 cache file, and `batches` reads only each batch.
- Batch order: ``np.random.default_rng([seed, epoch]).permutation(N)``, the same in every framework.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..output import replacing
from .fashion_mnist import FashionMNIST, cache_root

MEAN = 0.2860
STD = 0.3530
MAX_IN_MEMORY_BYTES = 1 << 30
_CHUNK_ELEMENTS = 1 << 23  # float64 elements per resize chunk (64 MB)
_VERSION = 1  # bump when the resize or normalization changes, to invalidate caches


@dataclass(frozen=True)
class Split:
    """One split ready for a model: images float32 (N, 1, S, S) NCHW normalized, labels int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 1 or self.images.dtype != np.float32:
            raise ValueError(f"images must be float32 (N, 1, S, S). "
                             f"Received: {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),) or self.labels.dtype != np.int64:
            raise ValueError(f"labels must be int64 ({len(self.images)},). "
                             f"Received: {self.labels.dtype} {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.labels)


def normalize(images: np.ndarray) -> np.ndarray:
    """``(x / 255 - MEAN) / STD`` in float64, rounded to float32; uint8 input goes through a 256-entry
    table (the same values, faster)."""
    if images.dtype == np.uint8:
        table = ((np.arange(256, dtype=np.float64) / 255.0 - MEAN) / STD).astype(np.float32)
        return table[images]
    return ((np.asarray(images, dtype=np.float64) / 255.0 - MEAN) / STD).astype(np.float32)


def _axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and weight of i1 for bilinear, align_corners=False, along one axis."""
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = np.where(i1 == i0, 0.0, src - i0)
    return i0, i1, w1


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, H, W) images to (N, size, size), bilinear with align_corners=False semantics.

    Args:
        images: any real dtype.
        size: the output height and width (>= 1).

    Returns:
        float64 (N, size, size). A constant image stays constant; ``size == H == W`` is the identity.
    """
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W). Received: shape {images.shape}")
    y0, y1, wy = _axis(images.shape[1], size)
    x0, x1, wx = _axis(images.shape[2], size)
    x = np.asarray(images, dtype=np.float64)
    rows = x[:, y0, :] * (1.0 - wy)[:, None] + x[:, y1, :] * wy[:, None]
    return rows[:, :, x0] * (1.0 - wx) + rows[:, :, x1] * wx


def _resize_normalize_into(out: np.ndarray, images: np.ndarray, size: int) -> None:
    chunk = max(1, _CHUNK_ELEMENTS // (size * size))
    for start in range(0, len(images), chunk):
        out[start:start + chunk, 0] = normalize(resize_bilinear(images[start:start + chunk], size))


def _resized(images: np.ndarray, *, size: int, name: str, cache_dir: Path) -> np.ndarray:
    """Normalized resized float32 (N, 1, size, size), from the disk cache when present."""
    shape = (len(images), 1, size, size)
    nbytes = int(np.prod(shape)) * 4
    mmap = "r" if nbytes > MAX_IN_MEMORY_BYTES else None
    h = hashlib.sha256(f"v{_VERSION}|{size}|{MEAN}|{STD}|{images.shape}|".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    path = cache_dir / f"{name}-{size}px-{len(images)}-{h.hexdigest()[:24]}.npy"
    try:
        cached = np.load(path, mmap_mode=mmap, allow_pickle=False)
        if cached.shape == shape and cached.dtype == np.float32:
            return cached
    except (OSError, ValueError):
        pass
    if mmap is None:
        out = np.empty(shape, dtype=np.float32)
        _resize_normalize_into(out, images, size)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        if mmap is not None and shutil.disk_usage(cache_dir).free < nbytes + (256 << 20):
            raise UserError(f"resizing {name} to {size}x{size} needs {nbytes / 1e9:.1f} GB of disk in "
                            f"{cache_dir}, free: {shutil.disk_usage(cache_dir).free / 1e9:.1f} GB; "
                            f"use a subset, a smaller image_size or another cache_dir")
        with replacing(path) as tmp:
            if mmap is None:
                with tmp.open("wb") as f:  # a file object: np.save would append ".npy" to a name
                    np.save(f, out, allow_pickle=False)
            else:
                big = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
                _resize_normalize_into(big, images, size)
                big.flush()
                del big
    except OSError as e:
        if mmap is not None:
            raise UserError(f"resizing {name} to {size}x{size} ({nbytes / 1e9:.1f} GB) needs a writable "
                            f"cache_dir; {cache_dir}: {e}") from e
        warnings.warn(f"could not cache resized {name} in {cache_dir}: {e}", stacklevel=3)
        return out
    return out if mmap is None else np.load(path, mmap_mode=mmap, allow_pickle=False)


def select_subset(labels: np.ndarray, n: int, *, seed: int, stream: int) -> np.ndarray:
    """Sorted indices of a class-balanced subset of `n` samples (see the module docstring).

    Raises:
        UserError: `n` outside 1..N, or a class with fewer samples than its share.
    """
    if not 1 <= n <= len(labels):
        raise UserError(f"subset size must be in 1..{len(labels)}. Received: {n}")
    classes = np.unique(labels)
    rng = np.random.default_rng([seed, stream])
    chosen = []
    for i, c in enumerate(classes):
        k = n // len(classes) + (1 if i < n % len(classes) else 0)
        members = np.flatnonzero(labels == c)
        if k > len(members):
            raise UserError(f"a balanced subset of {n} needs {k} samples of class {c}. "
                            f"Received: {len(members)}")
        chosen.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(chosen))


def prepare(ds: FashionMNIST, *, image_size: int = 28, train_subset: int | None = None,
            test_subset: int | None = None, subset_seed: int = 0,
            cache_dir: Path | None = None) -> tuple[Split, Split]:
    """Turn the uint8 dataset into normalized float32 NCHW splits (see the module docstring).

    Args:
        ds: the loaded dataset.
        image_size: output height and width; other than the source size means a bilinear resize.
        train_subset: a class-balanced subset size of the training split, or None for all.
        test_subset: the same for the test split.
        subset_seed: the seed of the subset draw.
        cache_dir: where resized arrays are cached; default ``$XDG_CACHE_HOME/bnparity/prepared``.

    Returns:
        (train, test).

    Raises:
        UserError: a bad size or subset, or no room for a large resize cache.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UserError(f"image_size must be an integer >= 1. Received: {image_size!r}")
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root() / "prepared"
    splits = []
    for stream, (name, images, labels, subset) in enumerate((
            ("train", ds.train_images, ds.train_labels, train_subset),
            ("test", ds.test_images, ds.test_labels, test_subset))):
        if subset is not None:
            index = select_subset(labels, subset, seed=subset_seed, stream=stream)
            images, labels = images[index], labels[index]
        if images.shape[1:] == (image_size, image_size):
            x = normalize(images)[:, None]
        else:
            x = _resized(images, size=image_size, name=name, cache_dir=cache_dir)
        splits.append(Split(images=x, labels=labels.astype(np.int64)))
    return splits[0], splits[1]


def epoch_order(n: int, *, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: ``np.random.default_rng([seed, epoch]).permutation(n)``."""
    if n < 0 or seed < 0 or epoch < 0:
        raise UserError(f"n, seed and epoch must be >= 0. Received: n={n}, seed={seed}, epoch={epoch}")
    return np.random.default_rng([seed, epoch]).permutation(n)


def batches(split: Split, *, batch_size: int, seed: int, epoch: int,
            drop_last: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (images float32 (B, 1, S, S), labels int64 (B,)) in `epoch_order`; fresh arrays each time.

    Args:
        split: the data.
        batch_size: samples per batch (>= 1).
        seed: the run's data-order seed.
        epoch: the epoch number (0-based).
        drop_last: skip a final incomplete batch (so every batch has the same BN batch size).

    Raises:
        UserError: batch_size < 1, or larger than the split while drop_last (no batch at all).
    """
    n = len(split)
    if batch_size < 1 or (drop_last and batch_size > n):
        raise UserError(f"batch_size must be >= 1, and <= the split size {n} when drop_last. "
                        f"Received: {batch_size}")
    order = epoch_order(n, seed=seed, epoch=epoch)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        if drop_last and len(index) < batch_size:
            return
        if isinstance(split.images, np.memmap):  # read the file in order, then restore the batch order
            ascending = np.argsort(index, kind="stable")
            images = np.empty((len(index),) + split.images.shape[1:], dtype=np.float32)
            images[ascending] = split.images[index[ascending]]
        else:
            images = split.images[index]
        yield images, split.labels[index]
