"""Fashion-MNIST data: IDX parsing, search order, verification, download, resize, subsets, batch order."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pooch
import pytest
import requests

from bnparity.suites.cli import main
from bnparity.suites.data import fashion_mnist as fm
from bnparity.suites.data import pipeline
from bnparity.suites.data.idx import encode_idx, parse_idx, read_idx, write_idx
from bnparity.suites.errors import UserError

from .conftest import require

# Read before the autouse fixture clears the variable; CI sets BNPARITY_DATA to the shared folder.
REAL_DIR = Path(os.environ.get("BNPARITY_DATA") or "/work/shared/data/fashion-mnist")


class NoNetwork:
    """Stands in for `pooch.HTTPDownloader`: any download a test did not fake fails the test."""

    def __init__(self, **kwargs: object) -> None:
        self.kwargs = kwargs

    def __call__(self, url: str, output_file: str, pooch_obj: object) -> None:
        pytest.fail(f"a test tried the network: {url}")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real cache, home, system folder or network: everything points into tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BNPARITY_DATA", raising=False)
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setattr(pooch, "HTTPDownloader", NoNetwork)


MIRROR = "http://mirror.test/fashion-mnist"


@dataclasses.dataclass
class Mirror:
    folder: Path  # what the fake serves
    created: list[dict[str, object]]  # the keyword arguments of each downloader made


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Mirror:
    """A fake of `pooch.HTTPDownloader` serving ``MIRROR/NAME`` from ``tmp_path/mirror/NAME``."""
    folder = tmp_path / "mirror"
    created: list[dict[str, object]] = []

    class LocalMirror(NoNetwork):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(**kwargs)
            created.append(kwargs)

        def __call__(self, url: str, output_file: str, pooch_obj: object) -> None:
            assert url.startswith(MIRROR + "/"), f"a test tried the network: {url}"
            source = folder / url.removeprefix(MIRROR + "/")
            if not source.is_file():
                raise requests.exceptions.HTTPError(f"404 Client Error: Not Found for url: {url}")
            shutil.copyfile(source, output_file)

    monkeypatch.setattr(pooch, "HTTPDownloader", LocalMirror)
    return Mirror(folder, created)


def make_fake(folder: Path, *, gz: bool = True, n_train: int = 20, n_test: int = 10,
              size: int = 28, seed: int = 0) -> dict[str, fm.FileSpec]:
    """Write four small IDX files with balanced labels into `folder`; return specs that match them."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    specs = {}
    for key, array in arrays.items():
        real = fm.FILES[key]
        write_idx(folder / (real.name + (".gz" if gz else "")), array)
        raw = encode_idx(array)
        specs[key] = fm.FileSpec(real.name, real.magic, array.shape, len(raw), hashlib.sha256(raw).hexdigest())
    return specs


# ---------------------------------------------------------------- IDX


def test_idx_hand_worked_bytes():
    labels = bytes.fromhex("00000801" "00000003") + bytes([7, 8, 9])
    np.testing.assert_array_equal(parse_idx(labels, name="l", expected_magic=2049), [7, 8, 9])
    images = bytes.fromhex("00000803" "00000001" "00000002" "00000002") + bytes([1, 2, 3, 4])
    out = parse_idx(images, name="i", expected_magic=2051)
    assert out.dtype == np.uint8 and out.tolist() == [[[1, 2], [3, 4]]]
    assert encode_idx(out) == images
    with pytest.raises(UserError, match=r"x has an invalid magic number 1795 \(bytes 00000703\)"):
        parse_idx(bytes.fromhex("00000703") + images[4:], name="x")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip(tmp_path, dtype, suffix):
    array = (np.arange(2 * 3 * 4) * 3 - 5).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / f"x-idx3{suffix}"
    write_idx(path, array)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


