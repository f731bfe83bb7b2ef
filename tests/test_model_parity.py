"""`bnparity model-parity` on the tiny preset, the JAX compile count, and mismatches the harness must catch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import framework_installed, require

from bnparity.reference.alexnet import init_params, trainable_names
from bnparity.suites.cli import main
from bnparity.suites.model_parity import harness
from bnparity.suites.model_parity.harness import ParityConfig, make_data, run_framework
from bnparity.suites.schema import ModelNotRun, load_model_parity, to_dict

INSTALLED = [fw for fw in ("torch", "mxnet", "jax") if framework_installed(fw)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[int, dict]:
    path = tmp_path_factory.mktemp("model_parity") / "tiny.json"
    code = main(["model-parity", "--preset", "tiny", "--variants", "bn,nobn", "--json", str(path)])
    return code, json.loads(path.read_text())


def test_tiny_preset_passes_and_writes_every_record(tiny_run) -> None:
    code, doc = tiny_run
    assert code == 0
    assert doc["format"] == "bnparity-model-parity/2"
    assert to_dict(load_model_parity(doc)) == doc  # the file reads back through the schema as written
    assert doc["meta"]["environment"]["packages"]["numpy"] and doc["meta"]["complete"] is True
    records = doc["records"]
    for fw in ("torch", "mxnet", "jax"):
        mine = [r for r in records if r["framework"] == fw]
        if fw not in INSTALLED:
            assert mine and all(r["status"] == "skipped" and r["reason"] for r in mine)
            continue
        combos = {(r["variant"], r["dropout"], r["dtype"]) for r in mine}
        assert combos == {(v, d, t) for v in ("bn", "nobn") for d in ("off", "mask") for t in ("float32", "float64")}
        assert all(r["passed"] for r in mine if r["gate"])
        assert {r["against"] for r in mine} == ({"reference"} if fw == INSTALLED[0] else {"reference", INSTALLED[0]})
    gated = [r for r in records if r.get("gate")]
    assert gated and all(r["max_abs_err"] <= r["atol"] + r["rtol"] * r["scale"] for r in gated)
    for field in ("preset", "variant", "dropout", "framework", "against", "quantity", "max_abs_err", "max_rel_err",
                  "atol", "rtol", "passed"):
        assert all(field in r for r in gated), field


@pytest.mark.skipif(len(INSTALLED) < 2, reason="needs two frameworks to compare")
def test_every_gradient_is_gated_in_float64_and_running_var_differs_raw(tiny_run) -> None:
    _, doc = tiny_run
    other = INSTALLED[1]
    grads = {r["quantity"] for r in doc["records"] if r.get("kind") == "grad" and r["framework"] == other
             and r["dtype"] == "float64" and r["variant"] == "bn" and r["gate"]}
    spec = ParityConfig("tiny", "bn", "mask", "float64", 8).spec()
    assert grads == set(trainable_names(spec))
    raw = [r for r in doc["records"] if r.get("kind") == "running_var_raw" and r["framework"] == other
           and r["dtype"] == "float64"]
    biased = {"mxnet", "jax"} & {other}
    if biased:  # MXNet and Flax store σ²_B, torch σ²_B·m/(m−1): a real, measured, ungated difference
        assert raw and not any(r["gate"] for r in raw) and not all(r["passed"] for r in raw)


def test_bad_arguments_exit_2(capsys) -> None:
    assert main(["model-parity", "--preset", "tiny", "--variants", "bn,huge"]) == 2
    assert main(["model-parity", "--preset", "tiny", "--batch", "12"]) == 2
    assert main(["model-parity", "--preset", "tiny", "--frameworks", "caffe"]) == 2
    err = capsys.readouterr().err
    assert "--variants must be some of bn,nobn" in err and "power of two" in err and "unknown framework" in err
    with pytest.raises(SystemExit) as e:
        main(["model-parity", "--preset", "paper"])
    assert e.value.code == 2


def test_running_var_conversion_closed_form() -> None:
    # r0 = 1, w = 0.1, σ²_B = 2, m = 5: biased 0.9 + 0.2 = 1.1; unbiased 0.9 + 0.2·5/4 = 1.15
    from bnparity.reference.batchnorm import running_var_as_unbiased
    from bnparity.reference.spec import BNSpec

    got = running_var_as_unbiased(np.array([1.1]), np.array([1.0]), 5, BNSpec(momentum=0.1))
    np.testing.assert_allclose(got, [1.15], rtol=1e-15)
    # the same weight of the new batch in the other momentum convention gives the same conversion
    np.testing.assert_allclose(running_var_as_unbiased(np.array([1.1]), np.array([1.0]), 5,
                                                       BNSpec(momentum=0.9, momentum_weighs="old")), [1.15], rtol=1e-15)


def test_jax_compiles_the_training_step_once_per_shape() -> None:
    require("jax")
    from bnparity.frameworks.jax.train import Trainer

    cfg = ParityConfig("tiny", "bn", "off", "float32", 8)
    spec = cfg.spec()
    trainer = Trainer(arch=spec, params=init_params(spec, seed=0), sgd=cfg.sgd)
    data = make_data(spec, batch=8, seed=0)
    for x, y in zip(data.xs, data.ys, strict=True):
        trainer.train_step(x, y)
    trainer.gradients(data.xs[0], data.ys[0])
    assert trainer.compile_count == 1
    trainer.train_step(data.xs[0][:4], data.ys[0][:4])  # a new batch shape is a new program
    assert trainer.compile_count == 2


def test_weight_decay_skipped_on_bn_parameters_is_caught() -> None:
    """The classic port mismatch: no weight decay on γ and β. Only those parameters' updates may fail."""
    require("torch")
    import torch

    from bnparity.frameworks.torch.train import Trainer

    class NoDecayOnBN(Trainer):
        def __init__(self, **kw) -> None:
            super().__init__(**kw)
            groups = {True: [], False: []}
            for name in trainable_names(self.arch):
                groups[name.startswith("bn")].append(self._tensors[name])
            self.optimizer = torch.optim.SGD([{"params": groups[False]}, {"params": groups[True], "weight_decay": 0}],
                                             lr=self.sgd.lr, momentum=self.sgd.momentum,
                                             weight_decay=self.sgd.weight_decay)

    cfg = ParityConfig("tiny", "bn", "mask", "float64", 8)
    spec = cfg.spec()
    params = init_params(spec, seed=0)
    data = make_data(spec, batch=8, seed=0)
    from bnparity.reference import alexnet_numpy as anp

    ref = anp.forward(spec, params, data.xs[0], train=True, dropout_masks=data.masks[0])
    good = run_framework(Trainer, spec=spec, params=params, data=data, sgd=cfg.sgd, dtype=cfg.dtype)
    bad = run_framework(NoDecayOnBN, spec=spec, params=params, data=data, sgd=cfg.sgd, dtype=cfg.dtype)
    records = list(harness.against_anchor(cfg, spec, params, ref, bad, good))
    failed = {(r.kind, r.quantity) for r in records if not r.passed}
    bn_params = {n for n in trainable_names(spec) if n.startswith("bn")}
    # β starts at 0, so λ·β only shows from step 2 on; γ = 1 shows at once
    assert {("param_step1", n) for n in bn_params if n.endswith("gamma")} <= failed
    assert {("param_step2", n) for n in bn_params} <= failed
    assert not any(kind == "param_step1" and not q.endswith("gamma") for kind, q in failed)
    assert all(q in bn_params or kind in ("param_step2", "momentum", "loss_step2") for kind, q in failed)
    assert not any(kind in ("grad", "logits", "loss", "running_stats") for kind, _ in failed)


