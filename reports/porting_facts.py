"""What the porting guide cites and computes: the tests that prove each statement, and reference-only demonstrations."""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnparity.frameworks.conventions import Convention, LayerConvention
from bnparity.reference.normalization import run_reference
from bnparity.reference.spec import BNSpec
from bnparity.reference.steps import LayerInputs
from bnparity.seeds.facts import TUTORIAL_LAYER

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ProofRef:
    """A test function that proves a statement: `file` relative to the repository root, `name` the function, and
    the framework whose convention cites it (None for a test shared by every framework)."""

    file: str
    name: str
    framework: str | None = None

    @classmethod
    def parse(cls, text: str, *, framework: str | None = None) -> ProofRef:
        """'tests/<file>.py::<function>' as a ProofRef."""
        file, sep, name = text.partition("::")
        if not sep or not file or not name:
            raise ValueError(f"a proof must be 'tests/<file>.py::<function>'. Received: {text!r}")
        return cls(file, name, framework)

    def link(self, *, prefix: str = "../") -> str:
        """A Markdown link to the test file, named file::function (`prefix` leads from the guide to the root)."""
        return f"[`{Path(self.file).name}::{self.name}`]({prefix}{self.file})"


def _t(file: str, *names: str) -> list[ProofRef]:
    return [ProofRef(f"tests/{file}", n) for n in names]


# statement -> the shared tests that prove it, whatever the framework (each framework's own tests are in its
# convention's `proofs`, frameworks/<name>/convention.py); every one is checked to exist before the guide is written
PROOFS: dict[str, list[ProofRef]] = {
    "momentum": _t("test_reference.py", "test_momentum_conventions_are_two_names_for_one_update"),
    "running_var": _t("test_model_parity.py", "test_running_var_conversion_closed_form",
                      "test_every_gradient_is_gated_in_float64_and_running_var_differs_raw"),
    "scale_switch": _t("test_parity.py", "test_matched_mode_passes_every_standard_case_for_every_installed_framework"),
    "weights": _t("test_alexnet.py", "test_framework_model_equals_the_numpy_forward")
    + _t("test_model_parity.py", "test_tiny_preset_passes_and_writes_every_record"),
    "flatten": _t("test_alexnet.py", "test_flatten_order_needs_the_permutation"),
    "weight_decay": _t("test_model_parity.py", "test_weight_decay_skipped_on_bn_parameters_is_caught"),
    "matched": _t("test_parity.py", "test_matched_mode_passes_every_standard_case_for_every_installed_framework",
                  "test_defaults_mode_proves_each_registry_row_and_measures_the_porting_difference"),
}


def proof_refs(key: str, conventions: Iterable[Convention],
               frameworks: Collection[str] | None = None) -> list[ProofRef]:
    """The tests that prove statement `key` (a Convention field, or a PROOFS key): each framework's own, in the
    order of `conventions` (only those of `frameworks` when given), then the shared ones."""
    own = [ProofRef.parse(text, framework=c.framework) for c in conventions
           if frameworks is None or c.framework in frameworks for text in c.proofs.get(key, ())]
    return own + PROOFS.get(key, [])


def all_proofs(conventions: Iterable[Convention | LayerConvention]) -> list[ProofRef]:
    """Every test the guide may cite: the shared ones and every convention row's (of any normalization)."""
    return [*(ref for refs in PROOFS.values() for ref in refs),
            *(ProofRef.parse(text, framework=c.framework) for c in conventions
              for texts in c.proofs.values() for text in texts)]


def function_names(path: Path) -> set[str]:
    """The names of every function defined in a Python file (test functions and methods alike)."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def missing_tests(refs: Iterable[ProofRef], *, root: Path = ROOT) -> list[str]:
    """The cited tests that do not exist under `root`, as 'file::name' (empty when every one exists)."""
    missing, known = [], {}
    for ref in refs:
        path = root / ref.file
        if ref.file not in known:
            known[ref.file] = function_names(path) if path.exists() else set()
        if ref.name not in known[ref.file]:
            missing.append(f"{ref.file}::{ref.name}")
    return missing


def _inputs(rng: np.random.Generator, *, steps: int, batch: int, mu: np.ndarray, sigma: np.ndarray) -> LayerInputs:
    c = mu.shape[0]
    xs = tuple(mu + sigma * rng.standard_normal((batch, c)) for _ in range(steps))
    dys = tuple(np.zeros((batch, c)) for _ in range(steps))  # the backward pass does not touch running statistics
    return LayerInputs(xs=xs, dys=dys, x_eval=mu + sigma * rng.standard_normal((batch, c)),
                       gamma=np.ones(c), beta=np.zeros(c))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@dataclass(frozen=True)
class PitfallRow:
    """One variant of the seed tutorial's BN after `steps` training steps (errors: max |Δ| / max |reference|)."""

    variant: str
    steps: int
    running_var_err: float  # worst channel: |running var − σ²| / σ² of the data's true variance
    eval_vs_correct: float  # eval output vs the correct implementation's eval output
    eval_vs_population: float  # eval output vs normalizing with the data's true mean and variance


