"""`bnparity train --preset paper --dry-run`: the full 224x224 AlexNet built in every installed framework (every Keras
backend too), one SGD step with and without BN on synthetic images, on the CPU, without data and writing nothing."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys

import pytest

from bnparity.frameworks.registry import descriptor, display_name, framework_names
from bnparity.reference.alexnet import param_shapes, trainable_names, variant_spec
from bnparity.suites.convergence.presets import get_preset

# "OK PyTorch (torch) bn: 46,783,882 parameters, loss 3.7171, step 0.35 s (built in 3.04 s)"
LINE = re.compile(r"^OK (?P<display>.+) \((?P<framework>[\w-]+)\) (?P<variant>\w+): (?P<parameters>[\d,]+) parameters, "
                  r"loss (?P<loss>\S+), step (?P<step>[\d.]+) s \(built in [\d.]+ s\)$")


def _installed(name: str) -> bool:
    return all(importlib.util.find_spec(dist) is not None for dist in descriptor(name).distributions)


def _trainable_parameters(variant: str) -> int:
    spec = variant_spec("paper", variant)
    shapes = param_shapes(spec)
    return sum(math.prod(shapes[name]) for name in trainable_names(spec))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, object]:
    cwd = tmp_path_factory.mktemp("cwd")  # a run directory would land under ./bnparity-runs
    done = subprocess.run([sys.executable, "-m", "bnparity.suites.cli", "train", "--preset", "paper", "--dry-run"],
                          capture_output=True, text=True, timeout=900, cwd=cwd, stdin=subprocess.DEVNULL)
    return done, cwd


@pytest.mark.slow
def test_every_installed_framework_steps_the_paper_alexnet(dry_run) -> None:
    done, cwd = dry_run
    assert done.returncode == 0, done.stdout + done.stderr
    found = {(m["framework"], m["variant"]): m for m in map(LINE.match, done.stdout.splitlines()) if m}
    variants = get_preset("paper").variants
    assert set(variants) == {"bn", "nobn"}
    installed = [name for name in framework_names() if _installed(name)]
    assert installed, "no framework is installed"
    for name in installed:
        for variant in variants:
            m = found.get((name, variant))
            assert m is not None, f"no OK line for {name} {variant}:\n{done.stdout}"
            assert m["display"] == display_name(name)
            assert int(m["parameters"].replace(",", "")) == _trainable_parameters(variant)
            assert math.isfinite(float(m["loss"])) and float(m["loss"]) > 0
    assert not list(cwd.iterdir()), "the dry run wrote files"


@pytest.mark.slow
def test_missing_frameworks_are_skipped_with_their_reason(dry_run) -> None:
    done, _ = dry_run
    for name in framework_names():
        if not _installed(name):
            assert any(line.startswith(f"skipped {display_name(name)} ({name})") for line in done.stdout.splitlines())


def test_the_paper_architecture_is_the_full_alexnet() -> None:
    # 224x224 input, channels 96/256/384/384/256, two Dense(4096): about 46.8 million parameters
    assert variant_spec("paper", "bn").input_shape == (1, 224, 224)
    assert 46_000_000 < _trainable_parameters("nobn") < _trainable_parameters("bn") < 47_000_000


def test_a_failed_step_exits_1_with_one_line(monkeypatch, capsys) -> None:
    from bnparity.suites.cli import main
    from bnparity.suites.convergence import dry_run as dr

    def piece(framework, preset, variants, device, register, seconds):
        seconds[framework] = 0.0
        return [dr.StepCheck(framework, v, "failed", dr.expected_parameters(preset.arch, v), reason="boom")
                if i == 0 and framework == names[0] else
                dr.StepCheck(framework, v, "ok", dr.expected_parameters(preset.arch, v),
                             parameters=dr.expected_parameters(preset.arch, v), loss=2.3, step_s=0.1, build_s=0.1)
                for i, v in enumerate(variants)]

    names = framework_names()
    monkeypatch.setattr(dr, "_piece", piece)
    assert main(["train", "--preset", "smoke", "--dry-run"]) == 1
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [f"bnparity train: dry run failed: {names[0]} bn: boom"]
    assert f"FAILED {display_name(names[0])} ({names[0]}) bn: boom" in out
    assert sum(line.startswith("OK ") for line in out.splitlines()) == 2 * len(names) - 1


def test_the_dry_run_takes_no_run_flags(capsys) -> None:
    from bnparity.suites.cli import main

    assert main(["train", "--preset", "paper", "--dry-run", "--out", "somewhere"]) == 2
    assert "--dry-run takes --preset, --frameworks, --variants and --device only" in capsys.readouterr().err
