"""Checks every framework's fold.py must pass (tests/test_<framework>_fold.py): every case it runs passes, a skip
carries a one-line reason, a deliberately wrong fold fails, and its whole-network fold matches the reference's."""

from __future__ import annotations

import numpy as np

from bnparity.frameworks.folding import Folds
from bnparity.reference.alexnet import init_params, variant_spec
from bnparity.suites.fold.alexnet import fold_one
from bnparity.suites.fold.cases import fold_cases
from bnparity.suites.fold.harness import run_folds
from bnparity.suites.fold.records import FoldComparison, FoldSkip


def check_every_case(folds: Folds, *, skipped: set[str]) -> list[FoldComparison]:
    """Run every case; each one run passes, and exactly the cases named in `skipped` (by "<class>/<dtype>/<layout>"
    fragments) are skipped, each with a one-line reason naming the framework."""
    records = list(run_folds(folds, fold_cases()))
    comparisons = [r for r in records if isinstance(r, FoldComparison)]
    skips = [r for r in records if isinstance(r, FoldSkip)]
    assert comparisons and all(r.status == "skipped" for r in skips), [r for r in skips if r.status != "skipped"]
    failed = [(r.impl, r.case, r.worst_ratio) for r in comparisons if not r.passed]
    assert failed == []
    for s in skips:
        assert s.reason and "\n" not in s.reason and s.reason.startswith(folds.framework), s
    whole = {s.impl for s in skips if s.case is None}
    assert whole == {impl for impl in ("builtin", "scratch") if impl not in folds.impls}
    got = {s.case for s in skips if s.case is not None}
    assert got == {c.name for c in fold_cases() if any(f in c.name for f in skipped)} if skipped else got == set()
    return comparisons


def tiny_network(seed: int = 4) -> tuple[object, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The tiny BN AlexNet with non-trivial γ, β and running statistics (one channel nearly constant), and images."""
    spec = variant_spec("tiny", "bn")
    rng = np.random.default_rng(seed)
    params = init_params(spec, seed=0)
    for name in params:
        if name.endswith(("running_mean", "beta")):
            params[name] = rng.normal(0.0, 0.5, params[name].shape).astype(np.float32)
        elif name.endswith("gamma"):
            params[name] = rng.normal(1.0, 0.5, params[name].shape).astype(np.float32)
        elif name.endswith("running_var"):
            v = rng.uniform(0.2, 2.0, params[name].shape)
            v[0] = 1e-8
            params[name] = v.astype(np.float32)
    images = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    return spec, params, images, rng.integers(0, 10, 16)


def check_alexnet(folds: Folds, wrong: Folds) -> None:
    """`folds` folds the tiny network within the bounds and keeps every prediction; `wrong` is caught."""
    spec, params, images, labels = tiny_network()
    record = fold_one(folds, "tiny", 0, spec, params, images, labels, reference_images=4)
    assert record.impl == folds.alexnet_impl and record.passed, record
    assert record.max_weight_ratio <= 1 and record.argmax_changes == 0
    bad = fold_one(wrong, "tiny", 0, spec, params, images, labels, reference_images=4)
    assert bad.max_weight_ratio > 10 and not bad.passed