def test_a_missing_framework_is_skipped_with_its_reason(monkeypatch) -> None:
    require("torch")
    from bnparity.frameworks.registry import Unavailable

    real = harness.load_trainer
    monkeypatch.setattr(harness, "load_trainer",
                        lambda fw: Unavailable(fw, "mxnet is not installed (test)") if fw == "mxnet" else real(fw))
    cfgs = harness.configs(preset="tiny", variants=("nobn",), dropout_modes=("off",), dtypes=("float64",))
    result = harness.run_model_parity(configs=cfgs, frameworks=("mxnet", "torch"))
    skipped = [r for r in result.records if r.framework == "mxnet"]
    assert skipped == [ModelNotRun(**cfgs[0].labels(), framework="mxnet", status="skipped", gate=False,
                                   passed=None, reason="mxnet is not installed (test)")]
    assert all(r.passed for r in result.records if r.framework == "torch")
    assert not harness.failures(result.records)


def test_gn_variant_passes_model_parity_and_is_compared_as_bn() -> None:
    """gn on the tiny preset in float64 (the fully gated dtype; `bnparity model-parity --preset tiny` runs float32
    too): every installed framework, gradients against the reference gated; no running statistics to compare."""
    if not INSTALLED:
        pytest.skip("no framework installed")
    assert ParityConfig("tiny", "gn", "mask", "float32", 8).spec().gn.eps == 1e-5
    cfgs = harness.configs(preset="tiny", variants=("gn",), dropout_modes=("mask",), dtypes=("float64",))
    spec = cfgs[0].spec()
    assert spec.gn.eps == float(np.float32(1e-5))  # MXNet parses GroupNorm's ε as a float32
    result = harness.run_model_parity(configs=cfgs, frameworks=INSTALLED)
    assert not harness.failures(result.records)
    assert not [r for r in result.records if isinstance(r, ModelNotRun)]
    for fw in INSTALLED:
        mine = [r for r in result.records if r.framework == fw and r.dtype == "float64"]
        grads = {r.quantity for r in mine if r.kind == "grad" and r.against == "reference" and r.gate}
        assert grads == set(trainable_names(spec)) and any(n.startswith("gn") for n in grads)
        assert not [r for r in mine if r.kind in ("running_stats", "running_var_raw")]
        assert {r.kind for r in mine} >= {"logits", "loss", "grad", "eval_loss"}
        if fw != INSTALLED[0]:
            assert {r.kind for r in mine if r.against == INSTALLED[0]} >= {"grad", "param_step1", "param_step2",
                                                                           "momentum", "loss_step2"}
    worst = max(r.worst_ratio for r in result.records if r.gate and r.dtype == "float64")
    assert 0 < worst < 1
