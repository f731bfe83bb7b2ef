"""Adding a framework is one folder: a fabricated fourth framework is picked up by every command and report.

The folder is written to a temporary directory and appended to `bnparity.frameworks.__path__`; nothing else of
the project is edited. Its layers compute BatchNorm with the reference formulas in NumPy (this test is about
the plumbing, not about numerics). If any suite, report, help text or manifest kept its own list of framework
names, the new framework would be missing from its output and this test fails.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import bnparity.frameworks
from bnparity.frameworks import registry
from bnparity.suites.cli import main

NAME = "numpyfw"

DESCRIPTOR = f'''
"""A fabricated framework for tests/test_add_framework.py (data only)."""

from bnparity.frameworks.descriptor import Framework, LayerImpl, ModelLayout

DESCRIPTOR = Framework(
    name="{NAME}", display_name="NumPy Test Framework", order=9, pip_extra="{NAME}", distributions=("numpy",),
    color="#CC79A7", native_axis=1,
    layers=(LayerImpl("batchnorm", "builtin", "batchnorm", "BuiltinBatchNorm"),
            LayerImpl("batchnorm", "scratch", "batchnorm", "ScratchBatchNorm")),
    model_layout=ModelLayout(conv_kernel="OIHW", dense_weight="(out, in)", bn_params="gamma, beta",
                             bn_stats="mean, var", activations="NCHW"),
)
'''

CONVENTION = f'''
"""The fabricated framework's conventions: the baseline's, under its own name."""

import dataclasses

from bnparity.frameworks.conventions import convention
from bnparity.frameworks.registry import baseline

CONVENTION = dataclasses.replace(convention(baseline().name), framework="{NAME}", layer="numpyfw.BatchNorm")
'''

BATCHNORM = f'''
"""The fabricated framework's BatchNorm: the reference formulas, rounded to the input's dtype."""

import numpy as np

from bnparity.frameworks.base import LayerAdapter, LayerSession, StepResult, Unsupported
from bnparity.reference import batchnorm as bn

from .descriptor import DESCRIPTOR


class _Layer(LayerSession):
    def __init__(self, spec, channels, dtype, gamma, beta):
        self.spec, self.dtype, self.gamma, self.beta = spec, dtype, gamma, beta
        self.mean = np.full(channels, spec.init_running_mean)
        self.var = np.full(channels, spec.init_running_var)

    def train_step(self, x, dy):
        y, cache = bn.forward_train(x, self.gamma, self.beta, eps=self.spec.eps, axis=self.spec.axis)
        dx, dgamma, dbeta = bn.backward(dy, cache, self.gamma)
        m = bn.count_per_channel(x.shape, self.spec.axis)
        self.mean = bn.running_update(self.mean, cache.mu, self.spec)
        self.var = bn.running_update(self.var, bn.variance_for_running(cache.var, m, self.spec), self.spec)
        cast = lambda a: np.asarray(a).astype(self.dtype)  # noqa: E731
        return StepResult(y=cast(y), dx=cast(dx), dgamma=cast(dgamma), dbeta=cast(dbeta))

    def running_stats(self):
        return (self.mean, self.var) if self.spec.track_running_stats else None

    def eval(self, x):
        if not self.spec.track_running_stats:
            return bn.forward_train(x, self.gamma, self.beta, eps=self.spec.eps, axis=self.spec.axis)[0]
        return bn.forward_eval(x, self.gamma, self.beta, self.mean, self.var, eps=self.spec.eps, axis=self.spec.axis)


class BuiltinBatchNorm(LayerAdapter):
    framework = DESCRIPTOR.name
    normalization = "batchnorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec, dtype):
        if np.dtype(dtype).kind != "f":
            raise Unsupported(f"{NAME}: no float dtype for {{np.dtype(dtype).name}}")
        return spec

    def build(self, spec, *, shape, dtype, gamma, beta, use_defaults):
        return _Layer(spec, shape[spec.axis], dtype, gamma, beta)


class ScratchBatchNorm(BuiltinBatchNorm):
    impl = "scratch"
'''


@pytest.fixture
def fourth_framework(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    folder = tmp_path / "frameworks" / NAME
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text('"""A fabricated framework."""\n')
    for name, text in (("descriptor", DESCRIPTOR), ("convention", CONVENTION), ("batchnorm", BATCHNORM)):
        (folder / f"{name}.py").write_text(textwrap.dedent(text).lstrip())
    monkeypatch.setattr(bnparity.frameworks, "__path__", [*bnparity.frameworks.__path__, str(folder.parent)])
    registry.descriptors.cache_clear()
    yield NAME
    registry.descriptors.cache_clear()


def test_the_registry_discovers_the_new_folder(fourth_framework):
    assert registry.framework_names()[-1] == NAME
    assert registry.display_name(NAME) == "NumPy Test Framework"
    assert registry.baseline().name != NAME


def test_parity_conventions_and_report_pick_it_up(fourth_framework, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # --jobs 1: the fabricated folder is on this process's package path only, not in worker processes
    assert main(["parity", "--frameworks", NAME, "--cases", "nc-2x4,nchw-4x8x6x6-float32", "--jobs", "1",
                 "--json", str(run_dir / "parity.json")]) == 0
    out = capsys.readouterr().out
    assert f"{NAME}/builtin" in out and f"{NAME}/scratch" in out
    doc = json.loads((run_dir / "parity.json").read_text())
    assert {r["framework"] for r in doc["records"]} == {NAME}
    assert "numpy" in doc["meta"]["environment"]["packages"]  # the environment manifest lists its distributions

    assert main(["conventions"]) == 0
    assert f"== {NAME}: batchnorm ==" in capsys.readouterr().out

    assert main(["report", str(run_dir)]) == 0
    capsys.readouterr()
    html = (run_dir / "report.html").read_text()
    assert f"{NAME}/builtin" in html


def test_help_lists_it(fourth_framework, capsys):
    with pytest.raises(SystemExit):
        main(["parity", "--help"])
    assert NAME in capsys.readouterr().out


def test_a_folder_without_replicas_or_data_parallel_code_is_a_skip_not_an_error(fourth_framework):
    from bnparity.frameworks.replicas import load_replica_adapter
    from bnparity.frameworks.training import load_data_parallel_trainer
    from bnparity.suites.sync_parity.cases import sync_cases
    from bnparity.suites.sync_parity.harness import run_framework

    trainer = load_data_parallel_trainer(NAME)
    assert isinstance(trainer, registry.Unavailable) and not trainer.installed
    assert "has no data-parallel trainer" in trainer.reason
    adapter = load_replica_adapter(NAME, "builtin")
    assert isinstance(adapter, registry.Unavailable) and not adapter.installed
    records = list(run_framework(NAME, sync_cases(2)[:2], ("builtin", "scratch")))
    assert [(r.status, r.gate) for r in records] == [("skipped", False), ("skipped", False)]
