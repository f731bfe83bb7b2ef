"""--device gpu (and its other name, cuda) on a machine without a GPU: every framework's check_device says why, and
`bnparity train` and `bnparity model-parity` stop at once with that one line and exit code 2, no traceback.

These run on a CPU machine (this project's); where a framework sees a GPU they are skipped.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from conftest import runs_elsewhere

from bnparity.frameworks.registry import descriptor, framework_module, framework_names
from bnparity.frameworks.training import DeviceCheck, canonical_device, device_plan, probe_device, probe_devices
from bnparity.suites.main_job import frameworks_argument


def _installed(name: str) -> bool:
    return all(importlib.util.find_spec(dist) is not None for dist in descriptor(name).distributions)


INSTALLED = [name for name in framework_names() if _installed(name)]


@pytest.fixture(scope="module")
def gpu_checks() -> dict[str, DeviceCheck]:
    """Every installed framework asked about the GPU, each in a process of its own (as the commands ask)."""
    checks = probe_devices(INSTALLED, "gpu")
    if any(c.usable for c in checks.values()):
        pytest.skip(f"a GPU is visible here ({', '.join(f for f, c in checks.items() if c.usable)})")
    return checks


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnparity.suites.cli", *args], capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_cuda_is_another_name_of_gpu() -> None:
    assert [canonical_device(d) for d in ("cpu", "gpu", "cuda")] == ["cpu", "gpu", "gpu"]
    with pytest.raises(ValueError, match="tpu"):
        canonical_device("tpu")


@pytest.mark.parametrize("name", framework_names())
def test_check_device_gives_a_reason_for_the_gpu_and_none_for_the_cpu(name: str, gpu_checks) -> None:
    if not _installed(name):
        pytest.skip(f"{name} is not installed ({descriptor(name).install_hint})")
    if runs_elsewhere(name) is None:  # the framework can be imported in this process: ask its convert.py here
        convert = framework_module(name, "convert")
        assert convert.check_device("cpu") is None
        reason = convert.check_device("gpu")
        assert reason is not None and "\n" not in reason
        assert convert.check_device("cuda") == reason
        with pytest.raises(ValueError):
            convert.check_device("tpu")
    else:  # a Keras backend is fixed per process: ask in a process of its own
        assert probe_device(name, "cpu") == DeviceCheck(name, "cpu")
    check = gpu_checks[name]
    assert check.unavailable is None and check.problem and "\n" not in check.problem
    assert "GPU" in check.problem or "CUDA" in check.problem


def test_the_plan_skips_unnamed_frameworks_and_stops_for_named_ones() -> None:
    ok, refused = DeviceCheck("a", "gpu"), DeviceCheck("b", "gpu", problem="B sees no GPU")
    missing = DeviceCheck("c", "gpu", unavailable="c is not installed")
    plan = device_plan({"a": ok, "b": refused, "c": missing}, "gpu")
    assert plan.error is None and plan.skipped == {"b": "B sees no GPU"}
    assert device_plan({"a": ok, "b": refused}, "cuda", named=("b",)).error == "--device cuda: B sees no GPU"
    assert device_plan({"b": refused, "c": missing}, "gpu").error == "--device gpu: B sees no GPU"
    assert device_plan({"c": missing}, "gpu").error is None  # nothing to say about the GPU: the runs say why
    assert device_plan({"a": ok, "b": refused}, "cpu", named=("a",)).skipped == {"b": "B sees no GPU"}


@pytest.mark.parametrize("command", ["train", "model-parity"])
def test_gpu_without_one_exits_2_with_every_reason_on_one_line(command: str, gpu_checks) -> None:
    # train: a data folder that does not exist, so that a line about it would show the check came too late
    extra = ("--data-dir", "/nonexistent/fashion-mnist") if command == "train" else ()
    line = _one_error_line(_cli(command, "--device", "gpu", *extra))
    reasons = "; ".join(gpu_checks[name].problem for name in INSTALLED)
    assert line == f"bnparity {command}: error: --device gpu: {reasons}"


@pytest.mark.parametrize("command", ["train", "model-parity"])
def test_cuda_for_a_named_framework_exits_2_naming_what_it_lacks(command: str, gpu_checks) -> None:
    name = INSTALLED[0]
    extra = ("--data-dir", "/nonexistent/fashion-mnist", "--preset", "paper") if command == "train" else ()
    line = _one_error_line(_cli(command, "--device", "cuda", "--frameworks", name, *extra))
    assert line == f"bnparity {command}: error: --device cuda: {gpu_checks[name].problem}"


def test_the_main_job_checks_the_device_before_the_data_and_the_run_directory(gpu_checks, tmp_path) -> None:
    out = tmp_path / "run"
    line = _one_error_line(_cli("run", "--device", "cuda", "--out", str(out), "--data-dir", "/nonexistent/data"))
    steps = [frameworks_argument(None, step=step) for step in ("model-parity", "train")]  # [] is every framework
    in_main_job = [name for name in INSTALLED if any(not args or name in args[1].split(",") for args in steps)]
    assert line == "bnparity run: error: --device cuda: " + "; ".join(gpu_checks[n].problem for n in in_main_job)
    assert not out.exists()  # nothing was started, no directory made


def test_the_dry_run_checks_the_device_first(gpu_checks) -> None:
    name = INSTALLED[0]
    line = _one_error_line(_cli("train", "--preset", "paper", "--dry-run", "--device", "gpu", "--frameworks", name))
    assert line == f"bnparity train: error: --device gpu: {gpu_checks[name].problem}"


if not INSTALLED:  # pragma: no cover - a machine with no framework at all
    pytestmark = pytest.mark.skip(reason="no framework is installed")