def test_idx_uint8_magic_numbers(tmp_path):
    write_idx(tmp_path / "i", np.zeros((2, 3, 3), np.uint8))
    write_idx(tmp_path / "l", np.zeros(2, np.uint8))
    assert int.from_bytes((tmp_path / "i").read_bytes()[:4], "big") == 2051
    assert int.from_bytes((tmp_path / "l").read_bytes()[:4], "big") == 2049


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda b: bytes.fromhex("00000801") + b[4:], "must have magic number 2051. Received: 2049"),
    (lambda b: b"\x01" + b[1:], "must have magic number 2051. Received: 16779267"),
    (lambda b: b[:-1], "truncated.*need 36 bytes.*Received: 35"),
    (lambda b: b + b"\x00", "too long"),
    (lambda b: b[:10], "truncated: header needs 16 bytes"),
    (lambda b: b[:2], "4-byte magic"),
])
def test_idx_corrupt(tmp_path, mutate, match):
    path = tmp_path / "bad-idx3"
    path.write_bytes(mutate(encode_idx(np.zeros((5, 2, 2), np.uint8))))
    with pytest.raises(UserError, match=match) as info:
        read_idx(path, expected_magic=2051)
    assert str(path) in str(info.value)


def test_idx_truncated_gzip(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, np.arange(1000, dtype=np.uint8).reshape(10, 10, 10))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(UserError, match=f"corrupt or truncated gzip file {path}"):
        read_idx(path)


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="Received: int64"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))


# ---------------------------------------------------------------- search order


def test_locate_search_order(tmp_path, monkeypatch):
    cache = tmp_path / "xdg" / "bnparity" / "fashion-mnist"
    make_fake(fm.SYSTEM_DIR)
    assert fm.locate() == fm.SYSTEM_DIR
    make_fake(cache)
    assert fm.locate() == cache
    env = tmp_path / "env"
    make_fake(env, gz=False)  # raw files are accepted
    monkeypatch.setenv("BNPARITY_DATA", str(env))
    assert fm.locate() == env
    explicit = tmp_path / "explicit"
    make_fake(explicit)
    assert fm.locate(explicit) == explicit


def test_locate_default_cache_is_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    make_fake(tmp_path / "home" / ".cache" / "bnparity" / "fashion-mnist")
    assert fm.locate() == tmp_path / "home" / ".cache" / "bnparity" / "fashion-mnist"


def test_explicit_folder_is_the_only_place_searched(tmp_path, monkeypatch):
    make_fake(fm.SYSTEM_DIR)
    monkeypatch.setenv("BNPARITY_DATA", str(tmp_path / "typo"))
    with pytest.raises(UserError, match=r"typo \(BNPARITY_DATA: does not exist\)"):
        fm.locate()


