"""`bnparity report`: a report built from a small recorded run, an interrupted run, bad input, the porting guide."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import framework_installed
from fabricate import fields

from bnparity.frameworks.conventions import all_conventions, all_layer_conventions
from bnparity.reports import porting_facts
from bnparity.reports.build import build_report
from bnparity.reports.porting import write_porting_guide
from bnparity.reports.porting_facts import PROOFS, ProofRef, function_names, tutorial_pitfalls, variance_gap
from bnparity.suites.cli import main
from bnparity.suites.convergence.presets import PRESETS
from bnparity.suites.convergence.records import RecordWriter, RunId, write_manifest
from bnparity.suites.environment import environment
from bnparity.suites.errors import UserError
from bnparity.suites.parity.cases import hard_cases, standard_cases
from bnparity.suites.records import read_json, write_json
from bnparity.suites.schema import (
    Environment,
    ModelComparison,
    ModelConfigLabel,
    ModelNotRun,
    ModelParityDoc,
    ModelParityMeta,
    ModelTolerance,
    TrainManifest,
    from_dict,
    to_dict,
)

ROOT = Path(__file__).resolve().parents[1]
# BatchNorm's sections keep the first release's ids; every other normalization gets the same three, by name
SECTIONS = ("verdict", "summary", "layer-parity", "conventions", "hard-inputs", "layer-parity-groupnorm",
            "conventions-groupnorm", "hard-inputs-groupnorm", "model-parity", "cross-replica", "convergence",
            "time-to-accuracy", "throughput", "environment")
SUMMARY_KEYS = {"format", "run_dir", "generated", "complete", "incomplete", "verdicts", "layer_parity", "hard_inputs",
                "hard_inputs_defaults", "normalizations", "conventions", "model_parity", "sync_parity", "dp_parity",
                "training", "verdict", "seed_comparison", "sections",
                "figures"}
# test accuracy of each evaluation point (iterations 0, 4, ..., 16 of the smoke preset's 2 epochs of 8)
ACCURACY = {"bn": (0.10, 0.40, 0.55, 0.60, 0.62), "nobn": (0.10, 0.20, 0.35, 0.52, 0.58)}
UNAVAILABLE = "mxnet is not installed (bnparity.frameworks.mxnet.bn); pip install 'bnparity[mxnet]'"


def _parity_records(path: Path) -> None:
    """parity.json from the real harness on 3 cases (torch), else a hand-written file of the same format."""
    cases = [c for c in standard_cases(["batchnorm"]) if c.name in ("nc-32x16-float32", "nchw-4x8x6x6-float64")]
    cases += [c for c in hard_cases(["batchnorm"]) if c.name == "nchw-16x4x8x8-float32-offset1e4"]
    cases += [c for c in standard_cases(["groupnorm"]) if c.name == "groupnorm-nchw-4x8x6x6-float32-g2"]
    if framework_installed("torch"):
        from bnparity.suites.parity.command import run_modes

        run_modes(frameworks=("torch",), modes=("matched", "defaults"), impls=("builtin", "scratch"), cases=cases,
                  json_path=path, quiet=True)
        doc = read_json(path)
    else:
        from bnparity.suites.parity.command import parity_doc
        from bnparity.suites.schema import LayerComparison, to_dict

        records = [LayerComparison(
            case=c.name, framework="torch", impl=impl, mode="matched", reference="matched",
            normalization=c.normalization,
            dtype=c.dtype, gate=c.gate, shape=c.shape, axis=c.axis, steps=c.steps, kappa=1.0, note=c.note,
            spec=c.spec.to_dict(), spec_adjusted=(), new_weight=getattr(c.spec, "new_weight", None), quantity=q,
            passed=True,
            max_abs_err=1e-7, max_rel_err=1e-6, worst_index=(0, 0), n_mismatched=0, n_total=8, atol=1e-5, rtol=1e-5,
            scale=1.0, worst_ratio=0.01) for c in cases for impl in ("builtin", "scratch") for q in ("y", "dx")]
        doc = to_dict(parity_doc(records, modes=("matched",), frameworks=("torch",), impls=("builtin", "scratch"),
                                 cases=cases, wall_time_s=None, complete=True))
    doc["records"].append({"case": None, "framework": "mxnet", "impl": "builtin", "mode": "matched", "gate": False,
                           "normalization": "batchnorm", "status": "skipped", "reason": UNAVAILABLE})
    write_json(path, doc)


def _model_parity(path: Path) -> None:
    base = {"preset": "tiny", "variant": "bn", "dropout": "mask", "dtype": "float32", "max_rel_err": 1e-6,
            "worst_index": (0,), "n_mismatched": 0, "n_total": 10, "atol": 1e-4, "rtol": 1e-4}
    records = (
        ModelComparison(**base, framework="torch", against="reference", kind="logits", quantity="logits", gate=True,
                        passed=True, max_abs_err=1e-6, scale=2.0, rel_err=1e-6 / 2.0, worst_ratio=0.01),
        ModelComparison(**base, framework="jax", against="torch", kind="grad", quantity="conv1.weight", gate=False,
                        passed=False, max_abs_err=0.02, scale=0.5, rel_err=0.02 / 0.5, worst_ratio=200.0),
        ModelNotRun(preset="tiny", variant="bn", dropout="mask", dtype="float32", framework="mxnet", status="skipped",
                    gate=False, passed=None, reason=UNAVAILABLE))
    meta = ModelParityMeta(
        environment=from_dict(Environment, environment()), preset="tiny", frameworks=("torch", "mxnet", "jax"),
        anchor="torch", configs=(ModelConfigLabel(preset="tiny", variant="bn", dropout="mask", dtype="float32", batch=8,
                                                  seed=0),),
        sgd={}, bn_momentum={}, tolerance=ModelTolerance(model="", c_model=1.0, depth=1, length=1, rtol={}),
        diagnostics=(), seconds={}, compile_counts={}, wall_time_s=1.0, complete=True)
    write_json(path, to_dict(ModelParityDoc(meta=meta, records=records)))


def _train(train_dir: Path, *, finished: bool, preset: str = "smoke") -> None:
    """Two frameworks × bn/nobn × 2 seeds of synthetic records (8 iterations an epoch) under the manifest of
    `preset`; the last run stops early unless `finished`."""
    preset = PRESETS[preset]
    runs = [RunId(f, v, s) for f in ("torch", "jax") for v in ("bn", "nobn") for s in (0, 1)]
    write_manifest(train_dir, TrainManifest(preset=preset, runs=tuple(r.name for r in runs), seeds=(0, 1),
                                            device="cpu", jobs=2, threads_per_job=1))
    for run in runs:
        stop = 3 if (run == runs[-1] and not finished) else 5
        with RecordWriter(run.records_path(train_dir), run) as out:
            for point, acc in enumerate(ACCURACY[run.variant][:stop]):
                iteration, epoch = 4 * point, (4 * point + 7) // 8
                acc += 0.01 * run.seed
                loss = None if point == 0 else 2.0 - 2.5 * acc
                out.write("eval", epoch=epoch, iteration=iteration, **fields(
                    "eval", test_accuracy=acc, test_loss=2.0 - acc, train_loss=loss, train_accuracy=acc,
                    epochs_done=iteration / 8, wall_time=float(point)))
                if point and point % 2 == 0:
                    out.write("epoch", epoch=epoch, iteration=iteration, **fields(
                        "epoch", test_accuracy=acc, wall_time=float(point), images_per_s=(
                            900.0 if run.variant == "bn" else 1000.0) * (2 if run.framework == "torch" else 1)))
            if stop == 5:
                out.write("done", epoch=2, iteration=16, **fields("done", test_accuracy=acc))


def make_run(tmp_path: Path, *, finished: bool = True, parity: Path | None = None, preset: str = "smoke") -> Path:
    """A small but complete run directory, laid out as `bnparity run` writes it (`parity`: a parity.json to copy;
    `preset`: the training manifest's, e.g. "paper" for the seed blog's setup)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if parity is None:
        _parity_records(run_dir / "parity.json")
    else:
        shutil.copyfile(parity, run_dir / "parity.json")
    _model_parity(run_dir / "model_parity.json")
    _train(run_dir / "train", finished=finished, preset=preset)
    write_json(run_dir / "conventions.json", {"format": "bnparity-conventions/2",
                                              "conventions": [c.to_dict() for c in all_conventions()],
                                              "layers": [r.to_dict() for r in all_layer_conventions()]})
    steps = {"parity": "done", "model-parity": "done", "train": "done" if finished else "interrupted",
             "report": "pending"}
    write_json(run_dir / "manifest.json", {"environment": environment(), "command": ["bnparity", "run"],
                                           "started": "2026-01-01T00:00:00+00:00",
                                           "finished": "2026-01-01T00:10:00+00:00", "steps": steps})
    return run_dir


