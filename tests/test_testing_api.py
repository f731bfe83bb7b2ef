"""bnparity.testing from a user's side: their own layer objects against the reference and against their port, inside
pytest and from a plain `python -c`; a wrong port fails with a message that names the convention."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import require

from bnparity.testing import assert_layer_parity, compare_layer

torch = pytest.importorskip("torch")


def _trained_bn(momentum: float | None = 0.1, **kwargs: object) -> torch.nn.BatchNorm2d:
    """A BatchNorm2d whose state is not the initial one: γ, β set, two training batches seen."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(4, momentum=momentum, **kwargs)
    with torch.no_grad():
        if bn.affine:
            bn.weight.copy_(torch.tensor([1.5, 0.5, -1.0, 2.0]))
            bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        for _ in range(2):
            bn(torch.randn(8, 4, 5, 5) * 2 + 1)
    return bn


def _x(shape: tuple[int, ...] = (8, 4, 5, 5), seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 3 + 2).astype(np.float32)


@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False}, {"eps": 1e-3, "momentum": 0.3},
                                    {"track_running_stats": False}])
def test_a_users_torch_batchnorm_matches_the_reference_configured_as_it_is(kwargs):
    bn = _trained_bn(**kwargs)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    result = assert_layer_parity(bn, torch.from_numpy(_x()), steps=2)
    assert result.passed and "every quantity agrees" in result.message
    assert {c.quantity for c in result.comparisons} >= {"y", "dx", "y_eval"}
    after = bn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the user's layer is not modified


def test_a_wrong_reference_fails_with_a_torch_testing_style_message():
    bn = _trained_bn()
    result = compare_layer(bn, _x(), reference=compare_layer(bn, _x()).spec.replace(eps=1e-2))
    assert not result.passed
    assert "does not agree with the given reference spec" in result.message and "elements" in result.message
    with pytest.raises(AssertionError, match="greatest absolute difference"):
        assert_layer_parity(bn, _x(), reference=result.spec)


def test_not_a_normalization_layer_is_a_type_error_naming_what_is_supported():
    with pytest.raises(TypeError, match="BatchNorm"):
        compare_layer(torch.nn.Conv2d(4, 4, 3), _x())
    with pytest.raises(TypeError, match="Received: builtins.object"):
        compare_layer(object(), _x())


def test_a_port_with_the_wrong_momentum_fails_and_says_which_convention_differs():
    flax = pytest.importorskip("flax.linen")
    import jax

    bn = _trained_bn()
    x = _x()
    nhwc = np.moveaxis(x, 1, -1)

    def port(momentum: float) -> tuple[object, dict]:
        layer = flax.BatchNorm(use_running_average=False, momentum=momentum, epsilon=1e-5, use_fast_variance=False)
        variables = layer.init(jax.random.PRNGKey(0), nhwc)
        state = {k: v.detach().numpy() for k, v in bn.state_dict().items()}
        variables = {"params": {"scale": state["weight"], "bias": state["bias"]},
                     "batch_stats": {"mean": state["running_mean"],
                                     "var": state["running_var"]}}  # a port that copies the state
        return layer, variables

    wrong, wrong_vars = port(0.1)  # PyTorch's number, but Flax's momentum weighs the OLD value
    with pytest.raises(AssertionError) as failure:
        assert_layer_parity(bn, x, other=wrong, other_variables=wrong_vars)
    text = str(failure.value)
    assert "running_mean" in text and "momentum:" in text and "DIFFERENT: the new batch weighs 0.1 vs 0.9" in text
    right, right_vars = port(0.9)
    result = compare_layer(bn, x, other=right, other_variables=right_vars)
    assert any(line.startswith("momentum:") and "equal (the new batch weighs 0.1)" in line
               for line in result.conventions)
    assert any(line.startswith("axis:") and "layouts differ" in line for line in result.conventions)
    # what no Flax argument can change: its running variance is the biased σ² (PyTorch's is unbiased), and the eval
    # output that normalizes with it
    assert {c.quantity for c in result.failures} == {"running_var", "y_eval"}
    assert any(line.startswith("running_var:") and "DIFFERENT" in line for line in result.conventions)


def test_the_one_import_line_works_from_a_plain_python_c():
    code = ("import numpy as np, torch; from bnparity.testing import compare_layer, assert_layer_parity; "
            "bn = torch.nn.BatchNorm1d(3); r = assert_layer_parity(bn, np.random.default_rng(0)"
            ".standard_normal((16, 3)).astype('float32')); print(r.passed, len(r.comparisons))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "True" and int(out.stdout.split()[1]) >= 5


def test_a_gluon_block_and_its_torch_original_agree_when_the_momentum_is_converted():
    require("mxnet")
    from bnparity.frameworks.mxnet._mx import mx  # (after NumPy's np.bool shim; tests may import a framework)

    original = _trained_bn()
    state = {k: v.detach().numpy() for k, v in original.state_dict().items()}
    block = mx.gluon.nn.BatchNorm(in_channels=4, momentum=0.9)  # MXNet's 0.9 on the old value = PyTorch's 0.1
    block.initialize()
    for name, value in (("gamma", "weight"), ("beta", "bias"), ("running_mean", "running_mean"),
                        ("running_var", "running_var")):
        getattr(block, name).set_data(mx.nd.array(state[value]))
    result = compare_layer(original, _x(), other=block)
    assert any(line.startswith("momentum:") and "equal" in line for line in result.conventions)
    assert {c.quantity for c in result.failures} <= {"running_var", "y_eval"}  # MXNet stores the biased σ²
    assert compare_layer(block, _x()).passed  # and the block is the reference's, configured as it is


def test_eval_mode_compares_the_eval_pass_alone_with_the_layers_current_statistics():
    bn = _trained_bn()
    result = assert_layer_parity(bn, _x(), mode="eval")
    assert [c.quantity for c in result.comparisons] == ["y_eval"]
    stale = result.spec.replace(init_running_mean=0.0)  # a reference that ignores the layer's statistics
    assert not compare_layer(bn, _x(), mode="eval", reference=stale).passed
    with pytest.raises(ValueError, match="mode must be one of"):
        compare_layer(bn, _x(), mode="inference")


def test_an_inference_port_that_copies_the_state_agrees_in_eval_mode():
    flax = pytest.importorskip("flax.linen")
    import jax

    bn = _trained_bn()
    x = _x()
    layer = flax.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, use_fast_variance=False)
    layer.init(jax.random.PRNGKey(0), np.moveaxis(x, 1, -1))
    state = {k: v.detach().numpy() for k, v in bn.state_dict().items()}
    variables = {"params": {"scale": state["weight"], "bias": state["bias"]},
                 "batch_stats": {"mean": state["running_mean"], "var": state["running_var"]}}
    assert assert_layer_parity(bn, x, other=layer, other_variables=variables, mode="eval").passed


def test_two_layers_are_judged_with_both_sides_rounding():
    """Against the float64 reference only the layer rounds; against another float32 layer both do: the allowed error
    is the sum of the two (twice the one-sided tolerance), and a layer agrees with its own copy."""
    import copy

    bn = _trained_bn()
    alone = compare_layer(bn, _x())
    pair = compare_layer(bn, _x(), other=copy.deepcopy(bn))
    assert pair.passed and all(line.endswith("equal") or "equal (" in line for line in pair.conventions)
    by_quantity = {c.quantity: c for c in alone.comparisons}
    for c in pair.comparisons:
        assert c.rtol == pytest.approx(2 * by_quantity[c.quantity].rtol)