def test_not_found_says_where_and_how(tmp_path):
    partial = tmp_path / "xdg" / "bnparity" / "fashion-mnist"
    partial.mkdir(parents=True)
    write_idx(partial / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(UserError) as info:
        fm.locate()
    msg = str(info.value)
    assert "\n" not in msg
    assert f"{partial} (user cache: lacks train-images-idx3-ubyte, t10k-images-idx3-ubyte" in msg
    assert f"{fm.SYSTEM_DIR} (Debian package dataset-fashion-mnist: does not exist)" in msg
    for way in ("BNPARITY_DATA", "--data-dir", "apt-get install dataset-fashion-mnist",
                "bnparity data --download"):
        assert way in msg


# ---------------------------------------------------------------- verification


def test_load_verifies_and_remembers(tmp_path, monkeypatch):
    specs = make_fake(tmp_path / "d")
    ds = fm.load_fashion_mnist(tmp_path / "d", specs=specs)
    assert ds.source == tmp_path / "d" and ds.train_images.shape == (20, 28, 28)
    np.testing.assert_array_equal(ds.train_labels, np.arange(20) % 10)
    assert not ds.train_images.flags.writeable
    # the second load uses the stamp and the self-checking array cache: the files are not read again
    monkeypatch.setattr(fm, "read_bytes", lambda path: pytest.fail(f"re-read {path}"))
    again = fm.load_fashion_mnist(tmp_path / "d", specs=specs)
    np.testing.assert_array_equal(again.test_images, ds.test_images)
    with pytest.raises(pytest.fail.Exception, match="re-read"):
        fm.load_fashion_mnist(tmp_path / "d", specs=specs, recheck=True)


def test_changed_file_is_verified_again(tmp_path):
    specs = make_fake(tmp_path / "d")
    fm.load_fashion_mnist(tmp_path / "d", specs=specs)
    path = tmp_path / "d" / "t10k-images-idx3-ubyte.gz"
    array = read_idx(path).copy()
    array[0, 0, 0] ^= 1
    write_idx(path, array)
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the clock resolution
    with pytest.raises(UserError, match=f"{path}: checksum mismatch, uncompressed sha256 must be "
                                        f"{specs['test_images'].raw_sha256}"):
        fm.load_fashion_mnist(tmp_path / "d", specs=specs)


def test_corrupt_array_cache_falls_back_to_the_file(tmp_path):
    specs = make_fake(tmp_path / "d")
    first = fm.load_fashion_mnist(tmp_path / "d", specs=specs)
    npy = fm.cache_root() / "arrays" / f"{specs['train_images'].raw_sha256}.npy"
    bad = np.array(first.train_images)
    bad[3] = 0
    np.save(npy, bad)
    again = fm.load_fashion_mnist(tmp_path / "d", specs=specs)
    np.testing.assert_array_equal(again.train_images, first.train_images)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("raw_sha256", "0" * 64, "checksum mismatch"),
    ("raw_size", 123, "uncompressed size must be 123 bytes. Received: 15696"),
])
def test_wrong_checksum_or_size(tmp_path, field, value, match):
    specs = make_fake(tmp_path / "d")
    specs["train_images"] = dataclasses.replace(specs["train_images"], **{field: value})
    with pytest.raises(UserError, match=f"train-images-idx3-ubyte.gz: {match}"):
        fm.load_fashion_mnist(tmp_path / "d", specs=specs)
    assert fm.load_fashion_mnist(tmp_path / "d", specs=specs, verify=False).train_images.shape == (20, 28, 28)


# ---------------------------------------------------------------- download


def test_download_with_pooch(tmp_path, mirror, capfd):
    specs = make_fake(mirror.folder)
    lines = []
    dest = fm.download(tmp_path / "dest", base_url=MIRROR, specs=specs, log=lines.append)
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{s.name}.gz" for s in specs.values())
    for spec in specs.values():
        assert (dest / f"{spec.name}.gz").read_bytes() == (mirror.folder / f"{spec.name}.gz").read_bytes()
    assert lines == [f"downloading {MIRROR}/{s.name}.gz -> {dest}" for s in specs.values()]
    assert mirror.created == [{"progressbar": False, "timeout": 60.0}]
    assert capfd.readouterr().err == ""  # pooch's INFO lines are not shown
    assert pooch.get_logger().level == logging.NOTSET  # and its logger is left as it was
    assert fm.download(dest, base_url="http://must.not.be.used/", specs=specs) == dest  # all present


def test_download_to_cache_when_allowed(mirror):
    specs = make_fake(mirror.folder)
    with pytest.raises(UserError, match="not found"):
        fm.locate_or_download(specs=specs)
    folder = fm.locate_or_download(allow_download=True, specs=specs, base_url=MIRROR)
    assert folder == fm.cache_root() / "fashion-mnist"
    assert fm.locate(specs=specs) == folder
    assert fm.load_fashion_mnist(folder, specs=specs).train_images.shape == (20, 28, 28)


def test_download_into_explicit_folder(tmp_path, mirror, monkeypatch):
    specs = make_fake(mirror.folder)
    monkeypatch.setenv("BNPARITY_DATA", str(tmp_path / "env"))
    assert fm.locate_or_download(allow_download=True, specs=specs, base_url=MIRROR) == tmp_path / "env"
    assert not (fm.cache_root() / "fashion-mnist").exists()


def test_download_checksum_mismatch_leaves_nothing(tmp_path, mirror):
    specs = make_fake(mirror.folder)
    specs["train_labels"] = dataclasses.replace(specs["train_labels"], raw_sha256="f" * 64)
    with pytest.raises(UserError, match=f"^downloaded {MIRROR}/train-labels-idx1-ubyte.gz: checksum mismatch, "
                                        "uncompressed sha256 must be f{64}. Received: [0-9a-f]{64}$"):
        fm.download(tmp_path / "dest", base_url=MIRROR, specs=specs)
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["train-images-idx3-ubyte.gz"]


