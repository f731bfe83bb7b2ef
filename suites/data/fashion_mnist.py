"""Fashion-MNIST: find the four IDX files, verify them against the official checksums, optionally download.

Search order (`locate`): (1) an explicit folder, the ``data_dir`` argument (``--data-dir``) or else the
environment variable ``BNPARITY_DATA``: when given it is the only place searched, so a typo is an error
rather than a silent fallback; (2) the user cache ``$XDG_CACHE_HOME/bnparity/fashion-mnist`` (default
``~/.cache/bnparity/fashion-mnist``); (3) ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu package
``dataset-fashion-mnist``); (4) only when allowed, a download into the explicit folder, else the user cache.
The download uses ``pooch`` (temporary file, check, then move into place); see `download`.
Each file may be gzip-compressed (``NAME.gz``) or raw (``NAME``).

Verification compares the size and sha256 of the UNCOMPRESSED contents, so the Debian files (different
gzip headers, same contents) verify too. A verified file is remembered by a stamp (path, size, mtime) in
``<cache>/bnparity/verified/``; its arrays are cached as ``<cache>/bnparity/arrays/<sha256>.npy`` and
re-hashed on every load (sha256 of 47 MB takes tens of milliseconds; gzip decompression is the slow part).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pooch

from ..errors import UserError
from ..output import replacing, write_output
from .idx import IMAGES_MAGIC, LABELS_MAGIC, idx_header, parse_idx, read_bytes

CLASS_NAMES: tuple[str, ...] = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

ENV_VAR = "BNPARITY_DATA"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# S3 *website* endpoints serve plain http only (no TLS); integrity comes from the sha256 check below.
MIRROR_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


@dataclass(frozen=True)
class FileSpec:
    """One official IDX file: its name (without ``.gz``), header and uncompressed size and sha256."""

    name: str
    magic: int
    shape: tuple[int, ...]
    raw_size: int
    raw_sha256: str


# Sizes and sha256 of the UNCOMPRESSED official files (what `gzip -dc FILE` gives), from
# /work/shared/data/fashion-mnist/SOURCE.md ("Uncompressed contents"); the files are the official release
# of zalandoresearch/fashion-mnist (arXiv:1708.07747), MIT license.
FILES: Mapping[str, FileSpec] = {
    "train_images": FileSpec("train-images-idx3-ubyte", IMAGES_MAGIC, (60000, 28, 28), 47_040_016,
                             "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train_labels": FileSpec("train-labels-idx1-ubyte", LABELS_MAGIC, (60000,), 60_008,
                             "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "test_images": FileSpec("t10k-images-idx3-ubyte", IMAGES_MAGIC, (10000, 28, 28), 7_840_016,
                            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "test_labels": FileSpec("t10k-labels-idx1-ubyte", LABELS_MAGIC, (10000,), 10_008,
                            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}

HOW_TO_GET = (f"To get the data: point {ENV_VAR} or --data-dir at a folder with the 4 files; "
              "or `apt-get install dataset-fashion-mnist` (Debian/Ubuntu); "
              "or run `bnparity data --download` (needs internet)")


@dataclass(frozen=True)
class FashionMNIST:
    """The four arrays of Fashion-MNIST (read-only, uint8, official order) and the folder they came from."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: Path

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise UserError(f"{split} images must be (N, H, W) with N labels. "
                                f"Received: images {images.shape}, labels {labels.shape}")


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/bnparity``, or ``~/.cache/bnparity`` when the variable is unset or relative."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "bnparity"


def search_locations(data_dir: Path | None = None) -> list[tuple[Path, str]]:
    """The folders `locate` searches, in order, each with where it comes from."""
    if data_dir is not None:
        return [(Path(data_dir).expanduser(), "--data-dir")]
    if os.environ.get(ENV_VAR):
        return [(Path(os.environ[ENV_VAR]).expanduser(), ENV_VAR)]
    return [(cache_root() / "fashion-mnist", "user cache"),
            (SYSTEM_DIR, "Debian package dataset-fashion-mnist")]


