"""Folding an eval-mode BatchNorm into the Conv2d or Linear before it, in PyTorch (interface: frameworks/folding.py).

builtin: torch.nn.utils.fusion.fuse_conv_bn_eval and fuse_linear_bn_eval on real nn.Conv2d / nn.Linear and
nn.BatchNorm2d / nn.BatchNorm1d modules in eval mode. They compute (torch/nn/utils/fusion.py:91-103, 189-192)
    rsqrt = torch.rsqrt(running_var + eps);  W' = W · (γ · rsqrt);  b' = (b − μ) · rsqrt · γ + β
in the BatchNorm's dtype, then cast to the layer's (here both are the case's dtype), and refuse a module in
training mode ("Fusion only for eval!", fusion.py:38-39).

scratch: the same fold in torch tensor ops (s = γ/√(σ² + ε)), the folded layer run with
torch.nn.functional.conv2d (groups) or F.linear.

Layout NHWC is the channels_last memory format of the input and the modules (torch.nn.Module.to(memory_format=)):
the tensors keep their NCHW shape, so what comes back is canonical as it is. float16 runs on CPU (torch 2.13 has
CPU half kernels for conv2d, linear and batch_norm).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import fusion

from bnparity.frameworks import folding
from bnparity.frameworks.base import Unsupported
from bnparity.reference.alexnet import AlexNetSpec, param_shapes
from bnparity.reference.fold import bn_pairs, folded_spec

from .alexnet import from_canonical, to_canonical
from .convert import framework_dtype, to_numpy, to_tensor


def _f64(t: torch.Tensor) -> np.ndarray:
    return to_numpy(t).astype(np.float64)


class Folds(folding.Folds):
    """PyTorch's own fold (torch.nn.utils.fusion) and bnparity's in torch ops."""

    framework = "torch"
    impls = ("builtin", "scratch")
    lacks: dict[str, str] = {}

    @staticmethod
    def _fold(weight: torch.Tensor, bias: torch.Tensor | None, gamma: torch.Tensor, beta: torch.Tensor,
              mean: torch.Tensor, var: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(W', b') in torch ops, output channel on axis 0 (OIHW or (out, in)); the scratch fold."""
        s = gamma / torch.sqrt(var + eps)  # s_c = γ_c / √(σ²_c + ε)
        b = torch.zeros_like(mean) if bias is None else bias
        return weight * s.reshape((-1,) + (1,) * (weight.dim() - 1)), (b - mean) * s + beta

    def _modules(self, case: folding.FoldCase, dtype: torch.dtype) -> tuple[nn.Module, nn.Module]:
        """The case's layer and its BatchNorm as real torch modules, in eval mode, holding the case's arrays."""
        out = case.weight.shape[0]
        if case.kind == "conv":
            layer: nn.Module = nn.Conv2d(case.x.shape[1], out, case.weight.shape[2], stride=case.stride,
                                         padding=case.padding, groups=case.groups, bias=case.has_bias)
            norm: nn.Module = nn.BatchNorm2d(out, eps=case.eps)
        else:
            layer, norm = nn.Linear(case.x.shape[1], out, bias=case.has_bias), nn.BatchNorm1d(out, eps=case.eps)
        layer, norm = layer.to(dtype).eval(), norm.to(dtype).eval()
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(case.weight))
            if case.has_bias:
                layer.bias.copy_(torch.from_numpy(case.bias))
            for name, value in (("weight", case.gamma), ("bias", case.beta), ("running_mean", case.running_mean),
                                ("running_var", case.running_var)):
                getattr(norm, name).copy_(torch.from_numpy(value))
        if case.layout == "NHWC":
            layer, norm = layer.to(memory_format=torch.channels_last), norm.to(memory_format=torch.channels_last)
        return layer, norm

    def fold_layer(self, case: folding.FoldCase, impl: str) -> folding.FoldOutput:
        folding.check_impl(self, impl)
        dtype = np.dtype(case.dtype)
        tdtype = framework_dtype(dtype)
        x = to_tensor(case.x, dtype)
        if case.layout == "NHWC":
            x = x.contiguous(memory_format=torch.channels_last)
        layer, norm = self._modules(case, tdtype)
        with torch.no_grad():
            y_unfolded = norm(layer(x))
            if impl == "builtin":
                fused = (fusion.fuse_conv_bn_eval(layer, norm) if case.kind == "conv"
                         else fusion.fuse_linear_bn_eval(layer, norm))
                weight, bias = fused.weight, fused.bias
                y_folded = fused(x)
            else:
                weight, bias = self._fold(layer.weight, layer.bias, norm.weight, norm.bias, norm.running_mean,
                                          norm.running_var, case.eps)
                y_folded = (F.conv2d(x, weight, bias, stride=case.stride, padding=case.padding, groups=case.groups)
                            if case.kind == "conv" else F.linear(x, weight, bias))
        if case.layout == "NHWC" and not y_folded.is_contiguous(memory_format=torch.channels_last):
            raise Unsupported(f"torch: the folded convolution did not keep the channels_last format "
                              f"({case.name}); the case would not test NHWC")
        return folding.FoldOutput(weight=_f64(weight), bias=_f64(bias), y_folded=_f64(y_folded),
                                  y_unfolded=_f64(y_unfolded))

    def fold_alexnet(self, spec: AlexNetSpec, params: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
        model = from_canonical(spec, params, dtype=np.dtype(dtype)).eval()
        keep = param_shapes(folded_spec(spec))  # the BN-free network's arrays: every layer's but BatchNorm's
        folded = {name: value.astype(np.float64) for name, value in to_canonical(spec, model).items() if name in keep}
        with torch.no_grad():
            for affine, norm in bn_pairs(spec):
                layer, bn = getattr(model.layers, affine), getattr(model.layers, norm)
                if self.alexnet_impl == "builtin":
                    fuse = fusion.fuse_conv_bn_eval if isinstance(layer, nn.Conv2d) else fusion.fuse_linear_bn_eval
                    fused = fuse(layer, bn)
                    weight, bias = fused.weight, fused.bias
                else:
                    weight, bias = self._fold(layer.weight, layer.bias, bn.weight, bn.bias, bn.running_mean,
                                              bn.running_var, spec.bn.eps)
                folded[f"{affine}.weight"], folded[f"{affine}.bias"] = _f64(weight), _f64(bias)
        return folded

    def logits(self, spec: AlexNetSpec, params: dict[str, np.ndarray], x: np.ndarray, dtype: str) -> np.ndarray:
        model = from_canonical(spec, params, dtype=np.dtype(dtype)).eval()
        with torch.no_grad():
            return _f64(model(to_tensor(x, np.dtype(dtype))))