def test_download_interrupted_leaves_nothing(tmp_path):
    specs = make_fake(tmp_path / "mirror")
    seen = []

    def broken(url: str, output_file: str, pooch_obj: object) -> None:
        Path(output_file).write_bytes(b"\x1f\x8b partial")  # pooch's temporary file, half written
        seen.append(Path(output_file))
        raise ConnectionResetError("connection reset")

    with pytest.raises(UserError, match="^could not download http://x/train-images-idx3-ubyte.gz: "
                                        "connection reset$"):
        fm.download(tmp_path / "dest", base_url="http://x", specs=specs, downloader=broken)
    assert seen[0].parent == tmp_path / "dest"
    assert list((tmp_path / "dest").iterdir()) == []


def test_download_network_error_is_one_line(tmp_path, mirror):
    specs = make_fake(mirror.folder)
    (mirror.folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError) as info:
        fm.download(tmp_path / "dest", base_url=MIRROR, specs=specs)
    assert str(info.value) == (f"could not download {MIRROR}/t10k-labels-idx1-ubyte.gz: 404 Client Error: "
                               f"Not Found for url: {MIRROR}/t10k-labels-idx1-ubyte.gz")
    assert "t10k-labels-idx1-ubyte.gz" not in [p.name for p in (tmp_path / "dest").iterdir()]
    assert len(list((tmp_path / "dest").iterdir())) == 3  # the others are in place; a rerun fetches the rest


def test_download_not_gzip(tmp_path, mirror):
    specs = make_fake(mirror.folder)
    (mirror.folder / "train-images-idx3-ubyte.gz").write_bytes(b"<html>not found</html>")
    with pytest.raises(UserError, match="is not a valid gzip file"):
        fm.download(tmp_path / "dest", base_url=MIRROR, specs=specs)
    assert list((tmp_path / "dest").iterdir()) == []


def test_download_needs_permission(tmp_path):
    specs = make_fake(tmp_path / "mirror")
    with pytest.raises(UserError, match="not found"):
        fm.load_fashion_mnist(specs=specs)  # NoNetwork would fail the test on any download attempt


# ---------------------------------------------------------------- command


