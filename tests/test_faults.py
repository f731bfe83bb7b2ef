"""Faults and sloppy input: each ends in one line on stderr and exit code 2 (no traceback), and nothing the user had
is lost; pipes and devices given as --json are written into, never replaced; a broken framework that was asked for
makes the command exit 1 after running the others."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import framework_installed, write_fake_fashion_mnist

from bnparity.frameworks.registry import baseline, descriptor, framework_names, module_name, named_frameworks
from bnparity.suites import output
from bnparity.suites.cli import main
from bnparity.suites.records import json_safe, write_json

BASE = baseline().name
# One small case of the layer-parity suite, on the baseline framework only: each test runs in a second or two.
SMALL = ["--frameworks", BASE, "--cases", "nc-2x4-float64", "--no-hard"]
OLD = b'{"what": "the user\'s own file, which must survive"}\n'


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"bnparity {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _cli(*args: str, stdout: int | None = subprocess.PIPE, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bnparity.suites.cli", *args], stdout=stdout,
                            stderr=subprocess.PIPE, env=env, cwd=cwd)


@pytest.fixture(autouse=True)
def _needs_the_baseline() -> None:
    if not framework_installed(BASE):
        pytest.skip(f"{BASE} is not installed: these tests run its layer")


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "mine.json"
    path.write_bytes(OLD)
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------- outputs that cannot be written


def test_disk_full_is_one_line_and_exit_2(capsys) -> None:
    assert main(["parity", *SMALL, "--json", "/dev/full"]) == 2
    line = _one_error_line(capsys.readouterr().err, "parity")
    assert "/dev/full" in line and os.strerror(errno.ENOSPC) in line
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # written into, not replaced


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_a_folder_that_refuses_the_temporary_file_leaves_the_users_file(user_file, monkeypatch, capsys, code) -> None:
    def refuse(*args, **kwargs):  # what a read-only mount, a denied folder or a full disk answer (CI runs as root)
        raise OSError(code, os.strerror(code), str(kwargs.get("dir")))

    monkeypatch.setattr(output.tempfile, "mkstemp", refuse)
    assert main(["parity", *SMALL, "--json", str(user_file)]) == 2
    line = _one_error_line(capsys.readouterr().err, "parity")
    assert str(user_file) in line and os.strerror(code) in line
    assert user_file.read_bytes() == OLD
    assert sorted(p.name for p in user_file.parent.iterdir()) == [user_file.name]


def test_a_rename_that_fails_leaves_the_users_file_and_no_temporary_file(user_file, monkeypatch, capsys) -> None:
    def deny(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))

    monkeypatch.setattr(output.os, "replace", deny)
    assert main(["parity", *SMALL, "--json", str(user_file)]) == 2
    line = _one_error_line(capsys.readouterr().err, "parity")
    assert str(user_file) in line and ".tmp" not in line  # the user's path, never the temporary file
    assert user_file.read_bytes() == OLD
    assert sorted(p.name for p in user_file.parent.iterdir()) == [user_file.name]


def test_a_regular_file_is_replaced_atomically_keeping_its_mode(user_file, capsys) -> None:
    assert main(["parity", *SMALL, "--json", str(user_file)]) == 0
    doc = json.loads(user_file.read_text())
    assert doc["records"] and doc["meta"]["complete"] is True
    assert stat.S_IMODE(user_file.stat().st_mode) == 0o600
    new = user_file.parent / "new.json"
    output.write_output(new, "x")
    assert stat.S_IMODE(new.stat().st_mode) == output.DEFAULT_MODE


def test_a_symlink_to_a_file_stays_a_link(tmp_path) -> None:
    target = tmp_path / "target.json"
    target.write_bytes(OLD)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    output.write_json(link, {"a": float("nan")})
    assert link.is_symlink() and json.loads(target.read_text()) == {"a": None}


@pytest.mark.parametrize("command", [["parity", *SMALL], ["model-parity", "--preset", "tiny"],
                                     ["pitfalls", "RUN_DIR"]])
def test_json_in_a_missing_folder_is_refused_before_anything_runs(tmp_path, capsys, command) -> None:
    target = tmp_path / "no-such-folder" / "out.json"
    with pytest.raises(SystemExit) as e:
        main([*command, "--json", str(target)])
    assert e.value.code == 2
    line = _one_error_line(capsys.readouterr().err, command[0])
    assert "argument --json" in line and str(target.parent) in line and "does not exist" in line
    assert not target.parent.exists()  # no folder was created for it


def test_json_naming_a_directory_is_refused(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["parity", *SMALL, "--json", str(tmp_path)])
    assert e.value.code == 2
    assert "is a directory" in _one_error_line(capsys.readouterr().err, "parity")
    assert list(tmp_path.iterdir()) == []


def test_the_write_helper_refuses_a_missing_folder_and_a_directory(tmp_path) -> None:
    with pytest.raises(output.OutputError) as e:
        output.write_output(tmp_path / "nope" / "x.json", "{}")
    assert e.value.errno == errno.ENOENT and str(tmp_path / "nope" / "x.json") in str(e.value)
    with pytest.raises(output.OutputError) as e:
        output.write_output(tmp_path, "{}")
    assert e.value.errno == errno.EISDIR
    assert list(tmp_path.iterdir()) == []


def test_records_write_json_still_lays_out_a_suites_own_folder(tmp_path) -> None:
    write_json(tmp_path / "run" / "train" / "manifest.json", {"x": float("inf")})
    assert json.loads((tmp_path / "run" / "train" / "manifest.json").read_text()) == {"x": None}
    assert json_safe([float("-inf"), 1.0]) == [None, 1.0]


@pytest.mark.parametrize("command", ["run", "train", "report"])
def test_out_naming_an_existing_file_is_refused(user_file, tmp_path, capsys, command) -> None:
    argv = {"run": ["run", "--steps", "parity", "--out", str(user_file)],
            "train": ["train", "--preset", "smoke", "--out", str(user_file)],
            "report": ["report", str(tmp_path), "--out", str(user_file)]}[command]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, command)
    assert "--out" in line and str(user_file) in line
    assert user_file.read_bytes() == OLD


# ---------------------------------------------------------------- pipes, devices, standard output


def test_json_into_a_fifo_is_written_into_not_replaced(tmp_path, capsys) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert main(["parity", *SMALL, "--json", str(fifo)]) == 0
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert json.loads(got[0])["records"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert "gated comparisons pass" in capsys.readouterr().out  # stdout was not the JSON target: the table stays


def test_json_on_dev_stdout_is_piped_and_the_table_goes_to_stderr(tmp_path) -> None:
    proc = _cli("parity", *SMALL, "--json", "/dev/stdout", cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["records"]  # stdout is the JSON alone
    assert b"gated comparisons pass" in err and b"Traceback" not in err
    assert os.path.islink("/dev/stdout") and list(tmp_path.iterdir()) == []


def test_json_dash_writes_to_stdout(capfd) -> None:
    assert main(["parity", *SMALL, "--json", "-"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["meta"]["complete"] is True
    assert "gated comparisons pass" in err


@pytest.mark.parametrize("json_target", [None, "/dev/stdout"])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, json_target) -> None:
    proc = _cli("parity", *SMALL, *(["--json", json_target] if json_target else []), cwd=tmp_path)
    proc.stdout.close()  # the reader leaves before anything is written: every write to stdout meets EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141
    assert "Traceback" not in err and "error" not in err.lower() and "Exception ignored" not in err


def test_stream_paths() -> None:
    assert output.stream_fd("-") == 1 and output.stream_fd(Path("/dev/stdout")) == 1
    assert output.stream_fd("/dev/stderr") == 2 and output.stream_fd("/proc/self/fd/7") == 7
    assert output.stream_fd("/dev/null") is None and output.stream_fd(None) is None and not output.is_stdout(True)


# ---------------------------------------------------------------- sloppy --frameworks and --input


@pytest.fixture
def npz(tmp_path: Path):
    def make(shape: tuple[int, ...]) -> Path:
        path = tmp_path / f"x-{'x'.join(map(str, shape))}.npz"
        np.savez(path, x=np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        return path
    return make


@pytest.mark.parametrize("text", ["", "torch,,jax", ","])
@pytest.mark.parametrize("command", ["parity", "check", "model-parity", "train", "run"])
def test_an_empty_framework_name_is_one_line_and_exit_2(tmp_path, npz, capsys, command, text) -> None:
    extra = {"check": ["--input", str(npz((4, 3)))], "run": ["--steps", "parity", "--out", str(tmp_path / "r")],
             "train": ["--out", str(tmp_path / "t")]}.get(command, [])
    assert main([command, "--frameworks", text, *extra]) == 2
    line = _one_error_line(capsys.readouterr().err, command)
    assert "empty name" in line and repr(text) in line
    assert not (tmp_path / "r").exists() and not (tmp_path / "t").exists()


@pytest.mark.parametrize(("shape", "expected"), [((0, 16), "m=0"), ((1, 16), "m=1"), ((1, 4, 1, 1), "m=1"),
                                                 ((4, 0), "at least one channel")])
def test_check_refuses_too_few_values_per_channel(npz, capsys, shape, expected) -> None:
    assert main(["check", "--input", str(npz(shape)), "--frameworks", BASE]) == 2
    line = _one_error_line(capsys.readouterr().err, "check")
    assert expected in line and f"x.shape={shape}" in line


def test_check_takes_two_values_per_channel(npz, capsys) -> None:
    assert main(["check", "--input", str(npz((2, 3))), "--frameworks", BASE]) in (0, 1)  # it runs
    assert "error" not in capsys.readouterr().err


# ---------------------------------------------------------------- a framework installed but broken


def test_named_frameworks() -> None:
    assert named_frameworks(None) == () and named_frameworks("all") == ()
    assert named_frameworks(f"{BASE},{BASE}") == (BASE,)
    with pytest.raises(ValueError):
        named_frameworks("")


def _other() -> str:
    """A framework besides the baseline to break (it need not be installed: it is made to fail on import)."""
    # one without an environment of its own (a Keras backend may be unloadable here for that reason alone)
    others = [n for n in framework_names() if n != BASE and not descriptor(n).environment]
    if not others:
        pytest.skip("only one framework is declared")
    return others[-1]


def test_model_parity_exits_1_for_a_broken_framework_it_was_asked_for(tmp_path, monkeypatch, capsys) -> None:
    broken = _other()
    # Importing its trainer module now fails with an ImportError that is not a missing distribution: "installed".
    monkeypatch.setitem(sys.modules, module_name(broken, "train"), None)
    out = tmp_path / "mp.json"
    code = main(["model-parity", "--preset", "tiny", "--variants", "bn", "--dtypes", "float64",
                 "--frameworks", f"{BASE},{broken}", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert f"{broken} failed to import" in captured.err and "asked for with --frameworks" in captured.err
    assert f"skipped {broken}: {broken} failed to import" in captured.out
    records = json.loads(out.read_text())["records"]
    ran = [r for r in records if r["framework"] == BASE]
    assert ran and all(r.get("passed") is not False for r in ran)  # the others ran, and passed


def test_train_exits_1_for_a_broken_framework_it_was_asked_for(tmp_path) -> None:
    broken = _other()

    fake = tmp_path / "site"
    package = fake / descriptor(broken).distributions[0]
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise RuntimeError("a broken build (test)")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), *filter(None, [os.environ.get("PYTHONPATH")])]))
    data = write_fake_fashion_mnist(tmp_path / "data")
    out = tmp_path / "train"
    proc = _cli("train", "--preset", "smoke", "--epochs", "1", "--variants", "bn", "--seeds", "1",
                "--frameworks", f"{BASE},{broken}", "--out", str(out), "--data-dir", str(data), "--no-verify-data",
                env=env, cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr.decode()[-2000:]
    assert b"a broken build (test)" in stderr and b"asked for with --frameworks" in stderr
    records = [json.loads(line) for line in (out / f"{BASE}-bn-seed0.jsonl").read_text().splitlines()]
    assert records[-1]["kind"] == "done"  # the baseline's run finished
    skipped = [json.loads(line) for line in (out / f"{broken}-bn-seed0.jsonl").read_text().splitlines()]
    assert skipped[-1]["kind"] == "skipped"


def test_run_exits_1_when_a_framework_it_was_asked_for_is_broken(tmp_path, monkeypatch, capsys) -> None:
    broken = _other()
    monkeypatch.setitem(sys.modules, module_name(broken, "train"), None)
    out = tmp_path / "run"
    code = main(["run", "--steps", "model-parity", "--model-preset", "tiny", "--frameworks", f"{BASE},{broken}",
                 "--out", str(out)])
    assert code == 1
    assert f"{broken} failed to import" in capsys.readouterr().err
    records = json.loads((out / "model_parity.json").read_text())["records"]
    assert any(r["framework"] == BASE and r.get("passed") for r in records)  # the baseline still ran
