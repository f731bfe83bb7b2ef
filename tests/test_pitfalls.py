"""The seed tutorial's pitfalls on a trained network: the re-estimation rules, closed form, and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bnparity.reference import alexnet_numpy as anp
from bnparity.reference.alexnet import alexnet_spec, init_params, running_names
from bnparity.suites.cli import main
from bnparity.suites.pitfalls.experiment import RULES, measure, reestimate


def _one_batch_forever(arch, rng):
    x = rng.normal(size=(8, 1, arch.image_size, arch.image_size)).astype(np.float32)
    masks = anp.dropout_masks(arch, batch=8, rng=rng)
    while True:
        yield x, np.zeros(8, np.int64), masks


def test_each_rule_is_its_closed_form_on_a_repeated_batch():
    """The same batch k times: correct r_k = (1 − 0.9^k)·s + 0.9^k·r_0, swapped (1 − 0.1^k)·s + 0.1^k·r_0."""
    arch = alexnet_spec("tiny", batch_norm=True)
    params = init_params(arch, seed=3)
    rng = np.random.default_rng(0)
    batches = _one_batch_forever(arch, rng)
    x, _, masks = next(batches)
    stats = anp.forward(arch, params, x, train=True, dropout_masks=masks).batch_stats
    (k, running), = reestimate(arch, params, batches, steps=(7,))
    assert k == 7 and set(running) == {r.name for r in RULES}
    for layer, s in stats.items():
        unbiased = s.var * s.count / (s.count - 1)  # the network's convention: PyTorch's
        keep_correct, keep_swapped = 0.9 ** 7, 0.1 ** 7
        np.testing.assert_allclose(running["correct"][f"{layer}.running_mean"], (1 - keep_correct) * s.mean,
                                   rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(running["correct"][f"{layer}.running_var"],
                                   (1 - keep_correct) * unbiased + keep_correct, rtol=1e-12)
        np.testing.assert_allclose(running["zero-start"][f"{layer}.running_var"], (1 - keep_correct) * unbiased,
                                   rtol=1e-12)
        np.testing.assert_allclose(running["swapped"][f"{layer}.running_var"],
                                   (1 - keep_swapped) * unbiased + keep_swapped, rtol=1e-12)


def test_measure_evaluates_the_trained_statistics_first_then_every_rule_at_every_step():
    arch = alexnet_spec("tiny", batch_norm=True)
    params = init_params(arch, seed=1)
    rng = np.random.default_rng(1)
    test = (rng.normal(size=(20, 1, 28, 28)), rng.integers(0, 10, 20))
    seen = []
    results = measure(arch, params, _one_batch_forever(arch, rng), test, steps=(1, 3), on_result=seen.append)
    assert seen == results
    assert [(r.rule, r.steps) for r in results] == [("trained", None)] + [
        (rule.name, k) for k in (1, 3) for rule in RULES]
    assert all(0 <= r.test_accuracy <= 1 and np.isfinite(r.test_loss) for r in results)
    assert set(running_names(arch)) <= set(params)


def test_measure_refuses_a_network_without_bn_and_bad_steps():
    rng = np.random.default_rng(0)
    test = (rng.normal(size=(4, 1, 28, 28)), np.zeros(4, np.int64))
    nobn = alexnet_spec("tiny", batch_norm=False)
    with pytest.raises(ValueError, match="must have BN layers"):
        measure(nobn, init_params(nobn, seed=0), iter(()), test, steps=(1,))
    bn = alexnet_spec("tiny", batch_norm=True)
    with pytest.raises(ValueError, match="ascending"):
        measure(bn, init_params(bn, seed=0), iter(()), test, steps=(3, 1))
    with pytest.raises(ValueError, match="needed 2 training batches"):
        measure(bn, init_params(bn, seed=0), iter([next(_one_batch_forever(bn, rng))]), test, steps=(2,))


@pytest.mark.parametrize("args, message", [
    ([], "RUN_DIR must hold a training run"),
    (["--steps", "10,1"], "--steps takes ascending integers"),
    (["--test-images", "0"], "--test-images must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert main(["pitfalls", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


DATA = Path(__file__).parent / "data"


def test_a_pitfalls_file_of_the_2026_11_29_release_gives_the_same_guide_section():
    """legacy-pitfalls-v1.json and its guide section were both written by that release's own code."""
    from bnparity.reports.porting import trained_network_section
    from bnparity.suites.schema import load_pitfalls

    doc = load_pitfalls(json.loads((DATA / "legacy-pitfalls-v1.json").read_text()))
    assert doc.meta.environment.python and doc.meta.run == "torch-bn-seed0"
    expected = (DATA / "legacy-pitfalls-v1-section.md").read_text().rstrip("\n")
    assert "\n".join(trained_network_section(doc)).rstrip("\n") == expected


def test_pitfalls_records_round_trip_and_a_future_version_is_refused():
    from bnparity.suites.schema import FormatError, load_pitfalls, to_dict

    doc = load_pitfalls(json.loads((DATA / "legacy-pitfalls-v1.json").read_text()))
    again = load_pitfalls(json.loads(json.dumps(to_dict(doc))))
    assert again == doc and to_dict(again)["format"] == "bnparity-pitfalls/2"
    newer = r"bnparity-pitfalls/9, newer than this bnparity reads \(bnparity-pitfalls/2\)"
    with pytest.raises(FormatError, match=newer):
        load_pitfalls({**to_dict(doc), "format": "bnparity-pitfalls/9"})
