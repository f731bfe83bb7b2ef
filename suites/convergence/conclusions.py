"""What a training run directory shows, computed from its JSONL records only: conclusions.json.

Definitions:
- time to a target: the first evaluation point whose test accuracy is >= the target (iteration, fractional
  epochs done, 1-based epoch, wall time); null when no point reaches it. A configuration's figure is the mean
  over the seeds that reached it, with how many did.
- final test accuracy: the last evaluation of each completed run; mean, sample std (ddof=1; null with one
  seed) and count over seeds.
- BN speed-up (per framework and target): mean iterations-to-target without BN / with BN, given only when
  every seed of both variants reached the target; when BN reached it in every seed and no completed no-BN
  run did, ``at_least`` is the lower bound (iterations no-BN ran) / (iterations BN needed).
- agreement across frameworks (per variant and pair f, g), at every evaluation iteration both have:
  |mean_f - mean_g| <= K * max(std_f, std_g, FLOOR) with means and stds of test accuracy over seeds (std 0
  with one seed). The curves agree when every common point passes. K = 3, FLOOR = 0.01: with one seed two
  curves agree when they are within 3 accuracy points everywhere.

conclusions.json (format "bnparity-train-conclusions/1"): run_dir, preset, targets, complete (every run done
or skipped); runs: {name: status ("done", "failed", "skipped", "interrupted", "incomplete", "not started"),
epochs_completed, iterations, final_test_accuracy, last_test_accuracy, best_test_accuracy, images_per_s,
wall_time, message}; configs: [{framework, variant, seeds, seeds_done, final_test_accuracy: {mean, std, n},
best_test_accuracy, images_per_s, targets: {"0.85": {reached, of, iterations_mean, epochs_mean, per_seed:
{seed: {iteration, epochs_done, epoch, wall_time} | null}}}}]; bn_speedup: [{framework, target, iterations_bn,
iterations_nobn, speedup, at_least}]; agreement: {criterion, k, floor, pairs: [{variant, frameworks, points,
outside, max_abs_diff, worst_iteration, agree}]}; published: [{framework, variant, epoch, published,
measured_mean, n}]; incomplete: [{run, status, epochs_completed, iterations, message}]; skipped: {name: reason}.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import Any

from bnparity.suites.records import write_json

from .records import CONCLUSIONS, RunId, read_manifest, read_records

FORMAT = "bnparity-train-conclusions/1"
K = 3.0
FLOOR = 0.01
CRITERION = (f"at each common evaluation iteration: |mean_f - mean_g| <= {K:g} * max(std_f, std_g, {FLOOR:g}) "
             "(test accuracy, mean and sample std over seeds, std 0 with one seed); agree = every point passes")


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def time_to_target(evals: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first evaluation record at or above `target` test accuracy, as a small dict; None if none is."""
    for r in evals:
        if r["test_accuracy"] is not None and r["test_accuracy"] >= target:
            return {"iteration": r["iteration"], "epochs_done": r.get("epochs_done"), "epoch": r["epoch"],
                    "wall_time": r.get("wall_time")}
    return None


