"""bnparity.testing: check your own normalization layer against the float64 reference, or against its port.

    from bnparity.testing import assert_layer_parity, compare_layer

`compare_layer(layer, x)` reads the configuration off a layer object you built or loaded (a PyTorch
`torch.nn.BatchNorm2d`, a Gluon `nn.BatchNorm` block, a Flax module with its variables, and the other normalizations
bnparity knows), runs a *copy* of it on your input, and compares y, dx, dγ, dβ, the updated running statistics and
the eval-mode output with bnparity's float64 reference configured the same way, under the layer-parity suite's
tolerance. `compare_layer(a, x, other=b)` compares two layers (the original and its port) with each other, after
moving the channel axis to each one's layout, and says which convention differs when they disagree.
`assert_layer_parity(...)` raises AssertionError with the same message, for your own pytest suite.
`audit_frozen(model, x)` runs one fine-tuning step on a copy of your model and says which "frozen" BatchNorm still
changed (running statistics, γ/β, batch statistics in the output), by how much, and the fix in your framework.
"""

from __future__ import annotations

from .audit import FrozenAuditResult, audit_frozen
from .layers import LayerParityResult, assert_layer_parity, compare_layer

__all__ = ["FrozenAuditResult", "LayerParityResult", "assert_layer_parity", "audit_frozen", "compare_layer"]
