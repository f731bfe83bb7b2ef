"""fold, audit and convert on real checkpoints: a `smoke` training run of every installed framework, made here.

The three toolkit commands read what `bnparity train` writes (the run's manifest, data and last checkpoint), so they
are tested on a run trained in this test, not on one that only exists on a developer's machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import framework_installed, write_fake_fashion_mnist

from bnparity.frameworks.checkpoints import CheckpointFormat, load_format
from bnparity.frameworks.registry import baseline, framework_names
from bnparity.reference.alexnet import BatchNorm as BNLayer
from bnparity.reference.alexnet import alexnet_spec, layer_shapes, param_shapes
from bnparity.suites.audit.records import load_audit
from bnparity.suites.cli import main
from bnparity.suites.convergence.records import RunId, checkpoint_epochs, load_checkpoint
from bnparity.suites.fold.records import load_fold

INSTALLED = [name for name in framework_names() if framework_installed(name)]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not INSTALLED, reason="no framework is installed")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = write_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"))
    out = tmp_path_factory.mktemp("run") / "train"
    assert main(["train", "--preset", "smoke", "--variants", "bn", "--frameworks", ",".join(INSTALLED),
                 "--out", str(out), "--data-dir", str(data), "--no-verify-data"]) == 0
    return out


def test_fold_folds_every_framework_s_trained_alexnet_without_changing_a_prediction(trained, tmp_path):
    assert main(["fold", "--run", str(trained), "--test-images", "64", "--reference-images", "8",
                 "--json", str(tmp_path / "fold.json")]) == 0
    doc = load_fold(json.loads((tmp_path / "fold.json").read_text()))
    assert {n.framework for n in doc.networks} == set(INSTALLED)
    for net in doc.networks:
        assert net.passed and net.argmax_changes == 0 and net.accuracy_folded == net.accuracy_unfolded
        assert 0 < net.max_logit_error <= net.allowed_logit_error  # folding rounds differently: never bit-equal


def test_audit_finds_every_bn_layer_of_the_trained_alexnet_drifting_and_the_fix_frozen(trained, tmp_path):
    assert main(["audit", "--run", str(trained), "--images", "16", "--json", str(tmp_path / "audit.json")]) == 0
    doc = load_audit(json.loads((tmp_path / "audit.json").read_text()))
    arch = alexnet_spec("tiny", norm="bn")
    bn_layers = sum(isinstance(s.layer, BNLayer) for s in layer_shapes(arch))
    assert {r.framework for r in doc.records} == set(INSTALLED)
    for record in doc.records:
        assert len(record.layers) == bn_layers
        if record.fixed:
            assert all(layer.frozen for layer in record.layers), record
        else:
            assert all(layer.drifted and layer.running_mean_change > 0 for layer in record.layers), record


@pytest.mark.parametrize("target", [n for n in INSTALLED if n != baseline().name])
def test_convert_carries_the_trained_baseline_alexnet_into_each_framework(trained, tmp_path, target, capsys):
    source = baseline().name
    if source not in INSTALLED:
        pytest.skip(f"{source} is not installed")
    run = RunId(source, "bn", 0)
    params, _ = load_checkpoint(trained, run, checkpoint_epochs(trained, run)[-1])
    arch = alexnet_spec("tiny", norm="bn")
    fmt = load_format(source)
    assert isinstance(fmt, CheckpointFormat)
    src = tmp_path / f"alexnet{fmt.suffixes[0]}"
    weights = {name: params[name].astype(np.float32) for name in param_shapes(arch)}  # no optimizer state
    fmt.write(src, fmt.alexnet_write(arch, weights, {}))
    first_bn = next(s for s in layer_shapes(arch) if isinstance(s.layer, BNLayer))
    count = 32 * int(np.prod(first_bn.in_shape[1:]))  # the smoke preset's batch × the first BN's positions
    dst = tmp_path / f"converted{load_format(target).suffixes[0]}"
    assert main(["convert", str(src), "--from", source, "--to", target, "--arch", "tiny", "--count", str(count),
                 "--out", str(dst)]) == 0
    assert "every gated agreement holds" in capsys.readouterr().out
    record = json.loads(Path(f"{dst}.bnparity.json").read_text())
    gated = [a for a in record["agreement"] if a["gated"]]
    assert {a["quantity"] for a in gated} >= {"y_eval", "running_mean", "running_var", "logits"}
    assert all(a["passed"] for a in gated)