@pytest.fixture(scope="module")
def parity_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("parity") / "parity.json"
    _parity_records(path)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, parity_file) -> tuple[Path, object]:
    run_dir = make_run(tmp_path_factory.mktemp("report"), parity=parity_file)
    return run_dir, build_report(run_dir)


def _section(html: str, section_id: str) -> str:
    m = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert m, section_id
    return m.group(1)


def test_every_section_is_present_and_nothing_is_fetched(built) -> None:
    run_dir, report = built
    html = report.html.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html and f'href="#{section}"' in html
    assert "http://" not in html and "https://" not in html and "<script" not in html and "<link" not in html
    sources = re.findall(r'\bsrc="([^"]*)"', html)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)  # + the seed blog's
    assert "@media print" in html and "INCOMPLETE" not in html


def test_parity_table_has_one_row_per_standard_case(built) -> None:
    run_dir, report = built
    html = report.html.read_text()
    cases = read_json(run_dir / "parity.json")["meta"]["cases"]
    for section, norm in (("layer-parity", "batchnorm"), ("layer-parity-groupnorm", "groupnorm")):
        table = re.search(r"<table.*?</table>", _section(html, section), re.S).group(0)
        standard = [c["name"] for c in cases if c["gate"] and c["normalization"] == norm]
        rows = re.findall(r"<tr><td[^>]*>([^<]*)</td>", table)
        assert rows == standard and standard, section
    assert UNAVAILABLE in _section(html, "layer-parity")
    # the per-normalization summary is the same computation on that normalization's records only
    summary = json.loads(report.summary_json.read_text())
    assert summary["normalizations"]["groupnorm"]["layer_parity"]["standard_cases"] == 1
    assert summary["normalizations"]["batchnorm"]["layer_parity"]["standard_cases"] == 2


