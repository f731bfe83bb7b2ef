"""What the seed material says about its own setups, as the seeds' README states it (not paraphrased elsewhere).

Two setups matter to bnparity: the AlexNet blog (the `paper` preset reproduces it) and the tutorial whose hand-written
BatchNorm has the faults the `pitfalls` step measures. The tutorial's layer is also given as a reference BNSpec, so
that the float64 reference can run exactly what the tutorial wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnparity.reference.spec import BNSpec


@dataclass(frozen=True)
class TutorialLayer:
    """The tutorial's hand-written 1-D BatchNorm, fact by fact.

    Attributes:
        statistics: how μ_B and σ²_B are taken.
        eps: ε.
        variance: how σ²_B is computed (and what the moving variance averages).
        gamma_beta_init: how γ and β start.
        update: the moving-average rule, as written.
        m: the m of `update`.
        moving_start: what moving_mean and moving_var start at.
        eval_mode: what eval mode normalizes with.
        spec: the same layer as a reference BNSpec (momentum m weighing the old value, biased variance, zero start).
    """

    statistics: str = "over dimension 0 with keepdim"
    eps: float = 1e-5
    variance: str = "two-pass biased variance"
    gamma_beta_init: str = "N(0, 1)"
    update: str = "moving = m·moving + (1 − m)·batch"
    m: float = 0.1
    moving_start: str = "zeros (moving_mean and moving_var)"
    eval_mode: str = "normalizes with the moving statistics"

    @property
    def spec(self) -> BNSpec:
        return BNSpec(axis=1, eps=self.eps, variance="two-pass", momentum=self.m, momentum_weighs="old",
                      running_var="biased", init_running_mean=0.0, init_running_var=0.0)

    @property
    def new_batch_weight(self) -> float:
        """The weight `update` gives the new batch: 1 − m (PyTorch's momentum=m gives it m)."""
        return self.spec.new_weight


@dataclass(frozen=True)
class TutorialFault:
    """One way the tutorial's layer departs from what its names promise (PyTorch's BatchNorm1d semantics)."""

    name: str
    statement: str


TUTORIAL_LAYER = TutorialLayer()

TUTORIAL_FAULTS = (
    TutorialFault("swapped momentum",
                  f"the moving averages are updated as `{TUTORIAL_LAYER.update}` with m = {TUTORIAL_LAYER.m}, i.e. the "
                  f"new batch gets weight {TUTORIAL_LAYER.new_batch_weight:g} (PyTorch's momentum={TUTORIAL_LAYER.m} "
                  f"gives it {TUTORIAL_LAYER.m}): the momentum weights are swapped relative to the value's name"),
    TutorialFault("zero start", "moving_var (and moving_mean) start at zeros, not ones"),
    TutorialFault("γ and β from N(0, 1)", "γ and β are initialised from N(0, 1), not to 1 and 0"),
)


@dataclass(frozen=True)
class TutorialSetup:
    """The tutorial's MLP experiment: network, optimizer, data."""

    network: str = "MLP 784 → 100 → BN → ReLU → 10"
    hidden: int = 100
    optimizer: str = "SGD lr 0.1"
    lr: float = 0.1
    batch_size: int = 64
    inputs: str = "scaled to [−1, 1]"
    dataset: str = "MNIST"
    epochs: int = 10


TUTORIAL_SETUP = TutorialSetup()


@dataclass(frozen=True)
class BlogSetup:
    """The AlexNet blog's experiment, and how it differs from bnparity's AlexNet."""

    dataset: str = "Fashion-MNIST resized to 224×224"
    epochs: int = 40
    hardware: str = "a GPU (about 39–46 s an epoch)"
    bn_placement: str = "BatchNorm() after every convolution and after both hidden Dense layers, before the ReLU"
    bn_network_difference: str = ("with BN, the post also changed the second hidden Dense layer to 2048 units (the "
                                  "dropouts stay 0.2 and 0.5); bnparity keeps the widths equal so that BN is the only "
                                  "difference")
    dropouts: tuple[float, float] = (0.2, 0.5)
    bn_second_dense: int = 2048


BLOG_SETUP = BlogSetup()