def find_file(folder: Path, spec: FileSpec) -> Path | None:
    """The file for `spec` in `folder`, raw preferred over ``.gz``; None when neither exists."""
    for candidate in (folder / spec.name, folder / f"{spec.name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate(data_dir: Path | None = None, *, specs: Mapping[str, FileSpec] = FILES) -> Path:
    """The first folder in the search order that holds all four files (see the module docstring).

    Args:
        data_dir: an explicit folder; when None, ``BNPARITY_DATA`` and then the default places are used.
        specs: the expected files (tests inject small ones).

    Raises:
        UserError: no folder has all four files; the message lists where it looked and the 3 ways to
            get the data.
    """
    looked = []
    for folder, origin in search_locations(data_dir):
        missing = [s.name for s in specs.values() if find_file(folder, s) is None]
        if not missing:
            return folder
        state = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        looked.append(f"{folder} ({origin}: {state})")
    raise UserError(f"Fashion-MNIST not found; looked in {'; '.join(looked)}. Each file may be NAME or "
                    f"NAME.gz. {HOW_TO_GET}")


def _stamp_path(path: Path, spec: FileSpec) -> tuple[Path, dict[str, object]]:
    st = path.stat()
    record = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
              "raw_sha256": spec.raw_sha256}
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]
    return cache_root() / "verified" / f"{key}.json", record


def _cached_array(spec: FileSpec) -> np.ndarray | None:
    """The cached array of a verified file, re-hashed against `spec`; None when absent or not matching."""
    npy = cache_root() / "arrays" / f"{spec.raw_sha256}.npy"
    try:
        array = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if array.dtype != np.uint8 or array.shape != spec.shape or not array.flags.c_contiguous:
        return None
    digest = hashlib.sha256(idx_header(array.dtype, array.shape))  # the raw file: header + pixels
    digest.update(memoryview(array).cast("B"))
    if digest.hexdigest() != spec.raw_sha256:
        return None
    return np.asarray(array)  # a plain read-only ndarray view of the mapped file


def _remember(spec: FileSpec, array: np.ndarray, stamp: Path, record: dict[str, object]) -> None:
    """Write the array cache and the stamp; a cache that cannot be written only costs speed."""
    npy = cache_root() / "arrays" / f"{spec.raw_sha256}.npy"
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
        with replacing(npy) as tmp, tmp.open("wb") as f:  # a file object: np.save would append ".npy" to a name
            np.save(f, array, allow_pickle=False)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        write_output(stamp, json.dumps(record, sort_keys=True))
    except OSError as e:
        warnings.warn(f"could not write the data cache in {cache_root()}: {e}", stacklevel=3)


def check_contents(data: bytes, *, spec: FileSpec, name: str) -> None:
    """Check the size and sha256 of uncompressed contents against `spec`.

    Raises:
        UserError: naming the file, the expected and the received value.
    """
    if len(data) != spec.raw_size:
        raise UserError(f"{name}: uncompressed size must be {spec.raw_size} bytes. Received: {len(data)}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.raw_sha256:
        raise UserError(f"{name}: checksum mismatch, uncompressed sha256 must be {spec.raw_sha256}. "
                        f"Received: {digest}")


def load_file(path: Path, *, spec: FileSpec, verify: bool = True, recheck: bool = False) -> np.ndarray:
    """Read one IDX file; with `verify`, check it against `spec` (once per path/size/mtime, remembered).

    Args:
        path: the file (raw or ``.gz``).
        spec: what it must contain.
        verify: check size and sha256 of the uncompressed contents; use and fill the cache.
        recheck: ignore a remembered verification and hash the file again.

    Raises:
        UserError: unreadable, corrupt, truncated, bad header or checksum mismatch (the message says which).
    """
    if not verify:
        return parse_idx(read_bytes(path), name=str(path), expected_magic=spec.magic)
    stamp, record = _stamp_path(path, spec)
    if not recheck and stamp.is_file():
        array = _cached_array(spec)
        try:
            if array is not None and json.loads(stamp.read_text()) == record:
                return array
        except (OSError, ValueError):
            pass
    data = read_bytes(path)
    check_contents(data, spec=spec, name=str(path))
    array = parse_idx(data, name=str(path), expected_magic=spec.magic)
    if array.shape != spec.shape:
        raise UserError(f"{path}: shape must be {spec.shape}. Received: {array.shape}")
    _remember(spec, array, stamp, record)
    return array


Downloader = Callable[[str, str, Any], None]
"""pooch's downloader protocol: ``downloader(url, output_file, pooch_or_None)`` writes `url` into `output_file`."""


def _checked(downloader: Downloader, spec: FileSpec) -> Downloader:
    """Wrap `downloader` so that pooch's temporary file is checked before pooch moves it into place.

    pooch downloads into a temporary file next to the destination and moves it there only when the
    downloader returns; a UserError raised here makes pooch delete the temporary file instead.
    """
    def download(url: str, output_file: str, pooch_obj: Any) -> None:
        try:
            downloader(url, output_file, pooch_obj)
        except OSError as e:  # requests' RequestException is an OSError (IOError) too
            reason = " ".join(str(e).split())  # one line, whatever requests puts in the message
            raise UserError(f"could not download {url}: {reason}") from e
        try:
            with gzip.open(output_file, "rb") as g:
                data = g.read()
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"downloaded {url} is not a valid gzip file: {e}") from e
        check_contents(data, spec=spec, name=f"downloaded {url}")

    return download


