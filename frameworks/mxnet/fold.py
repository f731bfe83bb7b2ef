"""Folding an eval-mode BatchNorm into the convolution or dense layer before it, in MXNet (interface:
frameworks/folding.py).

builtin: none that can be verified. MXNet 1.9.1's oneDNN subgraph backend does fuse a convolution and the BatchNorm
after it: `block.optimize_for(x, backend="MKLDNN")` on a hybridized Conv2D + BatchNorm replaces them by one
`_sg_mkldnn_conv` node with attribute with_bn=true (measured here: its output matches the unfolded one to 2.4e-7 in
float32). But the fold happens inside that operator's C++ kernel: the block's parameters, `export()`'s .params file
and the symbol keep the unfolded W, b, γ, β, μ, σ² (measured), so the folded weights cannot be read back, and a
Dense + BatchNorm is not fused at all. Hence no builtin here (`Folds.lacks`).

scratch: the fold in mx.nd ops (s = γ/√(σ² + ε)), the folded layer run with mx.nd.Convolution (num_group) or
mx.nd.FullyConnected; the unfolded one with the same op and mx.nd.BatchNorm(use_global_stats=True) (eval).

What MXNet's CPU operators cannot compute is Unsupported, with the operator's own message: any layout but NCHW
(convolution-inl.h: "Only support NCW, NCHW and NCDHW layout"), float16 convolution ("FP16 gemm on cpu not
implemented!", linalg_impl.h:166) and float16 FullyConnected ("float16 fully connected layer is currently only
supported by CuDNN version", fully_connected-inl.h:425).
"""

from __future__ import annotations

import numpy as np

from bnparity.frameworks import folding
from bnparity.frameworks.base import Unsupported
from bnparity.reference.alexnet import AlexNetSpec, param_shapes
from bnparity.reference.fold import bn_pairs, folded_spec

from ._mx import mx, nd
from .alexnet import from_canonical, to_canonical
from .convert import framework_dtype, to_numpy

_NO_BUILTIN = ("mxnet: no readable builtin fold: the oneDNN subgraph backend (optimize_for backend='MKLDNN') fuses "
               "Conv+BatchNorm into _sg_mkldnn_conv(with_bn=true) and folds inside the C++ operator, keeping the "
               "unfolded parameters (and Dense+BatchNorm unfused)")


def _f64(a: nd.NDArray) -> np.ndarray:
    return to_numpy(a).astype(np.float64)


def _operator_message(e: Exception) -> str:
    """The one line of an MXNetError that says why (its 'Check failed' or 'MXNetError:' line)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in lines:
        if "Check failed" in line:
            return line[line.index("Check failed"):]
    for line in reversed(lines):
        if line.startswith("MXNetError:"):
            return line.removeprefix("MXNetError:").strip()
    return lines[0] if lines else type(e).__name__


class Folds(folding.Folds):
    """bnparity's fold in mx.nd ops (MXNet has no readable builtin one: module docstring)."""

    framework = "mxnet"
    impls = ("scratch",)
    lacks = {"builtin": _NO_BUILTIN}

    @staticmethod
    def _fold(weight: nd.NDArray, bias: nd.NDArray | None, gamma: nd.NDArray, beta: nd.NDArray, mean: nd.NDArray,
              var: nd.NDArray, eps: float) -> tuple[nd.NDArray, nd.NDArray]:
        """(W', b') in mx.nd ops, output channel on axis 0 (OIHW or (out, in)); the scratch fold."""
        s = gamma / nd.sqrt(var + eps)  # s_c = γ_c / √(σ²_c + ε)
        b = nd.zeros_like(mean) if bias is None else bias
        return nd.broadcast_mul(weight, s.reshape((-1,) + (1,) * (weight.ndim - 1))), (b - mean) * s + beta

    @staticmethod
    def _layer(kind: str, x: nd.NDArray, weight: nd.NDArray, bias: nd.NDArray | None, *, stride: int, padding: int,
               groups: int) -> nd.NDArray:
        out = weight.shape[0]
        if kind == "conv":
            k = weight.shape[2:]
            return nd.Convolution(x, weight, bias, kernel=k, stride=(stride, stride), pad=(padding, padding),
                                  num_filter=out, num_group=groups, no_bias=bias is None, layout="NCHW")
        return nd.FullyConnected(x, weight, bias, num_hidden=out, no_bias=bias is None)

    def fold_layer(self, case: folding.FoldCase, impl: str) -> folding.FoldOutput:
        folding.check_impl(self, impl)
        if case.layout == "NHWC":
            raise Unsupported("mxnet: Convolution on CPU takes NCHW only (convolution-inl.h: 'Only support NCW, "
                              "NCHW and NCDHW layout'; oneDNN float32: 'could not create a descriptor')")
        dtype = framework_dtype(np.dtype(case.dtype))

        def arr(a: np.ndarray | None) -> nd.NDArray | None:
            return None if a is None else nd.array(a, dtype=dtype)

        x, w, b = arr(case.x), arr(case.weight), arr(case.bias)
        gamma, beta, mean, var = (arr(v) for v in (case.gamma, case.beta, case.running_mean, case.running_var))
        kw = dict(stride=case.stride, padding=case.padding, groups=case.groups)
        try:  # each result waited for: MXNet's engine raises an operator's error at the next synchronization
            z = self._layer(case.kind, x, w, b, **kw)
            z.wait_to_read()
            y_unfolded = nd.BatchNorm(z, gamma, beta, mean, var, eps=case.eps, use_global_stats=True,
                                      fix_gamma=False, axis=1)
            y_unfolded.wait_to_read()
            w2, b2 = self._fold(w, b, gamma, beta, mean, var, case.eps)
            y_folded = self._layer(case.kind, x, w2, b2, **kw)
            y_folded.wait_to_read()
        except mx.base.MXNetError as e:
            raise Unsupported(f"mxnet: {_operator_message(e)}") from None
        return folding.FoldOutput(weight=_f64(w2), bias=_f64(b2), y_folded=_f64(y_folded),
                                  y_unfolded=_f64(y_unfolded))

    def fold_alexnet(self, spec: AlexNetSpec, params: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
        model = from_canonical(spec, params, dtype=np.dtype(dtype))
        keep = param_shapes(folded_spec(spec))  # the BN-free network's arrays: every layer's but BatchNorm's
        folded = {name: value.astype(np.float64) for name, value in to_canonical(spec, model).items() if name in keep}
        p = model.by_name()
        for affine, norm in bn_pairs(spec):
            weight, bias = self._fold(*(p[f"{affine}.{k}"].data() for k in ("weight", "bias")),
                                      *(p[f"{norm}.{k}"].data() for k in ("gamma", "beta", "running_mean",
                                                                         "running_var")), spec.bn.eps)
            folded[f"{affine}.weight"], folded[f"{affine}.bias"] = _f64(weight), _f64(bias)
        return folded

    def logits(self, spec: AlexNetSpec, params: dict[str, np.ndarray], x: np.ndarray, dtype: str) -> np.ndarray:
        model = from_canonical(spec, params, dtype=np.dtype(dtype))
        return _f64(model(nd.array(x, dtype=framework_dtype(np.dtype(dtype)))))  # outside autograd: eval mode