def test_command_missing_dir(tmp_path, capsys):
    assert main(["data", "--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("bnparity data: error: Fashion-MNIST not found") and "apt-get install" in err


def test_command_wrong_files(tmp_path, capsys):
    make_fake(tmp_path / "d")  # right names, wrong contents for the official checksums
    assert main(["data", "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz: uncompressed size must be 47040016 bytes" in err
    assert err.count("\n") == 1


# ---------------------------------------------------------------- real data


@pytest.fixture
def real_dir() -> Path:
    if any(fm.find_file(REAL_DIR, spec) is None for spec in fm.FILES.values()):
        pytest.skip(f"the real Fashion-MNIST files are not in {REAL_DIR} (set BNPARITY_DATA)")
    return REAL_DIR


def test_real_data_load_and_verify(real_dir, capsys):
    start = time.perf_counter()
    ds = fm.load_fashion_mnist(real_dir)
    first = time.perf_counter() - start
    start = time.perf_counter()
    cached = fm.load_fashion_mnist(real_dir)
    second = time.perf_counter() - start
    print(f"real data load+verify: first {first:.3f} s, cached {second:.3f} s")
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    assert ds.train_images.dtype == ds.train_labels.dtype == np.uint8
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    x = ds.train_images / 255.0
    assert round(float(x.mean()), 4) == pipeline.MEAN and round(float(x.std()), 4) == pipeline.STD
    assert ds.train_labels[0] == 9  # SOURCE.md: training image 0 is an ankle boot
    for key in fm.FILES:
        np.testing.assert_array_equal(getattr(cached, key), getattr(ds, key))
    assert main(["data", "--data-dir", str(real_dir)]) == 0
    out = capsys.readouterr().out
    assert f"found: {real_dir} (--data-dir)" in out and "verified:" in out
    assert "9     Ankle boot      6000   1000" in out


# ---------------------------------------------------------------- normalization and resize


def test_normalize_table_equals_formula():
    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    np.testing.assert_array_equal(pipeline.normalize(values), pipeline.normalize(values.astype(np.float64)))
    assert pipeline.normalize(np.array([0], np.uint8))[0] == np.float32((0 - 0.2860) / 0.3530)


def test_resize_hand_worked():
    # 2 -> 4, align_corners=False: source positions 0 (clamped from -0.25), 0.25, 0.75, 1 (clamped).
    out = pipeline.resize_bilinear(np.array([[[0, 4], [8, 12]]], np.uint8), 4)
    np.testing.assert_array_equal(out[0], [[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10], [8, 9, 11, 12]])
    # 4 -> 2: source positions 0.5 and 2.5, the mean of each pixel pair
    np.testing.assert_array_equal(pipeline.resize_bilinear(np.array([[[0, 2, 4, 6]] * 4]), 2)[0],
                                  [[1, 5], [1, 5]])


@pytest.mark.parametrize("size", [1, 5, 27, 28, 57, 224])
def test_resize_constant_stays_constant(size):
    out = pipeline.resize_bilinear(np.full((2, 28, 28), 137, np.uint8), size)
    assert out.shape == (2, size, size) and np.all(out == 137)


def test_resize_same_size_is_identity():
    x = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(pipeline.resize_bilinear(x, 28), x)


@pytest.mark.parametrize("size", [13, 64, 227])
def test_resize_matches_torch_interpolate(size):
    require("torch")
    import torch

    x = np.random.default_rng(2).integers(0, 256, (3, 28, 28)).astype(np.float64)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x)[:, None], size=(size, size),
                                               mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(pipeline.resize_bilinear(x, size), expected, rtol=0, atol=1e-9)


# ---------------------------------------------------------------- prepare, subsets, batches


def fake_ds(tmp_path, **kw) -> fm.FashionMNIST:
    specs = make_fake(tmp_path / "d", **kw)
    return fm.load_fashion_mnist(tmp_path / "d", specs=specs)


def test_prepare_native_size(tmp_path):
    ds = fake_ds(tmp_path)
    train, test = pipeline.prepare(ds, cache_dir=tmp_path / "c")
    assert train.images.shape == (20, 1, 28, 28) and train.images.dtype == np.float32
    assert test.labels.dtype == np.int64 and test.labels.tolist() == (np.arange(10) % 10).tolist()
    np.testing.assert_array_equal(train.images[:, 0], pipeline.normalize(ds.train_images))
    assert not (tmp_path / "c").exists()  # nothing to cache without a resize


def test_prepare_resize_cached_and_memmap(tmp_path, monkeypatch):
    ds = fake_ds(tmp_path)
    train, test = pipeline.prepare(ds, image_size=40, cache_dir=tmp_path / "c")
    expected = pipeline.normalize(pipeline.resize_bilinear(ds.train_images, 40))
    np.testing.assert_array_equal(train.images[:, 0], expected)
    files = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert len(files) == 2 and files[0].startswith("test-40px-10-") and files[1].startswith("train-40px-20-")
    np.save(tmp_path / "c" / files[1], np.zeros((20, 1, 40, 40), np.float32))  # proves the cache is read
    assert np.all(pipeline.prepare(ds, image_size=40, cache_dir=tmp_path / "c")[0].images == 0)
    monkeypatch.setattr(pipeline, "MAX_IN_MEMORY_BYTES", 0)
    big, _ = pipeline.prepare(ds, image_size=41, cache_dir=tmp_path / "c")
    assert isinstance(big.images, np.memmap) and not big.images.flags.writeable
    monkeypatch.setattr(pipeline, "MAX_IN_MEMORY_BYTES", 1 << 30)
    in_memory, _ = pipeline.prepare(ds, image_size=41, cache_dir=tmp_path / "third")
    assert not isinstance(in_memory.images, np.memmap)
    np.testing.assert_array_equal(np.asarray(big.images), in_memory.images)
    for (xb, yb), (xm, ym) in zip(pipeline.batches(big, batch_size=6, seed=3, epoch=1),
                                  pipeline.batches(in_memory, batch_size=6, seed=3, epoch=1), strict=True):
        np.testing.assert_array_equal(xb, xm)
        np.testing.assert_array_equal(yb, ym)
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.endswith(".part")]


def test_subset_balanced_and_seeded(tmp_path):
    ds = fake_ds(tmp_path, n_train=100)
    train, test = pipeline.prepare(ds, train_subset=25, test_subset=10, subset_seed=7)
    assert np.bincount(train.labels).tolist() == [3] * 5 + [2] * 5
    assert np.bincount(test.labels).tolist() == [1] * 10
    index = pipeline.select_subset(ds.train_labels, 25, seed=7, stream=0)
    assert np.all(np.diff(index) > 0)
    np.testing.assert_array_equal(train.images[:, 0], pipeline.normalize(ds.train_images[index]))
    np.testing.assert_array_equal(index, pipeline.select_subset(ds.train_labels, 25, seed=7, stream=0))
    assert not np.array_equal(index, pipeline.select_subset(ds.train_labels, 25, seed=8, stream=0))


@pytest.mark.parametrize(("n", "match"), [(0, r"1\.\.20. Received: 0"), (21, "Received: 21")])
def test_subset_size_checked(tmp_path, n, match):
    with pytest.raises(UserError, match=match):
        pipeline.prepare(fake_ds(tmp_path), train_subset=n)


def test_subset_class_too_small():
    labels = np.array([0, 0, 0, 0, 1], np.uint8)
    with pytest.raises(UserError, match="needs 2 samples of class 1. Received: 1"):
        pipeline.select_subset(labels, 4, seed=0, stream=0)


def test_prepare_rejects_bad_size(tmp_path):
    with pytest.raises(UserError, match="image_size must be an integer >= 1. Received: 0"):
        pipeline.prepare(fake_ds(tmp_path), image_size=0)


def test_epoch_order():
    order = pipeline.epoch_order(1000, seed=5, epoch=2)
    np.testing.assert_array_equal(order, np.random.default_rng([5, 2]).permutation(1000))
    np.testing.assert_array_equal(np.sort(order), np.arange(1000))
    np.testing.assert_array_equal(order, pipeline.epoch_order(1000, seed=5, epoch=2))
    assert not np.array_equal(order, pipeline.epoch_order(1000, seed=5, epoch=3))
    assert not np.array_equal(order, pipeline.epoch_order(1000, seed=6, epoch=2))
    with pytest.raises(UserError, match="epoch=-1"):
        pipeline.epoch_order(10, seed=0, epoch=-1)


@pytest.mark.parametrize(("drop_last", "sizes"), [(True, [3, 3, 3]), (False, [3, 3, 3, 1])])
def test_batches(drop_last, sizes):
    split = pipeline.Split(images=np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1),
                           labels=np.arange(10, dtype=np.int64))
    got = list(pipeline.batches(split, batch_size=3, seed=1, epoch=4, drop_last=drop_last))
    assert [len(y) for _, y in got] == sizes
    order = pipeline.epoch_order(10, seed=1, epoch=4)
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]), order[:sum(sizes)])
    for x, y in got:
        np.testing.assert_array_equal(x[:, 0, 0, 0], y)


def test_batches_checks_batch_size():
    split = pipeline.Split(images=np.zeros((4, 1, 2, 2), np.float32), labels=np.zeros(4, np.int64))
    with pytest.raises(UserError, match="<= the split size 4 when drop_last. Received: 5"):
        next(pipeline.batches(split, batch_size=5, seed=0, epoch=0))
    assert len(list(pipeline.batches(split, batch_size=5, seed=0, epoch=0, drop_last=False))) == 1


def test_real_gzip_header_independence(tmp_path):
    """The checksum is on the contents: a re-gzipped file (other header, as Debian ships) verifies."""
    specs = make_fake(tmp_path / "d")
    path = tmp_path / "d" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), mtime=1591315200))
    assert fm.load_fashion_mnist(tmp_path / "d", specs=specs).train_labels.shape == (20,)
