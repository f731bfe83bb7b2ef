"""Folding an eval-mode BatchNorm into the layer before it (reference/fold.py): the folded layer computes what the
layer followed by BatchNorm's eval pass computes, in float64, on the cases porters report breaking."""

from __future__ import annotations

import numpy as np
import pytest

from bnparity.reference import batchnorm
from bnparity.reference.alexnet_numpy import conv2d, dense
from bnparity.reference.fold import fold, weight_growth

EPS = 1e-5


def grouped_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, groups: int) -> np.ndarray:
    """A grouped convolution as `groups` ordinary ones (OIHW with I = C/groups), stride 1, padding 1."""
    c_in, c_out = x.shape[1] // groups, w.shape[0] // groups
    return np.concatenate([conv2d(x[:, g * c_in:(g + 1) * c_in], w[g * c_out:(g + 1) * c_out],
                                  b[g * c_out:(g + 1) * c_out], stride=1, padding=1) for g in range(groups)], axis=1)


def _bn(rng: np.random.Generator, c: int, *, negative: bool = False, tiny_var: bool = False):
    gamma = rng.normal(1.0, 0.5, c) * (-1.0 if negative else 1.0)
    beta, mean = rng.normal(0.0, 0.5, c), rng.normal(0.0, 1.0, c)
    var = rng.uniform(0.5, 2.0, c)
    if tiny_var:
        var[0] = 1e-9  # a channel that was (nearly) constant in training: s_0 = γ_0/√(1e-9 + ε) is large
    return gamma, beta, mean, var


@pytest.mark.parametrize("case", ["bias", "no-bias", "negative-gamma", "tiny-variance"])
@pytest.mark.parametrize("groups", [1, 2, 6])  # 6: depthwise (one input channel per group)
def test_a_folded_convolution_is_the_convolution_then_batchnorm_eval(case, groups):
    rng = np.random.default_rng([groups, len(case)])
    c_in, c_out = 6, 6
    x = rng.standard_normal((3, c_in, 7, 7))
    w = rng.standard_normal((c_out, c_in // groups, 3, 3))
    b = None if case == "no-bias" else rng.standard_normal(c_out)
    gamma, beta, mean, var = _bn(rng, c_out, negative=case == "negative-gamma", tiny_var=case == "tiny-variance")
    z = grouped_conv(x, w, np.zeros(c_out) if b is None else b, groups)
    want = batchnorm.forward_eval(z, gamma, beta, mean, var, eps=EPS, axis=1)
    w2, b2 = fold(w, b, gamma, beta, mean, var, EPS)
    np.testing.assert_allclose(grouped_conv(x, w2, b2, groups), want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    assert weight_growth(w, gamma, var, EPS) == pytest.approx(np.abs(w2).max(), rel=1e-15)


def test_a_folded_dense_layer_and_nhwc_data():
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((16, 10)), rng.standard_normal((4, 10)), rng.standard_normal(4)
    gamma, beta, mean, var = _bn(rng, 4, negative=True)
    w2, b2 = fold(w, b, gamma, beta, mean, var, EPS)
    want = batchnorm.forward_eval(dense(x, w, b), gamma, beta, mean, var, eps=EPS, axis=1)
    np.testing.assert_allclose(dense(x, w2, b2), want, rtol=1e-13, atol=1e-13)
    # channels-last activations are the same numbers moved: folding does not depend on the activations' layout
    z = np.moveaxis(conv2d(rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3)), b, stride=1,
                           padding=0), 1, -1)
    np.testing.assert_allclose(batchnorm.forward_eval(z, gamma, beta, mean, var, eps=EPS, axis=-1),
                               np.moveaxis(batchnorm.forward_eval(np.moveaxis(z, -1, 1), gamma, beta, mean, var,
                                                                  eps=EPS, axis=1), 1, -1), rtol=1e-14)


def test_the_tiny_variance_channel_grows_the_folded_weights_and_a_wrong_fold_is_caught():
    rng = np.random.default_rng(9)
    w = rng.standard_normal((4, 3, 3, 3))
    gamma, beta, mean, var = _bn(rng, 4, tiny_var=True)
    assert weight_growth(w, gamma, var, EPS) > 100 * np.abs(w).max()  # |s_0| ≈ 1/√(1e-5 + 1e-9) ≈ 316
    w2, b2 = fold(w, None, gamma, beta, mean, var, EPS)
    wrong_b = (b2 - beta) / (gamma / np.sqrt(var + EPS)) + beta  # the bias a fold that forgets to scale (b − μ) gets
    x = rng.standard_normal((2, 3, 6, 6))
    want = batchnorm.forward_eval(conv2d(x, w, np.zeros(4), stride=1, padding=0), gamma, beta, mean, var, eps=EPS,
                                  axis=1)
    assert np.abs(conv2d(x, w2, wrong_b, stride=1, padding=0) - want).max() > 1e-2
    with pytest.raises(ValueError, match="one value per output channel"):
        fold(w, None, gamma[:3], beta, mean, var, EPS)