def _pitfall_specs() -> dict[str, BNSpec]:
    """The seed tutorial's layer (bnparity.seeds.facts) with one fault at a time: variant name -> reference spec."""
    tutorial, wrong = TUTORIAL_LAYER.spec, TUTORIAL_LAYER.new_batch_weight
    correct = tutorial.replace(momentum=round(1.0 - tutorial.momentum, 12), init_running_var=1.0)
    return {
        f"correct (new batch weight {1.0 - wrong:g}, moving_var starts at 1)": correct,
        "moving_var starts at 0 (the tutorial's zero start)": correct.replace(init_running_var=0.0),
        f"momentum swapped (the tutorial's update: new batch weight {wrong:g})": tutorial.replace(init_running_var=1.0),
    }


PITFALL_SPECS = _pitfall_specs()


def tutorial_pitfalls(*, steps: tuple[int, ...] = (1, 10, 100), batch: int = 256, channels: int = 8,
                      seed: int = 0) -> list[PitfallRow]:
    """Run the reference with the seed tutorial's moving-average variants on stationary data.

    Data: `channels` features, each N(μ_c, σ_c²) with μ_c ~ U(−2, 2), σ_c ~ U(0.5, 3), batches of `batch` (BN
    after a Dense layer, m = batch values per channel). Every variant sees the same batches.
    """
    rng = np.random.default_rng(seed)
    mu, sigma = rng.uniform(-2.0, 2.0, channels), rng.uniform(0.5, 3.0, channels)
    rows = []
    for k in steps:
        inputs = _inputs(np.random.default_rng([seed, k]), steps=k, batch=batch, mu=mu, sigma=sigma)
        outs = {name: run_reference(spec, inputs) for name, spec in PITFALL_SPECS.items()}
        correct = next(iter(outs.values())).y_eval
        population = (inputs.x_eval - mu) / np.sqrt(sigma**2 + 1e-5)
        for name, out in outs.items():
            rows.append(PitfallRow(name, k, float(np.max(np.abs(out.running_var - sigma**2) / sigma**2)),
                                   _rel(out.y_eval, correct), _rel(out.y_eval, population)))
    return rows


@dataclass(frozen=True)
class VarianceGapRow:
    """The unbiased (PyTorch) vs biased (MXNet, Flax) running variance after `steps` steps of m values each."""

    m: int
    steps: int
    running_var_gap: float  # max over channels of (unbiased − biased) / biased
    eval_gap: float  # max |y_eval(unbiased) − y_eval(biased)| / max |y_eval(biased)|


def variance_gap(*, ms: tuple[int, ...] = (8, 32, 128, 1024), steps: tuple[int, ...] = (1, 10, 100),
                 new_weight: float = 0.1, seed: int = 0) -> list[VarianceGapRow]:
    """The same layer with the two running-variance estimators (reference only), on N(μ, σ²) data."""
    rows = []
    rng = np.random.default_rng(seed)
    mu, sigma = rng.uniform(-2.0, 2.0, 4), rng.uniform(0.5, 3.0, 4)
    for m in ms:
        for k in steps:
            inputs = _inputs(np.random.default_rng([seed, m, k]), steps=k, batch=m, mu=mu, sigma=sigma)
            unbiased = run_reference(BNSpec(axis=1, momentum=new_weight), inputs)
            biased = run_reference(BNSpec(axis=1, momentum=new_weight, running_var="biased"), inputs)
            gap = float(np.max((unbiased.running_var - biased.running_var) / biased.running_var))
            rows.append(VarianceGapRow(m, k, gap, _rel(unbiased.y_eval, biased.y_eval)))
    return rows
