"""The report's verdict at a glance and the seed blog beside the run: cells computed from the records (a failing gate
fails, a defaults difference differs by default, an absent part is not run), each linked to an existing section;
the seed comparison made of the seed's numbers and ours (change a record, the text changes); the paper preset's
overlay."""

from __future__ import annotations

import json
import re

import pytest
from test_reports import ACCURACY, make_run, parity_file  # noqa: F401  (parity_file: a fixture)

from bnparity.frameworks.registry import baseline, display_name
from bnparity.reference.alexnet import ARCH_PRESETS
from bnparity.reports.build import build_report
from bnparity.reports.load import load_run
from bnparity.reports.seed_sections import RULES, seed_figures
from bnparity.reports.verdict import TEXT, Verdict
from bnparity.seeds.facts import BLOG_SETUP
from bnparity.seeds.tables import blog_curve
from bnparity.suites.convergence.presets import PRESETS
from bnparity.suites.records import read_json, write_json
from bnparity.suites.schema import BASELINE_REFERENCE, from_dict


def _section(html: str, section_id: str) -> str:
    m = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert m, section_id
    return m.group(1)


def _cells(report) -> dict[tuple[str, str], object]:
    v: Verdict = report.summary["verdict"]
    return {(row.key, c.framework): c for row in v.rows for c in row.cells}


@pytest.fixture(scope="module")
def built(tmp_path_factory, parity_file):  # noqa: F811
    run_dir = make_run(tmp_path_factory.mktemp("verdict"), parity=parity_file)
    return run_dir, build_report(run_dir)


def test_the_verdict_opens_the_report_and_every_cell_links_to_a_section(built) -> None:
    _, report = built
    html, md = report.html.read_text(), report.markdown.read_text()
    ids = set(re.findall(r'<section id="([^"]+)">', html))
    assert report.summary["sections"][:2] == ["verdict", "summary"]
    assert html.index('<section id="verdict">') < html.index('<section id="summary">')
    table = _section(html, "verdict")
    v: Verdict = report.summary["verdict"]
    assert v.frameworks and [c.framework for c in v.rows[0].cells] == list(v.frameworks)
    for fw in v.frameworks:
        assert f"<th>{display_name(fw)}</th>" in table
    links = re.findall(r'<a href="#([^"]+)">([^<]*)</a>', table)
    assert len(links) == sum(len(r.cells) for r in v.rows)
    assert {target for target, _ in links} <= ids
    md_links = re.findall(r"\[([^\]]+)\]\(#([^)]+)\)", md.split("## Verdict at a glance")[1].split("## Summary")[0])
    assert len(md_links) == len(links) and {t for _, t in md_links} <= ids
    assert md.index("## Verdict at a glance") < md.index("## Summary")


def test_verdict_cells_are_computed_from_the_records(built) -> None:
    _, report = built
    cells = _cells(report)
    assert cells[("batchnorm", "torch")].status == "agree"
    assert cells[("batchnorm", "mxnet")].status == "skipped"  # parity.json holds only its "not installed" record
    assert cells[("layernorm", "torch")].status == "not run"  # the fabricated parity.json has no LayerNorm case
    assert cells[("model", "torch")].status == "agree" and cells[("model", "mxnet")].status == "skipped"
    assert cells[("replicas", "torch")].status == "not run"  # no sync_parity.json, no dp_parity.json
    assert cells[("fold", "torch")].section == "environment"  # this run directory has no fold part, hence no section
    # what BN buys, hand-worked from the fabricated curves: final accuracy (last point, seeds 0 and 1) and the
    # epochs to the highest target BN reached in every seed (0.5 at iteration 8 = epoch 1; no-BN at 12 = 1.5)
    gain = ACCURACY["bn"][-1] - ACCURACY["nobn"][-1]
    training = cells[("training", "torch")]
    assert training.status == "buys"
    assert training.text == f"{gain:+.3f} final acc.; 50 % in 1.0 vs 1.5 epochs"