def run_summary(run: RunId, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Status and figures of one run from its records ("not started" when there are none)."""
    last = records[-1] if records else None
    status = {None: "not started", "done": "done", "failed": "failed", "skipped": "skipped",
              "interrupted": "interrupted"}.get(last and last["kind"], "incomplete")
    evals = [r for r in records if r["kind"] == "eval"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    accuracies = [r["test_accuracy"] for r in evals if r["test_accuracy"] is not None]
    speeds = [r["images_per_s"] for r in epochs if r.get("images_per_s")]
    message = (last.get("error") or last.get("reason") or "") if last else ""
    return {"framework": run.framework, "variant": run.variant, "seed": run.seed, "status": status,
            "epochs_completed": len(epochs), "iterations": last["iteration"] if last else 0,
            "final_test_accuracy": evals[-1]["test_accuracy"] if evals and status == "done" else None,
            "last_test_accuracy": evals[-1]["test_accuracy"] if evals else None,
            "best_test_accuracy": max(accuracies, default=None), "images_per_s": _mean(speeds),
            "wall_time": epochs[-1]["wall_time"] if epochs else None, "message": message}


def _config(framework: str, variant: str, runs: list[RunId], summaries: dict[str, dict],
            curves: dict[str, list[dict]], targets: list[float]) -> dict[str, Any]:
    finals = [summaries[r.name]["final_test_accuracy"] for r in runs
              if summaries[r.name]["final_test_accuracy"] is not None]
    bests = [summaries[r.name]["best_test_accuracy"] for r in runs
             if summaries[r.name]["best_test_accuracy"] is not None]
    speeds = [summaries[r.name]["images_per_s"] for r in runs if summaries[r.name]["images_per_s"]]
    started = [r for r in runs if curves[r.name]]
    to_target = {}
    for target in targets:
        per_seed = {r.seed: time_to_target(curves[r.name], target) for r in started}
        hit = [p for p in per_seed.values() if p is not None]
        to_target[f"{target:g}"] = {
            "reached": len(hit), "of": len(started),
            "iterations_mean": _mean([p["iteration"] for p in hit]),
            "epochs_mean": _mean([p["epochs_done"] for p in hit if p["epochs_done"] is not None]),
            "per_seed": {str(seed): p for seed, p in per_seed.items()}}
    return {"framework": framework, "variant": variant, "seeds": [r.seed for r in runs],
            "seeds_done": sum(summaries[r.name]["status"] == "done" for r in runs),
            "final_test_accuracy": {"mean": _mean(finals), "std": _std(finals), "n": len(finals)},
            "best_test_accuracy": max(bests, default=None), "images_per_s": _mean(speeds),
            "targets": to_target}


def _speedups(configs: dict[tuple[str, str], dict], curves: dict[str, list[dict]], runs: list[RunId],
              targets: list[float]) -> list[dict[str, Any]]:
    out = []
    for framework in sorted({f for f, _ in configs}):
        bn, nobn = configs.get((framework, "bn")), configs.get((framework, "nobn"))
        if bn is None or nobn is None:
            continue
        nobn_ran = max((curves[r.name][-1]["iteration"] for r in runs
                        if r.framework == framework and r.variant == "nobn" and curves[r.name]), default=0)
        for target in targets:
            key = f"{target:g}"
            b, n = bn["targets"][key], nobn["targets"][key]
            bn_all = b["of"] > 0 and b["reached"] == b["of"]
            nobn_all = n["of"] > 0 and n["reached"] == n["of"]
            entry = {"framework": framework, "target": target, "iterations_bn": b["iterations_mean"],
                     "iterations_nobn": n["iterations_mean"], "speedup": None, "at_least": None}
            if bn_all and nobn_all:
                entry["speedup"] = n["iterations_mean"] / b["iterations_mean"]
            elif bn_all and n["reached"] == 0 and nobn["seeds_done"] == len(nobn["seeds"]) and nobn_ran:
                entry["at_least"] = nobn_ran / b["iterations_mean"]
            out.append(entry)
    return out


def _curve_stats(runs: list[RunId], curves: dict[str, list[dict]]) -> dict[int, tuple[float, float, int]]:
    """iteration -> (mean, std, n) of test accuracy over the seeds that evaluated at that iteration."""
    by_iteration: dict[int, list[float]] = {}
    for r in runs:
        for e in curves[r.name]:
            if e["test_accuracy"] is not None:
                by_iteration.setdefault(e["iteration"], []).append(e["test_accuracy"])
    return {i: (statistics.fmean(v), _std(v) or 0.0, len(v)) for i, v in by_iteration.items()}


def _agreement(runs: list[RunId], curves: dict[str, list[dict]]) -> list[dict[str, Any]]:
    pairs = []
    for variant in sorted({r.variant for r in runs}):
        frameworks = sorted({r.framework for r in runs if r.variant == variant})
        stats = {f: _curve_stats([r for r in runs if r.framework == f and r.variant == variant], curves)
                 for f in frameworks}
        for f, g in itertools.combinations(frameworks, 2):
            common = sorted(set(stats[f]) & set(stats[g]))
            if not common:
                continue
            outside, worst = 0, (-1.0, None)
            for i in common:
                (mf, sf, _), (mg, sg, _) = stats[f][i], stats[g][i]
                diff = abs(mf - mg)
                outside += diff > K * max(sf, sg, FLOOR)
                worst = max(worst, (diff, i), key=lambda w: w[0])
            pairs.append({"variant": variant, "frameworks": [f, g], "points": len(common), "outside": outside,
                          "max_abs_diff": worst[0], "worst_iteration": worst[1], "agree": outside == 0})
    return pairs


def _published(preset: dict[str, Any], configs: dict[tuple[str, str], dict], runs: list[RunId],
               records: dict[str, list[dict]]) -> list[dict[str, Any]]:
    out = []
    for variant, epoch, accuracy in preset.get("published", ()):
        for framework in sorted({f for f, v in configs if v == variant}):
            measured = [r["test_accuracy"] for run in runs if run.framework == framework and run.variant == variant
                        for r in records[run.name] if r["kind"] == "epoch" and r["epoch"] == epoch]
            out.append({"framework": framework, "variant": variant, "epoch": epoch, "published": accuracy,
                        "measured_mean": _mean(measured), "n": len(measured)})
    return out


def compute_conclusions(run_dir: Path) -> dict[str, Any]:
    """The conclusions of `run_dir` (complete or not) from its manifest and JSONL files."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    preset = manifest["preset"]
    targets = [float(t) for t in preset["targets"]]
    runs = [RunId.parse(name) for name in manifest["runs"]]
    records = {r.name: read_records(r.records_path(run_dir)) for r in runs}
    curves = {name: [r for r in recs if r["kind"] == "eval"] for name, recs in records.items()}
    summaries = {r.name: run_summary(r, records[r.name]) for r in runs}
    trained = [r for r in runs if summaries[r.name]["status"] not in ("skipped", "not started")]
    groups: dict[tuple[str, str], list[RunId]] = {}
    for r in trained:
        groups.setdefault((r.framework, r.variant), []).append(r)
    configs = {key: _config(*key, group, summaries, curves, targets) for key, group in groups.items()}
    return {
        "format": FORMAT, "run_dir": str(run_dir), "preset": preset["name"], "targets": targets,
        "complete": all(s["status"] in ("done", "skipped") for s in summaries.values()),
        "runs": summaries,
        "configs": list(configs.values()),
        "bn_speedup": _speedups(configs, curves, trained, targets),
        "agreement": {"criterion": CRITERION, "k": K, "floor": FLOOR, "pairs": _agreement(trained, curves)},
        "published": _published(preset, configs, trained, records),
        "incomplete": [{"run": name, **{k: s[k] for k in ("status", "epochs_completed", "iterations", "message")}}
                       for name, s in summaries.items() if s["status"] not in ("done", "skipped")],
        "skipped": {name: s["message"] for name, s in summaries.items() if s["status"] == "skipped"},
    }


def write_conclusions(run_dir: Path) -> dict[str, Any]:
    """Compute the conclusions of `run_dir` and write them to its conclusions.json; returns them."""
    conclusions = compute_conclusions(run_dir)
    write_json(Path(run_dir) / CONCLUSIONS, conclusions)
    return conclusions


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def format_conclusions(c: dict[str, Any]) -> str:
    """A compact text summary of `c` for the terminal."""
    targets = [f"{t:g}" for t in c["targets"]]
    lines = [f"{'config':<12} {'seeds':>5} {'final test acc':>18} {'best':>7} {'img/s':>7}  "
             + "  ".join(f"ep→{t:<5}" for t in targets)]
    for cfg in c["configs"]:
        final = cfg["final_test_accuracy"]
        acc = _fmt(final["mean"]) + (f" ± {final['std']:.4f}" if final["std"] is not None else "")
        reach = [_fmt(cfg["targets"][t]["epochs_mean"], ".2f") for t in targets]
        lines.append(f"{cfg['framework'] + '-' + cfg['variant']:<12} {cfg['seeds_done']:>2}/{len(cfg['seeds']):<2} "
                     f"{acc:>18} {_fmt(cfg['best_test_accuracy']):>7} {_fmt(cfg['images_per_s'], '.0f'):>7}  "
                     + "  ".join(f"{r:<8}" for r in reach))
    for s in c["bn_speedup"]:
        if s["speedup"] is not None or s["at_least"] is not None:
            value = f"{s['speedup']:.2f}x" if s["speedup"] is not None else f">= {s['at_least']:.2f}x"
            lines.append(f"BN speed-up {s['framework']} to {s['target']:g}: {value} fewer iterations")
    for p in c["agreement"]["pairs"]:
        verdict = "agree" if p["agree"] else f"differ at {p['outside']} of {p['points']} points"
        lines.append(f"{p['variant']}: {' vs '.join(p['frameworks'])} {verdict} "
                     f"(max |Δ acc| {p['max_abs_diff']:.4f} at iteration {p['worst_iteration']})")
    for p in c["published"]:
        lines.append(f"{p['framework']}-{p['variant']} after epoch {p['epoch']}: test accuracy "
                     f"{_fmt(p['measured_mean'])} (published: {p['published']:.3f})")
    for item in c["incomplete"]:
        lines.append(f"{item['status']}: {item['run']} after {item['epochs_completed']} epochs"
                     + (f": {item['message']}" if item["message"] else ""))
    return "\n".join(lines)
