"""frameworks/torch/user_layers.py: a user's own torch.nn normalization module, read.

Each module is built by hand with non-default settings (and, where it has running statistics, trained a little
first); its read spec run through the float64 reference must give what a session on the module computes (two
training steps and eval), which proves the spec is what the object computes. The user's module stays bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bnparity.frameworks.torch.user_layers import UserLayers  # noqa: E402  (needs torch)
from bnparity.frameworks.user_layers import UserLayer  # noqa: E402
from bnparity.reference.normalization import run_reference  # noqa: E402
from bnparity.reference.spec import BNSpec, GNSpec, INSpec, LNSpec, RMSSpec  # noqa: E402
from bnparity.reference.steps import QUANTITIES, LayerInputs, LayerOutputs  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

READER = UserLayers()
RTOL = 1e-4  # float32 against float64, relative to the largest |reference|


def _warm(module: torch.nn.Module, shape: tuple[int, ...], passes: int = 2, seed: int = 7) -> torch.nn.Module:
    """`passes` training-mode forward passes, so that the running statistics are not the initial ones."""
    g = torch.Generator().manual_seed(seed)
    module.train()
    with torch.no_grad():
        for _ in range(passes):
            module(torch.randn(shape, generator=g, dtype=torch.float64).to(next(_floats(module)).dtype) * 3 + 2)
    return module


def _floats(module: torch.nn.Module):
    yield from (t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point())


def _random_affine(module: torch.nn.Module, seed: int = 3) -> torch.nn.Module:
    """γ and β (where the module has them) set to non-default values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (getattr(module, "weight", None), getattr(module, "bias", None)):
            if p is not None:
                p.copy_(torch.rand(p.shape, generator=g, dtype=torch.float64) + 0.5)
    return module


def _inputs(user: UserLayer, shape: tuple[int, ...], seed: int = 0) -> LayerInputs:
    rng = np.random.default_rng(seed)
    dtype = np.float64 if user.dtype == "float64" else np.float32
    xs = tuple((rng.normal(1.0, 2.0, shape)).astype(dtype) for _ in range(2))
    dys = tuple(rng.normal(0.0, 1.0, shape).astype(dtype) for _ in range(2))
    return LayerInputs(xs=xs, dys=dys, x_eval=rng.normal(0.5, 1.5, shape).astype(dtype),
                       gamma=user.gamma, beta=user.beta)


def _session_outputs(user: UserLayer, inputs: LayerInputs) -> LayerOutputs:
    session = user.session()
    for x, dy in zip(inputs.xs, inputs.dys, strict=True):
        step = session.train_step(x, dy)
    stats = session.running_stats()
    return LayerOutputs(y=step.y, dx=step.dx, dgamma=step.dgamma if user.spec.affine else None,
                        dbeta=step.dbeta if user.spec.affine and getattr(user.spec, "bias", True) else None,
                        running_mean=None if stats is None else stats[0],
                        running_var=None if stats is None else stats[1], y_eval=session.eval(inputs.x_eval))


def _mismatches(got: LayerOutputs, ref: LayerOutputs) -> dict[str, float]:
    """Quantity -> max |got − ref| / max |ref|, for those beyond RTOL (or present in one only)."""
    bad = {}
    for q in QUANTITIES:
        a, b = getattr(got, q), getattr(ref, q)
        if (a is None) != (b is None):
            bad[q] = float("inf")
            continue
        if a is None:
            continue
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert a.shape == b.shape, (q, a.shape, b.shape)
        err = float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))
        if not err <= RTOL:
            bad[q] = err
    return bad


def _snapshot(module: torch.nn.Module) -> dict[str, object]:
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    grads = {k: None if p.grad is None else p.grad.clone() for k, p in module.named_parameters()}
    return {"state": state, "grads": grads, "training": module.training,
            "requires_grad": {k: p.requires_grad for k, p in module.named_parameters()},
            "attrs": {k: v for k, v in vars(module).items() if not k.startswith("_")}}


def _assert_unchanged(module: torch.nn.Module, before: dict[str, object]) -> None:
    after = _snapshot(module)
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k  # bit-identical
    for k, g in before["grads"].items():
        assert (g is None) == (after["grads"][k] is None) and (g is None or torch.equal(g, after["grads"][k])), k
    for key in ("training", "requires_grad", "attrs"):
        assert after[key] == before[key], key


def _set(module: torch.nn.Module, **attrs: object) -> torch.nn.Module:
    for k, v in attrs.items():
        setattr(module, k, v)
    return module


def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