def test_a_failing_gate_makes_a_fails_cell(tmp_path, parity_file) -> None:  # noqa: F811
    run_dir = make_run(tmp_path, parity=parity_file)
    doc = read_json(run_dir / "parity.json")
    victim = next(r for r in doc["records"] if r.get("mode") == "matched" and r.get("gate") and r["status"] == "ok"
                  and r["normalization"] == "batchnorm")
    victim.update(passed=False, worst_ratio=3.5)
    write_json(run_dir / "parity.json", doc)
    report = build_report(run_dir)
    cell = _cells(report)[("batchnorm", victim["framework"])]
    assert cell.status == "fails" and victim["case"] in cell.detail and cell.section == "layer-parity"
    table = _section(report.html.read_text(), "verdict")
    assert re.search(r'<td class="fail" title="[^"]*"><a href="#layer-parity">fails \(1\)</a></td>', table)
    assert "[fails (1)](#layer-parity) ✗" in report.markdown.read_text()
    assert _cells(report)[("groupnorm", victim["framework"])].status == "agree"  # the other rows are unchanged


def test_a_defaults_difference_makes_differs_by_default(tmp_path, parity_file) -> None:  # noqa: F811
    run_dir = make_run(tmp_path, parity=parity_file)
    doc = read_json(run_dir / "parity.json")
    matched = next(r for r in doc["records"] if r.get("mode") == "matched" and r.get("gate") and r["status"] == "ok"
                   and r["normalization"] == "batchnorm" and r["impl"] == "builtin")
    doc["records"].append({**matched, "mode": "defaults", "reference": BASELINE_REFERENCE, "gate": False,
                           "quantity": "running_var", "passed": False, "worst_ratio": 7.5})
    write_json(run_dir / "parity.json", doc)
    report = build_report(run_dir)
    cell = _cells(report)[("batchnorm", matched["framework"])]
    assert cell.status == "differs" and cell.text == TEXT["differs"] == "differs by default"
    assert cell.section == "conventions" and "running_var up to 7.5×" in cell.detail
    assert display_name(baseline().name) in cell.detail
    assert '<a href="#conventions">differs by default</a>' in _section(report.html.read_text(), "verdict")


def test_absent_parts_are_not_run_and_summary_json_keeps_the_verdict_typed(tmp_path, parity_file) -> None:  # noqa: F811
    run_dir = make_run(tmp_path, parity=parity_file)
    (run_dir / "model_parity.json").unlink()
    report = build_report(run_dir)
    row = next(r for r in report.summary["verdict"].rows if r.key == "model")
    assert {c.status for c in row.cells} == {"not run"} and all(c.section == "model-parity" for c in row.cells)
    assert all("model_parity.json" in c.detail for c in row.cells)
    saved = json.loads(report.summary_json.read_text())["verdict"]
    assert from_dict(Verdict, saved) == report.summary["verdict"]


def _end_gap(acc: dict[str, tuple[float, ...]], point: int) -> float:
    """BN − no BN test accuracy of the fabricated runs at evaluation `point`, mean over seeds 0 and 1."""
    mean = {v: sum(acc[v][point] + 0.01 * s for s in (0, 1)) / 2 for v in ("bn", "nobn")}
    return mean["bn"] - mean["nobn"]


def test_the_seed_panel_states_the_setups_and_both_numbers(built) -> None:
    run_dir, report = built
    section = _section(report.html.read_text(), "convergence")
    assert '<figure id="figure-seed-blog"><img src="data:image/png;base64,' in section
    assert "figure-seed-overlay" not in section  # the smoke preset is not the blog's setup: a panel of its own
    ours, blog = PRESETS["smoke"], ARCH_PRESETS["paper"]
    for text in (f"{blog.image_size}×{blog.image_size}", f"{ours.image_size}×{ours.image_size}",
                 f"{blog.dense} and {BLOG_SETUP.bn_second_dense} with BN", f"SGD lr {ours.lr:g}",
                 f"SGD lr {PRESETS['paper'].lr:g}", str(ours.train_subset)):
        assert text in section, text
    bn, nobn = blog_curve("bn"), blog_curve("nobn")
    seed_gap = bn[-1].test_acc - nobn[-1].test_acc
    ends = re.search(r"End point \(does BN change it\?\):</strong> (.*?)</li>", section).group(1)
    assert f"BN − no BN {seed_gap:+.3f} ({bn[-1].test_acc:.3f} with BN vs {nobn[-1].test_acc:.3f}" in ends
    assert f"PyTorch {_end_gap(ACCURACY, -1):+.3f}" in ends
    first = re.search(r"After epoch 1 \(BN's lead\):</strong> (.*?)</li>", section).group(1)
    assert f"BN − no BN {bn[0].test_acc - nobn[0].test_acc:+.3f}" in first
    assert f"PyTorch {_end_gap(ACCURACY, 2):+.3f}" in first  # evaluation point 2: iteration 8 = the end of epoch 1
    assert f"{bn[-1].train_loss:.4f} with BN vs {nobn[-1].train_loss:.4f}" in section
    assert all(rule in section for rule in RULES.values())
    c = report.summary["seed_comparison"]
    assert c.same_setup is False and {r.key: r.seed for r in c.rows}["end_gap"] == pytest.approx(seed_gap)


