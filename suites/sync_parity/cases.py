"""The cross-replica cases: a global batch split over R replicas, synchronized or per-replica, and their data.

For each replica count R the matrix is dtype (float32, float64) × layout (NCHW, NHWC) × shards (equal; unequal: the
last shard smaller, as a global batch that R does not divide gives) × mode (synchronized, per-replica), 2 training
steps each, plus a 2-D (N, C) pair. The data is the layer-parity suite's (suites/parity/cases.py:make_inputs,
seeded by the case's name, rounded to the dtype) for the global batch, then split into shards in order
(bnparity.reference.crossreplica.split): every framework and the reference see the same values.

ε and the momentum are exact in float32 (2⁻¹⁷-rounded 1e-5 and 1/8): MXNet passes them to its operators as
float32, and a float64 case would otherwise measure that rounding instead of the layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnparity.reference.crossreplica import shard_sizes, split
from bnparity.reference.spec import BNSpec
from bnparity.reference.steps import LayerInputs
from bnparity.suites.parity.cases import ParityCase, make_inputs
from bnparity.suites.schema import SyncCaseInfo

REPLICAS = (2, 4)
STEPS = 2
EPS = float(np.float32(1e-5))
MOMENTUM = 0.125  # the new batch's weight (PyTorch's convention); 0.875 on the old value, both exact in float32
CHANNELS = 3
SPATIAL = (4, 4)
LAYOUT_AXIS = {"nchw": 1, "nhwc": -1, "nc": 1}
Steps = tuple[tuple[np.ndarray, ...], ...]  # one array per replica, per training step


@dataclass(frozen=True)
class SyncCase:
    """One cross-replica configuration.

    Attributes:
        name: unique and stable ("r4-nhwc-unequal-sync-float32").
        replicas: R.
        shape: the global batch's shape, channels at `axis`.
        sizes: the shard sizes, in replica order.
        layout: "nchw", "nhwc" or "nc".
        dtype: "float32" or "float64".
        synchronized: normalize with the global batch's statistics (True) or each shard's own (False).
        steps: training steps.
        note: what it probes.
    """

    name: str
    replicas: int
    shape: tuple[int, ...]
    sizes: tuple[int, ...]
    layout: str
    dtype: str
    synchronized: bool
    steps: int = STEPS
    note: str = ""

    @property
    def axis(self) -> int:
        return LAYOUT_AXIS[self.layout]

    @property
    def spec(self) -> BNSpec:
        """The canonical semantics: PyTorch's BatchNorm (unbiased running variance) with float32-exact ε, momentum."""
        return BNSpec(axis=self.axis, eps=EPS, momentum=MOMENTUM)

    def inputs(self) -> LayerInputs:
        """The global batch's data (the layer-parity suite's generator, seeded by this case's name)."""
        return make_inputs(ParityCase(name=self.name, shape=self.shape, spec=self.spec, dtype=self.dtype,
                                      steps=self.steps))

    def shards(self, inputs: LayerInputs) -> tuple[Steps, Steps]:
        """(xs, dys): each step's global arrays split into this case's shards."""
        xs = tuple(tuple(split(x, self.sizes)) for x in inputs.xs)
        dys = tuple(tuple(split(dy, self.sizes)) for dy in inputs.dys)
        return xs, dys

    def info(self) -> SyncCaseInfo:
        return SyncCaseInfo(name=self.name, replicas=self.replicas, shape=self.shape, shard_sizes=self.sizes,
                            layout=self.layout, dtype=self.dtype, synchronized=self.synchronized, steps=self.steps,
                            note=self.note)


def _shape(layout: str, n: int) -> tuple[int, ...]:
    if layout == "nc":
        return (n, 5)
    if layout == "nchw":
        return (n, CHANNELS, *SPATIAL)
    return (n, *SPATIAL, CHANNELS)


def sync_cases(replicas: int) -> tuple[SyncCase, ...]:
    """The matrix of the module docstring for R = `replicas` (R ≥ 2)."""
    if replicas < 2:
        raise ValueError(f"expected at least 2 replicas. Received: {replicas}")
    equal_n, unequal_n = 4 * replicas, _unequal_batch(replicas)
    cases = []
    for dtype in ("float32", "float64"):
        for layout in ("nchw", "nhwc"):
            for kind, n in (("equal", equal_n), ("unequal", unequal_n)):
                sizes = shard_sizes(n, replicas)
                for synchronized in (True, False):
                    mode = "sync" if synchronized else "local"
                    what = "synchronized" if synchronized else "per-replica"
                    smaller = " (the last one smaller)" if kind == "unequal" else ""
                    note = f"{what} BN, shards {'+'.join(map(str, sizes))}{smaller}, {layout.upper()}"
                    cases.append(SyncCase(name=f"r{replicas}-{layout}-{kind}-{mode}-{dtype}", replicas=replicas,
                                          shape=_shape(layout, n), sizes=sizes, layout=layout, dtype=dtype,
                                          synchronized=synchronized, note=note))
    for synchronized in (True, False):
        mode = "sync" if synchronized else "local"
        sizes = shard_sizes(equal_n, replicas)
        cases.append(SyncCase(name=f"r{replicas}-nc-equal-{mode}-float32", replicas=replicas,
                              shape=_shape("nc", equal_n), sizes=sizes, layout="nc", dtype="float32",
                              synchronized=synchronized,
                              note=f"{'synchronized' if synchronized else 'per-replica'} BN of (N, C) features"))
    return tuple(cases)


def _unequal_batch(replicas: int) -> int:
    """A global batch that R does not divide, split ⌈n/R⌉ each and a smaller last shard: R=2 → 7 (4+3), R ≥ 3 →
    3R − 2 (R=4: 10 = 3+3+3+1)."""
    n = 7 if replicas == 2 else 3 * replicas - 2
    shard_sizes(n, replicas)  # raises if it does not split into R shards
    return n
