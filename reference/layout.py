"""Where the channel axis is, and how a per-channel vector broadcasts: the layout facts every normalization uses."""

from __future__ import annotations

import numpy as np


def channel_axis(ndim: int, axis: int) -> int:
    """The channel axis as a non-negative index. Raises ValueError for ranks outside 2-5."""
    if not 2 <= ndim <= 5:
        raise ValueError(f"expected a 2-D to 5-D input. Received: x.ndim={ndim}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}-D input")
    return axis % ndim


def per_channel(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Reshape a (C,) vector so that it broadcasts along `axis` of an ndim-D input."""
    shape = [1] * ndim
    shape[channel_axis(ndim, axis)] = -1
    return np.asarray(v, dtype=np.float64).reshape(shape)
