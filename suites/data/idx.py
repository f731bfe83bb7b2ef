"""Read and write IDX files (the MNIST format), gzip-compressed or raw, with strict header checks.

Format (http://yann.lecun.com/exdb/mnist/): a big-endian header of 4 magic bytes ``0, 0, type, ndim``,
then ``ndim`` big-endian uint32 dimensions, then the payload in C order. Fashion-MNIST images have magic
2051 (``0x00000803``: uint8, 3 dims) and labels 2049 (``0x00000801``: uint8, 1 dim).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..output import write_output

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# IDX type byte -> numpy dtype (multi-byte types are big-endian in the file)
_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def is_gzip(path: Path) -> bool:
    """Whether `path` is read as gzip: decided by the name (``.gz``), as for the official files."""
    return path.name.endswith(".gz")


def read_bytes(path: Path) -> bytes:
    """The uncompressed contents of an IDX file (``.gz`` is decompressed).

    Raises:
        UserError: the file cannot be read, or its gzip stream is corrupt or truncated.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read IDX file {path}: {e.strerror or e}") from e
    if not is_gzip(path):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"corrupt or truncated gzip file {path}: {e}") from e


def parse_idx(data: bytes, *, name: str, expected_magic: int | None = None) -> np.ndarray:
    """Parse the uncompressed bytes of an IDX file into an array (native byte order).

    Args:
        data: the uncompressed file contents.
        name: the file name used in error messages.
        expected_magic: when given, the magic number the file must have (2051 images, 2049 labels).

    Returns:
        An array with the header's dimensions and dtype.

    Raises:
        UserError: bad magic, unknown type, or a length that is not exactly header + payload.
    """
    if len(data) < 4:
        raise UserError(f"IDX file {name} must have a 4-byte magic number. Received: {len(data)} bytes")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    magic = struct.unpack(">I", data[:4])[0]
    if expected_magic is not None and magic != expected_magic:
        raise UserError(f"IDX file {name} must have magic number {expected_magic}. Received: {magic}")
    if zero != 0 or type_code not in _TYPES or ndim == 0:
        raise UserError(f"IDX file {name} has an invalid magic number {magic} (bytes {data[:4].hex()})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"IDX file {name} is truncated: header needs {header} bytes, file has {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _TYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long"
        raise UserError(f"IDX file {name} is {what}: dims {'x'.join(map(str, shape))} need "
                        f"{expected} bytes (header + payload). Received: {len(data)} bytes")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: Path, *, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into an array; see `parse_idx` for the checks."""
    return parse_idx(read_bytes(path), name=str(path), expected_magic=expected_magic)


def idx_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The IDX header for an array of `dtype` (uint8, int8, int16, int32, float32, float64) and `shape`."""
    dtype = np.dtype(dtype)
    code = next((c for c, t in _TYPES.items() if dtype.kind == t.kind and dtype.itemsize == t.itemsize), None)
    if code is None:
        raise ValueError(f"IDX supports uint8, int8, int16, int32, float32, float64. Received: {dtype}")
    if not 1 <= len(shape) <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions. Received: {len(shape)}")
    return struct.pack(f">HBB{len(shape)}I", 0, code, len(shape), *shape)


def encode_idx(array: np.ndarray) -> bytes:
    """The uncompressed IDX bytes of `array` (header + big-endian payload in C order)."""
    array = np.asarray(array)
    header = idx_header(array.dtype, array.shape)
    return header + np.ascontiguousarray(array, dtype=_TYPES[header[2]]).tobytes()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzip-compressed when the name ends in ``.gz``; atomic (temp + rename).

    Args:
        path: the destination file.
        array: the data; the IDX type follows its dtype (uint8 gives the MNIST magic 2051/2049).
    """
    path = Path(path)
    data = encode_idx(array)
    if is_gzip(path):
        data = gzip.compress(data, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_output(path, data)