def test_changing_a_record_changes_the_seed_comparison(tmp_path, parity_file, monkeypatch) -> None:  # noqa: F811
    changed = {"bn": ACCURACY["bn"][:-1] + (0.50,), "nobn": ACCURACY["nobn"][:-1] + (0.66,)}  # BN now ends behind
    monkeypatch.setitem(ACCURACY, "bn", changed["bn"])
    monkeypatch.setitem(ACCURACY, "nobn", changed["nobn"])
    report = build_report(make_run(tmp_path, parity=parity_file))
    gap = _end_gap(changed, -1)
    assert gap < 0
    row = {r.key: r for r in report.summary["seed_comparison"].rows}["end_gap"]
    assert row.ours["torch"] == pytest.approx(gap) and row.agree["torch"] is False
    ends = re.search(r"End point \(does BN change it\?\):</strong> (.*?)</li>",
                     _section(report.html.read_text(), "convergence")).group(1)
    assert f"PyTorch {gap:+.3f}" in ends and "disagrees: the opposite sign" in ends
    assert _cells(report)[("training", "torch")].status == "no gain"


def test_the_paper_preset_draws_the_seed_on_our_axes(tmp_path, parity_file) -> None:  # noqa: F811
    run_dir = make_run(tmp_path, parity=parity_file, preset="paper")
    report = build_report(run_dir)
    assert "figures/seed-overlay.png" in report.summary["figures"]
    assert "figures/seed-blog.png" not in report.summary["figures"]
    (figure,) = seed_figures(load_run(run_dir))
    lines = {(s.framework, s.variant, s.metric) for s in figure.series}
    for who in ("seed", "torch", "jax"):
        for variant in ("bn", "nobn"):
            assert (who, variant, "test_accuracy") in lines and (who, variant, "train_loss") in lines
    seed = next(s for s in figure.series if s.framework == "seed" and s.variant == "bn" and s.metric == "test_accuracy")
    assert seed.values == tuple(r.test_acc for r in blog_curve("bn"))
    section = _section(report.html.read_text(), "convergence")
    assert '<figure id="figure-seed-overlay">' in section and "figure-seed-blog" not in section
    assert report.summary["seed_comparison"].same_setup is True
    assert "reproduces the seed blog" in section


def test_without_training_records_there_is_no_seed_panel(tmp_path, parity_file) -> None:  # noqa: F811
    run_dir = make_run(tmp_path, parity=parity_file)
    for path in sorted((run_dir / "train").iterdir()):
        path.unlink()
    (run_dir / "train").rmdir()
    report = build_report(run_dir)
    assert report.summary["seed_comparison"] is None and report.figures == []
    assert "Not available in this run" in _section(report.html.read_text(), "convergence")
    training = next(r for r in report.summary["verdict"].rows if r.key == "training")
    assert {c.status for c in training.cells} == {"not run"}


def test_a_framework_the_main_job_does_not_train_says_so() -> None:
    from types import SimpleNamespace

    from bnparity.frameworks.registry import descriptors
    from bnparity.reports.verdict import _sat_out

    sitting = [d.name for d in descriptors() if "train" in d.main_job_sits_out]
    training = [d.name for d in descriptors() if "train" not in d.main_job_sits_out]
    if not sitting:
        pytest.skip("no framework sits out the main job's training step")
    main_job = SimpleNamespace(manifest=SimpleNamespace(command=("bnparity", "run")))
    cell = _sat_out(main_job, sitting[0], "convergence")
    assert cell.status == "not run" and f"--frameworks {sitting[0]}" in cell.detail
    assert _sat_out(main_job, training[0], "convergence") is None  # it trains: its absence is another story
    named = SimpleNamespace(manifest=SimpleNamespace(command=("bnparity", "run", "--frameworks", sitting[0])))
    assert _sat_out(named, sitting[0], "convergence") is None  # asked for by name: the main job did not leave it out
    assert _sat_out(SimpleNamespace(manifest=None), sitting[0], "convergence") is None  # not a main job's run