def test_summary_json_counts_what_the_records_say(built) -> None:
    run_dir, report = built
    summary = json.loads(report.summary_json.read_text())
    assert set(summary) == SUMMARY_KEYS and summary["complete"] is True and summary["incomplete"] == []
    records = read_json(run_dir / "parity.json")["records"]
    gated = [r for r in records if r.get("mode") == "matched" and r.get("gate") and r["status"] == "ok"]
    assert summary["layer_parity"]["gated_comparisons"] == len(gated)
    assert summary["layer_parity"]["gate_failures"] == sum(not r["passed"] for r in gated) == 0
    assert [c["column"] for c in summary["layer_parity"]["columns"]] == ["torch/builtin", "torch/scratch"]
    assert summary["model_parity"]["skipped"] == {"mxnet": UNAVAILABLE}
    assert report.summary["model_parity"].skipped == {"mxnet": UNAVAILABLE}
    assert summary["figures"] == ["figures/curves.png", "figures/overlay.png", "figures/seed-blog.png"]
    for name in ("curves", "overlay", "seed-blog"):
        assert (run_dir / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '<img src="data:image/png;base64,' in _section(report.html.read_text(), "convergence")


def test_time_to_accuracy_and_speedup_hand_worked(built) -> None:
    """BN first reaches 0.5 at iteration 8 (both seeds), no-BN at 12: a speed-up of 12/8 = 1.5×."""
    _, report = built
    training = report.summary["training"]
    speed = {(s.framework, s.target): s for s in training.bn_speedup}
    assert speed[("torch", 0.5)].speedup == pytest.approx(1.5)
    assert speed[("torch", 0.3)].speedup == pytest.approx(8 / 4)
    cfg = {(c.framework, c.variant): c for c in training.configs}
    final = cfg[("torch", "bn")].final_test_accuracy
    assert final.mean == pytest.approx(0.625) and final.std == pytest.approx(0.01 / 2**0.5) and final.n == 2
    assert cfg[("torch", "bn")].images_per_s == pytest.approx(1800.0)
    assert any("1.50× fewer iterations" in v for v in report.summary["verdicts"])
    throughput = _section(report.html.read_text(), "throughput")
    assert "<td>1800</td><td>2000</td><td>0.90</td>" in throughput


def test_markdown_has_the_tables_and_links_the_figures(built) -> None:
    run_dir, report = built
    md = report.markdown.read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (run_dir / link).exists()
    assert md.count("](figures/") == 3
    standard = [c["name"] for c in read_json(run_dir / "parity.json")["meta"]["cases"] if c["gate"]]
    for case in standard:
        assert re.search(rf"^\| {re.escape(case)} \|", md, re.M)


def test_a_failed_gate_is_red_with_its_numbers(tmp_path, parity_file) -> None:
    run_dir = make_run(tmp_path, parity=parity_file)
    doc = read_json(run_dir / "parity.json")
    victim = next(r for r in doc["records"] if r.get("mode") == "matched" and r.get("gate") and r["status"] == "ok")
    victim.update(passed=False, worst_ratio=3.5, max_abs_err=0.25, n_mismatched=4)
    write_json(run_dir / "parity.json", doc)
    report = build_report(run_dir, out_dir=tmp_path / "out")
    assert report.summary["layer_parity"]["gate_failures"] == 1
    assert victim["case"] in report.summary["layer_parity"]["columns"][0]["failed_cases"] + \
        report.summary["layer_parity"]["columns"][1]["failed_cases"]
    html = report.html.read_text()
    assert re.search(r'<td class="fail" title="worst quantity [^"]*4 of', html)
    assert "2.5e-01 · 3.5" in html and "1 gated comparisons FAIL" in report.summary["verdicts"][0]


def test_interrupted_run_is_reported_incomplete(tmp_path, parity_file) -> None:
    run_dir = make_run(tmp_path, finished=False, parity=parity_file)
    doc = read_json(run_dir / "parity.json")
    doc["meta"]["complete"] = False
    write_json(run_dir / "parity.json", doc)
    (run_dir / "model_parity.json").unlink()
    report = build_report(run_dir)
    parts = {p["part"]: p["status"] for p in report.summary["incomplete"]}
    assert parts == {"manifest": "partial", "parity": "partial", "model_parity": "missing", "train": "partial"}
    assert report.summary["complete"] is False
    html = report.html.read_text()
    assert 'id="incomplete"' in html and "jax-nobn-seed1" in html
    assert "Not available in this run: model_parity.json" in _section(html, "model-parity")
    assert all(f'<section id="{s}">' in html for s in SECTIONS)


def test_missing_training_directory(tmp_path, parity_file) -> None:
    run_dir = make_run(tmp_path, parity=parity_file)
    for path in sorted((run_dir / "train").iterdir()):
        path.unlink()
    (run_dir / "train").rmdir()
    report = build_report(run_dir)
    assert report.summary["training"] is None and report.figures == []
    assert {p["part"] for p in report.summary["incomplete"]} == {"train"}
    assert "Not available in this run" in _section(report.html.read_text(), "convergence")


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_bad_run_dir_is_one_line_and_exit_2(tmp_path, capsys, make) -> None:
    path = tmp_path / "nope"
    if make == "empty":
        path.mkdir()
    elif make == "file":
        path.write_text("x")
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bnparity report: error: RUN_DIR must")


def test_report_never_imports_a_framework(built) -> None:
    run_dir, _ = built
    code = ("import sys; from pathlib import Path; from bnparity.reports.build import build_report; "
            f"build_report(Path({str(run_dir)!r}), out_dir=Path({str(run_dir / 'again')!r})); "
            "print(sorted(m for m in ('torch', 'mxnet', 'jax', 'flax', 'optax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_porting_guide_links_existing_tests_and_every_pair(built, tmp_path) -> None:
    run_dir, _ = built
    text = write_porting_guide(parity_path=run_dir / "parity.json", out=tmp_path / "porting.md")
    for pair in ("PyTorch ↔ MXNet Gluon", "PyTorch ↔ JAX/Flax", "MXNet Gluon ↔ JAX/Flax"):
        assert f"## {pair}" in text
    assert "momentum=0.01" in text and "use_fast_variance=False" in text
    assert "momentum in PyTorch = 1 − momentum in MXNet Gluon" in text
    links = re.findall(r"\[`([\w.]+)::(\w+)`\]\(\.\./(tests/[\w.]+)\)", text)
    assert links
    for file_name, name, target in links:
        assert Path(target).name == file_name and name in function_names(ROOT / target)


def test_committed_porting_guide_cites_only_existing_tests() -> None:
    guide = ROOT / "docs" / "porting.md"
    text = guide.read_text()
    links = re.findall(r"\[`[\w.]+::(\w+)`\]\(\.\./(tests/[\w.]+)\)", text)
    assert len(links) > 20
    missing = [f"{t}::{n}" for n, t in links if n not in function_names(ROOT / t)]
    assert missing == []


def test_porting_guide_refuses_a_missing_test(built, tmp_path, monkeypatch) -> None:
    run_dir, _ = built
    monkeypatch.setitem(PROOFS, "flatten", [ProofRef("tests/test_alexnet.py", "test_that_does_not_exist")])
    with pytest.raises(UserError, match=r"cites tests that do not exist: tests/test_alexnet.py::test_that_does_not"):
        write_porting_guide(parity_path=run_dir / "parity.json", out=tmp_path / "p.md")
    assert porting_facts.missing_tests([ProofRef("tests/nope.py", "x")]) == ["tests/nope.py::x"]


def test_tutorial_pitfalls_closed_form() -> None:
    rows = {(r.variant.split(" ")[0], r.steps): r for r in tutorial_pitfalls(steps=(1, 100))}
    assert rows[("correct", 1)].eval_vs_correct == 0.0
    # After one step from 0 instead of 1, the running variance is 0.1·σ²_B instead of 0.9 + 0.1·σ²_B.
    assert rows[("moving_var", 1)].eval_vs_correct > 0.5
    assert rows[("moving_var", 100)].eval_vs_correct < 1e-3  # 0.9^100 ≈ 2.7e-5: the zero start is forgotten
    assert rows[("momentum", 100)].eval_vs_population > 3 * rows[("correct", 100)].eval_vs_population


@pytest.mark.parametrize("m", [8, 128])
def test_running_var_gap_tends_to_one_over_m_minus_one(m: int) -> None:
    (row,) = variance_gap(ms=(m,), steps=(200,))
    assert row.running_var_gap == pytest.approx(1 / (m - 1), rel=1e-6)


def test_report_command_writes_the_porting_guide_too(built, tmp_path, capsys) -> None:
    run_dir, _ = built
    out, guide = tmp_path / "out", tmp_path / "docs" / "porting.md"
    assert main(["report", str(run_dir), "--out", str(out), "--porting", str(guide)]) == 0
    assert (out / "report.html").exists() and (out / "summary.json").exists()
    assert guide.read_text().startswith("<!-- Generated by `python -m bnparity.reports.porting`")
    assert re.search(r"Layer parity( of \w+)? \(matched semantics\)", capsys.readouterr().out)


def test_porting_module_refuses_a_file_that_is_not_a_parity_record(tmp_path, capsys) -> None:
    from bnparity.reports.porting import main as porting_main

    bad = tmp_path / "x.json"
    write_json(bad, {"format": "something-else/1"})
    assert porting_main(["--parity", str(bad), "--out", str(tmp_path / "p.md")]) == 2
    assert "must be a bnparity-parity/2 record file" in capsys.readouterr().err
    assert not (tmp_path / "p.md").exists()


def test_a_normalizations_conventions_section_shows_each_frameworks_row(built) -> None:
    from bnparity.frameworks.conventions import layer_conventions

    _, report = built
    section = _section(report.html.read_text(), "conventions-groupnorm")
    rows = layer_conventions("groupnorm")
    assert rows and all(html.escape(r.layer) in section for r in rows)
    for r in rows:  # every spec-field default of each row, and each of its other facts as a bullet
        for key, value in r.defaults.items():
            if key in ("groups", "eps") and value is not None:
                shown = f"{value:g}" if isinstance(value, float) else str(value)
                assert shown in section, (r.framework, key)
    assert "required" in section  # PyTorch's num_groups has no default
