"""NumPy <-> MXNet: dtypes, contexts and NDArrays, including bfloat16 (ml_dtypes in NumPy, MXNet's own type).

Every framework folder's convert.py has `framework_dtype`, `framework_device`, `to_tensor` and `to_numpy`, under the
same names. `_param_dtype` is MXNet's alone (gluon's BatchNorm parameters for reduced-precision inputs); batchnorm.py
uses it. Shared by the other normalization modules: `_operator_eps` (ε as the LayerNorm, GroupNorm and InstanceNorm
operators store it), `_check_kernel_dtype` (the dtypes an operator has a CPU kernel for), `_mean_and_variance` (μ
and σ² in mx.nd ops, for the scratch layers) and the sessions of the layers without running statistics,
`_BlockSession` (a gluon block) and `_ScratchSession` (a function of x, γ and β).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bnparity.frameworks.base import LayerSession, StepResult, Unsupported
from bnparity.reference.spec import BNSpec, VarianceAlgorithm

from ._mx import autograd, gluon, mx, nd

# MXNet 1.9.1 spells bfloat16 as this structured NumPy dtype (mxnet/ndarray/ndarray.py, _DTYPE_NP_TO_MX);
# its values are the upper 16 bits of a float32, the same bits as ml_dtypes.bfloat16.
MX_BFLOAT16 = np.dtype([("bfloat16", np.uint16)])
_MX_DTYPES = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
              "float16": np.dtype(np.float16), "bfloat16": MX_BFLOAT16}
# gluon's BatchNorm keeps γ, β and the moving statistics in float32 for reduced-precision inputs
# (batch_norm.cc: BatchNormType; gluon/nn/basic_layers.py: _BatchNorm.cast maps float16 to float32).
_PARAM_DTYPES = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
                 "float16": np.dtype(np.float32), "bfloat16": np.dtype(np.float32)}


def framework_momentum(spec: BNSpec) -> float:
    """MXNet's momentum (the weight of the *old* running value) for `spec`, as the operator stores it.

    The BatchNorm operator parses `momentum` as a float32 (batch_norm-inl.h: BatchNormParam `float momentum`),
    so the value is rounded to float32 whatever the data's dtype.
    """
    return float(np.float32(1.0 - spec.new_weight))


def framework_dtype(dtype: np.dtype) -> np.dtype:
    """The framework's dtype for a NumPy float dtype. Raises Unsupported for other dtypes.

    MXNet names its dtypes with NumPy dtypes; bfloat16 is MXNet's own structured dtype (MX_BFLOAT16).

    Args:
        dtype: a NumPy dtype (float64, float32, float16 or ml_dtypes' bfloat16).
    """
    name = np.dtype(dtype).name
    try:
        return _MX_DTYPES[name]
    except KeyError:
        raise Unsupported(f"mxnet: expected a float64, float32, float16 or bfloat16 dtype. Received: {name}") \
            from None


def _param_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype of a BatchNorm layer's γ, β and moving statistics for inputs of `dtype`."""
    framework_dtype(dtype)
    return _PARAM_DTYPES[np.dtype(dtype).name]


def framework_device(device: str) -> mx.Context:
    """The framework's device for 'cpu' or 'gpu'. Raises ValueError otherwise."""
    if device == "cpu":
        return mx.cpu()
    if device in ("gpu", "cuda"):
        return mx.gpu(0)
    raise ValueError(f"device must be 'cpu' or 'gpu'. Received: {device!r}")


def check_device(device: str) -> str | None:
    """None when `device` ('cpu', 'gpu' or 'cuda') can be used here, else why not, in one line. Raises ValueError for
    another name."""
    if framework_device(device).device_type == "cpu":
        return None
    if not mx.runtime.Features().is_enabled("CUDA"):
        return (f"MXNet {mx.__version__} is its CPU build (CUDA off in mx.runtime.Features); its CUDA build "
                "mxnet-cu112 needs the system's CUDA 11.2 and cuDNN 8: see constraints-gpu.txt")
    if mx.context.num_gpus() == 0:
        return f"MXNet {mx.__version__} (a CUDA build) sees no GPU (mx.context.num_gpus() is 0)"
    return None


def to_tensor(a: np.ndarray, dtype: np.dtype) -> nd.NDArray:
    """A new framework array holding `a` rounded to `dtype` (exact when `a` already has that dtype).

    Args:
        a: values (any float dtype).
        dtype: the NumPy dtype of the result (bfloat16 becomes MXNet's own bfloat16).
    """
    target = framework_dtype(dtype)
    if target == MX_BFLOAT16:
        # Round to nearest in NumPy first: MXNet's float32 -> bfloat16 cast truncates. The values are then
        # exact bfloat16 numbers, so the float32 hop and MXNet's cast change nothing.
        rounded = np.asarray(a, dtype=np.float64).astype(np.dtype(dtype)).astype(np.float32)
        return _dense(rounded, np.dtype(np.float32)).astype(MX_BFLOAT16)
    return _dense(np.asarray(a, dtype=np.float64).astype(target), target)


def _dense(values: np.ndarray, dtype: np.dtype) -> nd.NDArray:
    # nd.ndarray.array is the dense constructor behind nd.array, without nd.array's sparse-input probe
    # (which trips a SciPy deprecation warning on every call).
    return nd.ndarray.array(np.ascontiguousarray(values), dtype=dtype)


def to_numpy(t: nd.NDArray) -> np.ndarray:
    """A NumPy copy of `t`; bfloat16 comes back as float32 (exact)."""
    if t.dtype == MX_BFLOAT16:
        t = t.astype(np.float32)
    return t.asnumpy()


def _operator_eps(eps: float) -> float:
    """ε as MXNet's LayerNorm, GroupNorm and InstanceNorm operators use it: rounded to float32 whatever the data's
    dtype (their parameter is a C `float`: mxnet/ndarray/gen_op.py:1469 'eps : float, optional,
    default=9.99999975e-06'; BatchNorm's is a double)."""
    return float(np.float32(eps))


def _check_kernel_dtype(layer: str, dtype: np.dtype, accepted: tuple[str, ...]) -> None:
    """Raise Unsupported, naming `layer`, unless its operator has a CPU kernel for `dtype` (one of `accepted`)."""
    framework_dtype(dtype)  # raises Unsupported for a dtype MXNet has no float type for
    name = np.dtype(dtype).name
    if name not in accepted:
        raise Unsupported(f"mxnet: {layer} has no {name} kernel on CPU (it accepts {', '.join(accepted)})")


def _mean_and_variance(x: nd.NDArray, axes: tuple[int, ...],
                       variance: VarianceAlgorithm) -> tuple[nd.NDArray, nd.NDArray]:
    """(μ, σ²) of x over `axes`, kept as size-1 axes; σ² biased, by the spec's algorithm.

    "two-pass": σ² = mean((x − μ)²); "fast": σ² = max(0, mean(x²) − μ²), equal in exact arithmetic.
    """
    mu = nd.mean(x, axis=axes, keepdims=True)  # μ
    if variance == "two-pass":
        var = nd.mean(nd.square(nd.broadcast_sub(x, mu)), axis=axes, keepdims=True)  # σ² = mean((x − μ)²)
    else:
        mean_sq = nd.mean(nd.square(x), axis=axes, keepdims=True)  # mean(x²)
        var = nd.maximum(mean_sq - nd.square(mu), 0.0)  # σ² = E[x²] − E[x]², clipped at 0 (rounding)
    return mu, var


def _learned_grad(param: gluon.Parameter) -> np.ndarray | None:
    """A gluon parameter's gradient, or None when it is not learned (grad_req 'null')."""
    return None if param.grad_req == "null" else to_numpy(param.grad())


class _BlockSession(LayerSession):
    """A gluon normalization block without running statistics (LayerNorm, GroupNorm, InstanceNorm).

    A training step is a forward under autograd.record() and a backward with dy; eval is a forward outside
    record(), which computes the same thing (the statistics are always the input's own). dγ and dβ are read
    only for the parameters the block learns (gamma, beta with grad_req 'write').
    """

    def __init__(self, block: gluon.HybridBlock, dtype: np.dtype) -> None:
        self.block, self.dtype = block, dtype

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        xt = to_tensor(x, self.dtype)
        xt.attach_grad()
        with autograd.record():
            y = self.block(xt)
        y.backward(to_tensor(dy, self.dtype))
        return StepResult(y=to_numpy(y), dx=to_numpy(xt.grad), dgamma=_learned_grad(self.block.gamma),
                          dbeta=_learned_grad(self.block.beta))

    def running_stats(self) -> None:
        return None

    def eval(self, x: np.ndarray) -> np.ndarray:
        return to_numpy(self.block(to_tensor(x, self.dtype)))


class _ScratchSession(LayerSession):
    """A scratch layer y = forward(x, γ, β) without running statistics, γ and β NDArrays (None: the layer has
    none) whose gradients mx.autograd computes."""

    def __init__(self, forward: Callable[..., nd.NDArray], *, dtype: np.dtype, gamma: np.ndarray | None,
                 beta: np.ndarray | None) -> None:
        self.forward, self.dtype = forward, dtype
        self.gamma = None if gamma is None else to_tensor(gamma, dtype)
        self.beta = None if beta is None else to_tensor(beta, dtype)
        for param in (self.gamma, self.beta):
            if param is not None:
                param.attach_grad()  # grad_req 'write': each step overwrites the gradient

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        xt = to_tensor(x, self.dtype)
        xt.attach_grad()
        with autograd.record():
            y = self.forward(xt, self.gamma, self.beta)
        y.backward(to_tensor(dy, self.dtype))
        return StepResult(y=to_numpy(y), dx=to_numpy(xt.grad),
                          dgamma=None if self.gamma is None else to_numpy(self.gamma.grad),
                          dbeta=None if self.beta is None else to_numpy(self.beta.grad))

    def running_stats(self) -> None:
        return None

    def eval(self, x: np.ndarray) -> np.ndarray:
        return to_numpy(self.forward(to_tensor(x, self.dtype), self.gamma, self.beta))
