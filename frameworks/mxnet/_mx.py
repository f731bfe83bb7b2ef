"""The one place MXNet is imported: NumPy's removed `np.bool` alias restored first, as MXNet 1.9.1 needs it."""

import numpy as np

if "bool" not in vars(np):
    # NumPy 1.24 removed the `np.bool` alias; mxnet 1.9.1 still uses it at import time and in its dtype tables.
    np.bool = bool

import mxnet as mx  # noqa: E402  (must come after the shim above)
from mxnet import autograd, gluon, nd  # noqa: E402

__all__ = ["mx", "nd", "autograd", "gluon"]