@contextmanager
def _quiet_pooch() -> Iterator[None]:
    """Hide pooch's INFO lines ("Downloading data from ...", "SHA256 hash of downloaded file ...")."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def download(dest_dir: Path, *, base_url: str = MIRROR_URL, specs: Mapping[str, FileSpec] = FILES,
             downloader: Downloader | None = None, timeout: float = 60.0,
             log: Callable[[str], None] | None = None) -> Path:
    """Download the files missing from `dest_dir` with `pooch.retrieve`; each is verified, then moved into place.

    pooch writes each file to a temporary file in `dest_dir` and moves it to ``NAME.gz`` only after the
    check: the official sha256 of the .gz files is not among our constants, so pooch gets
    ``known_hash=None`` and the check is ours (size and sha256 of the uncompressed contents, `check_contents`),
    run on pooch's temporary file before the move. A file present in `dest_dir` (raw or ``.gz``) is
    not fetched again.

    Args:
        dest_dir: the target folder (created when missing).
        base_url: the mirror; ``NAME.gz`` is appended.
        specs: the expected files.
        downloader: a pooch downloader, ``downloader(url, output_file, pooch)``; default
            ``pooch.HTTPDownloader(timeout=timeout)`` without a progress bar.
        timeout: seconds, for the default downloader.
        log: called with one line per file fetched.

    Returns:
        `dest_dir`.

    Raises:
        UserError: a network error, or a download that is not gzip or whose contents do not match the
            checksum (nothing is left in `dest_dir` then).
    """
    dest_dir = Path(dest_dir).expanduser()
    dest_dir.mkdir(parents=True, exist_ok=True)
    if downloader is None:
        downloader = pooch.HTTPDownloader(progressbar=False, timeout=timeout)
    for spec in specs.values():
        if find_file(dest_dir, spec) is not None:
            continue
        url = base_url.rstrip("/") + f"/{spec.name}.gz"
        if log is not None:
            log(f"downloading {url} -> {dest_dir}")
        with _quiet_pooch():
            pooch.retrieve(url, known_hash=None, fname=f"{spec.name}.gz", path=dest_dir,
                           downloader=_checked(downloader, spec))
    return dest_dir


def locate_or_download(data_dir: Path | None = None, *, allow_download: bool = False,
                       specs: Mapping[str, FileSpec] = FILES, base_url: str = MIRROR_URL,
                       log: Callable[[str], None] | None = None) -> Path:
    """`locate`, and when nothing is found and `allow_download`, download into the explicit folder
    (``data_dir`` or ``BNPARITY_DATA``) or else the user cache."""
    try:
        return locate(data_dir, specs=specs)
    except UserError:
        if not allow_download:
            raise
    locations = search_locations(data_dir)
    explicit = data_dir is not None or bool(os.environ.get(ENV_VAR))
    target = locations[0][0] if explicit else cache_root() / "fashion-mnist"
    return download(target, base_url=base_url, specs=specs, log=log)


def load_fashion_mnist(data_dir: Path | None = None, *, allow_download: bool = False, verify: bool = True,
                       recheck: bool = False, specs: Mapping[str, FileSpec] = FILES) -> FashionMNIST:
    """Locate (optionally download), verify and load Fashion-MNIST.

    Args:
        data_dir: an explicit folder with the four files (else ``BNPARITY_DATA``, cache, Debian path).
        allow_download: download from the official mirror when the files are nowhere to be found.
        verify: check the size and sha256 of each file's uncompressed contents (remembered per file).
        recheck: ignore remembered verifications and hash again.
        specs: the expected files, keyed by FashionMNIST field name (tests inject small ones).

    Returns:
        The four arrays, read-only, in the official order (image i has label i).

    Raises:
        UserError: not found (with the 3 ways to get it), or a corrupt or mismatching file.
    """
    folder = locate_or_download(data_dir, allow_download=allow_download, specs=specs)
    arrays = {}
    for key, spec in specs.items():
        path = find_file(folder, spec)
        if path is None:  # removed between locate and now
            raise UserError(f"{folder / spec.name} disappeared while loading")
        array = load_file(path, spec=spec, verify=verify, recheck=recheck)
        array.setflags(write=False)
        arrays[key] = array
    return FashionMNIST(**arrays, source=folder)