# name -> (a factory of the user's module, the input shape, the spec fields the reader must find)
CASES: dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, ...], dict[str, object]]] = {
    "bn2d_eps_momentum": (lambda: _random_affine(_warm(torch.nn.BatchNorm2d(5, eps=1e-3, momentum=0.3), (6, 5, 3, 4))),
                          (6, 5, 3, 4), dict(type=BNSpec, eps=1e-3, momentum=0.3, momentum_weighs="new", affine=True,
                                             running_var="unbiased", track_running_stats=True, axis=1)),
    "bn1d_cumulative": (lambda: _warm(torch.nn.BatchNorm1d(4, momentum=None), (8, 4, 6)),
                        (8, 4, 6), dict(type=BNSpec, momentum=None, batches_tracked=2, track_running_stats=True)),
    "bn1d_2d_input": (lambda: _warm(torch.nn.BatchNorm1d(4, momentum=0.05), (10, 4)),
                      (10, 4), dict(type=BNSpec, momentum=0.05)),
    "bn3d_no_affine": (lambda: _warm(torch.nn.BatchNorm3d(3, affine=False, eps=1e-4), (4, 3, 2, 3, 2)),
                       (4, 3, 2, 3, 2), dict(type=BNSpec, affine=False, eps=1e-4)),
    "bn2d_untracked": (lambda: _random_affine(torch.nn.BatchNorm2d(3, track_running_stats=False)),
                       (4, 3, 3, 3), dict(type=BNSpec, track_running_stats=False)),
    "bn2d_tracking_switched_off": (lambda: _set(_warm(torch.nn.BatchNorm2d(3), (4, 3, 3, 3)),
                                                track_running_stats=False),
                                   (4, 3, 3, 3), dict(type=BNSpec, track_running_stats=True, momentum=0.0)),
    "bn2d_eval_mode_frozen_params": (
        lambda: _frozen(_random_affine(_warm(torch.nn.BatchNorm2d(3), (4, 3, 2, 2)))).eval(),
        (4, 3, 2, 2), dict(type=BNSpec, affine=True)),
    "bn2d_float64": (lambda: _warm(torch.nn.BatchNorm2d(3, momentum=0.2).double(), (4, 3, 2, 2)),
                     (4, 3, 2, 2), dict(type=BNSpec, momentum=0.2)),
    "syncbn": (lambda: _random_affine(_warm(torch.nn.SyncBatchNorm(4, momentum=0.2, eps=1e-4), (5, 4, 3, 3))),
               (5, 4, 3, 3), dict(type=BNSpec, momentum=0.2, eps=1e-4)),
    "in2d_tracked": (lambda: _random_affine(_warm(torch.nn.InstanceNorm2d(4, eps=1e-3, momentum=0.2, affine=True,
                                                                          track_running_stats=True), (3, 4, 5, 6))),
                     (3, 4, 5, 6), dict(type=INSpec, affine=True, track_running_stats=True, momentum=0.2, eps=1e-3)),
    "in1d_default": (lambda: torch.nn.InstanceNorm1d(3), (3, 3, 7),
                     dict(type=INSpec, affine=False, track_running_stats=False, eps=1e-5)),
    "in3d_momentum_none_freezes": (lambda: _warm(torch.nn.InstanceNorm3d(3, momentum=None, track_running_stats=True),
                                                 (2, 3, 3, 2, 4)),
                                   (2, 3, 3, 2, 4), dict(type=INSpec, momentum=0.0, track_running_stats=True)),
    "ln_two_dims": (lambda: _random_affine(torch.nn.LayerNorm((4, 5), eps=1e-4)), (5, 3, 4, 5),
                    dict(type=LNSpec, normalized_dims=2, params="elementwise", eps=1e-4, affine=True, bias=True,
                         axis=-1)),
    "ln_no_bias": (lambda: _random_affine(torch.nn.LayerNorm(6, bias=False)), (4, 6),
                   dict(type=LNSpec, affine=True, bias=False)),
    "ln_no_affine": (lambda: torch.nn.LayerNorm(6, elementwise_affine=False, eps=1e-3), (3, 2, 6),
                     dict(type=LNSpec, affine=False, eps=1e-3)),
    "gn_two_groups": (lambda: _random_affine(torch.nn.GroupNorm(2, 6, eps=1e-3)), (4, 6, 3, 3),
                      dict(type=GNSpec, groups=2, params="channel", eps=1e-3, affine=True, axis=1)),
    "gn_no_affine": (lambda: torch.nn.GroupNorm(3, 6, affine=False), (2, 6, 5), dict(type=GNSpec, groups=3,
                                                                                      affine=False)),
    "rms_two_dims": (lambda: _random_affine(torch.nn.RMSNorm((3, 4), eps=1e-5)), (4, 3, 4),
                     dict(type=RMSSpec, normalized_dims=2, eps=1e-5, affine=True)),
    "rms_default_eps": (lambda: torch.nn.RMSNorm(6), (5, 6),
                        dict(type=RMSSpec, eps=float(np.finfo(np.float32).eps), normalized_dims=1)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_read_spec_is_what_the_module_computes(name: str) -> None:
    factory, shape, expected = CASES[name]
    expected = dict(expected)
    spec_type = expected.pop("type")
    module = factory()
    before = _snapshot(module)
    user = READER.read(module)
    assert isinstance(user, UserLayer) and user.framework == "torch"
    spec = user.spec
    assert isinstance(spec, spec_type), spec
    for field, value in expected.items():
        got = getattr(spec, field)
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, (field, got, value)
    # γ, β and the running statistics are the module's current ones
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    assert user.gamma.dtype == np.float64 and user.gamma.shape == spec.param_shape(shape)
    assert user.beta.shape == user.gamma.shape
    np.testing.assert_array_equal(user.gamma, 1.0 if weight is None else weight.detach().double().reshape(-1)
                                  .numpy().reshape(user.gamma.shape))
    np.testing.assert_array_equal(user.beta, 0.0 if bias is None else bias.detach().double().numpy()
                                  .reshape(user.beta.shape))
    if spec.track_running_stats:
        np.testing.assert_array_equal(spec.init_running_mean, module.running_mean.double().numpy())
        np.testing.assert_array_equal(spec.init_running_var, module.running_var.double().numpy())
    floats = list(_floats(module))
    assert user.dtype == (str(floats[0].dtype).removeprefix("torch.") if floats else "float32")
    assert {"eps", "affine", "axis"} <= user.conventions.keys()
    # two training steps and eval on a copy equal the reference run of the read spec
    inputs = _inputs(user, shape)
    got = _session_outputs(user, inputs)
    assert not _mismatches(got, run_reference(spec, inputs)), _mismatches(got, run_reference(spec, inputs))
    # and again, on a fresh copy (the first session did not leak into the object or the next session)
    again = _session_outputs(user, inputs)
    for q in QUANTITIES:
        a, b = getattr(got, q), getattr(again, q)
        assert (a is None and b is None) or np.array_equal(a, b), q
    _assert_unchanged(module, before)


def test_conventions_state_the_module_in_torchs_words() -> None:
    user = READER.read(_warm(torch.nn.BatchNorm2d(5, eps=1e-3, momentum=0.3), (6, 5, 3, 4)))
    assert user.kind == "torch.nn.BatchNorm2d" and user.dtype == "float32"
    assert user.conventions["momentum"] == "0.3 on the new value"
    assert user.conventions["eps"] == "0.001"
    assert user.conventions["running_var"].startswith("unbiased")
    assert user.conventions["axis"] == "1 (NCHW)"
    cumulative = READER.read(_warm(torch.nn.BatchNorm1d(4, momentum=None), (8, 4), passes=3))
    assert cumulative.spec.batches_tracked == 3 and "num_batches_tracked=3" in cumulative.conventions["momentum"]


def test_a_subclass_is_read_as_the_layer_it_extends() -> None:
    class MyBN(torch.nn.BatchNorm2d):
        pass

    user = READER.read(MyBN(3, momentum=0.4))
    assert user.kind.endswith("MyBN (a torch.nn.BatchNorm2d)") and user.spec.momentum == 0.4


def test_a_wrong_convention_makes_the_running_statistics_disagree() -> None:
    """The deliberate failure: momentum read as weighing the old value (0.3 → 0.7 on the new batch)."""
    module = _warm(torch.nn.BatchNorm2d(5, eps=1e-3, momentum=0.3), (6, 5, 3, 4))
    user = READER.read(module)
    inputs = _inputs(user, (6, 5, 3, 4))
    got = _session_outputs(user, inputs)
    assert not _mismatches(got, run_reference(user.spec, inputs))
    wrong = _mismatches(got, run_reference(user.spec.replace(momentum_weighs="old"), inputs))
    assert {"running_mean", "running_var", "y_eval"} <= wrong.keys(), wrong
    assert "y" not in wrong and "dx" not in wrong  # training itself does not read the momentum


def test_a_torch_object_that_is_no_normalization_layer_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"Conv2d is not a supported normalization layer; expected one of "
                                        r"torch\.nn\.BatchNorm1d.*torch\.nn\.RMSNorm"):
        READER.read(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(TypeError, match="not a normalization layer"):
        READER.read(torch.zeros(3))
    with pytest.raises(TypeError, match="Sequential"):
        READER.read(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))


def test_an_uninitialized_lazy_module_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="run one forward pass first"):
        READER.read(torch.nn.LazyBatchNorm2d())
    lazy = _warm(torch.nn.LazyBatchNorm2d(momentum=0.2), (4, 3, 2, 2))
    assert READER.read(lazy).spec.momentum == 0.2


@pytest.mark.parametrize("other", [object(), np.zeros(3), 3.0, "BatchNorm2d", None])
def test_another_frameworks_object_is_none(other: object) -> None:
    assert READER.read(other) is None
    assert READER.to_numpy(other) is None


def test_to_numpy_reads_tensors_that_require_grad() -> None:
    t = torch.arange(4.0, requires_grad=True) * 2
    np.testing.assert_array_equal(READER.to_numpy(t), [0.0, 2.0, 4.0, 6.0])
    bn = torch.nn.BatchNorm1d(3)
    np.testing.assert_array_equal(READER.to_numpy(bn.weight), np.ones(3, np.float32))
    assert READER.to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype == np.float32


def test_a_module_with_gradients_is_left_bit_identical() -> None:
    module = _warm(torch.nn.GroupNorm(2, 4), (3, 4, 5))
    module(torch.randn(3, 4, 5)).sum().backward()  # the user's .grad is populated
    before = _snapshot(module)
    user = READER.read(module)
    for _ in range(3):
        _session_outputs(user, _inputs(user, (3, 4, 5)))
    _assert_unchanged(module, before)
