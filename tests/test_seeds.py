"""The seed material's tables and facts (bnparity.seeds): the shipped copies are the published files, and every
figure derived from them is computed, not typed in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bnparity.reference.batchnorm import running_update
from bnparity.seeds.facts import TUTORIAL_FAULTS, TUTORIAL_LAYER
from bnparity.seeds.tables import BLOG_CSV, TUTORIAL_CSV, blog_curve, blog_epochs, blog_points, tutorial_curve
from bnparity.suites.convergence.presets import get_preset

ORIGINALS = Path(__file__).resolve().parents[2] / "shared" / "seeds"


@pytest.mark.parametrize(("copy", "original"), [(BLOG_CSV, "seed-004-alexnet-fashion-mnist-mxnet.csv"),
                                                (TUTORIAL_CSV, "seed-000-mnist-tutorial.csv")])
def test_the_shipped_tables_are_the_published_files(copy: Path, original: str) -> None:
    source = ORIGINALS / original
    if not source.exists():
        pytest.skip(f"the originals are not beside this clone ({source})")
    assert copy.read_bytes() == source.read_bytes()


def test_blog_table_has_40_epochs_of_both_variants_and_its_headline() -> None:
    rows = blog_epochs()
    for variant in ("bn", "nobn"):
        assert [r.epoch for r in blog_curve(variant, rows)] == list(range(1, 41))
    # The seeds' README headline: 0.867 vs 0.762 after epoch 1, 0.937 vs 0.921 after 40, train loss 0.0105 vs 0.1554.
    assert blog_curve("bn")[0].test_acc == 0.867 and blog_curve("nobn")[0].test_acc == 0.762
    assert blog_curve("bn")[-1].test_acc == 0.937 and blog_curve("nobn")[-1].test_acc == 0.921
    assert blog_curve("bn")[-1].train_loss == 0.0105 and blog_curve("nobn")[-1].train_loss == 0.1554
    with pytest.raises(ValueError, match="gn"):
        blog_curve("gn")


def test_the_paper_preset_targets_the_blog_table() -> None:
    assert get_preset("paper").published == blog_points((1, 40))
    assert ("bn", 40, 0.937) in get_preset("paper").published


def test_tutorial_table() -> None:
    assert [r.epoch for r in tutorial_curve("mlp-scratch-bn")] == list(range(10))
    assert tutorial_curve("mlp-scratch-bn")[0].valid_acc == pytest.approx(0.948, abs=5e-4)
    assert tutorial_curve("mlp-nobn")[-1].valid_acc == pytest.approx(0.970, abs=5e-4)
    assert len(tutorial_curve("cnn-bn")) == 5


def test_tutorial_layer_spec_is_its_update_rule() -> None:
    """moving = m·moving + (1 − m)·batch, m = 0.1, from zeros: the reference's update with the layer's spec."""
    spec, m = TUTORIAL_LAYER.spec, TUTORIAL_LAYER.m
    assert TUTORIAL_LAYER.new_batch_weight == pytest.approx(0.9)
    batch = np.array([2.0, -4.0])
    moving = np.full(2, spec.init_running_var)
    assert np.all(moving == 0.0)
    assert np.allclose(running_update(moving, batch, spec), m * moving + (1 - m) * batch)
    assert spec.running_var == "biased" and spec.eps == 1e-5
    assert [f.name for f in TUTORIAL_FAULTS] == ["swapped momentum", "zero start", "γ and β from N(0, 1)"]
    assert "weight 0.9" in TUTORIAL_FAULTS[0].statement
