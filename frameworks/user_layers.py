"""Reading a user's own normalization layer object: the interface of frameworks/<fw>/user_layers.py (`UserLayers`).

bnparity.testing checks a layer the *user* built (a `torch.nn.BatchNorm2d` from a loaded model, a Gluon block, a
Flax module with its variables). Each framework folder reads its own objects: which normalization the object is,
the spec it computes (every convention read off the object: ε, momentum and what it weighs, affine, running
statistics and their estimator, the channel axis, the variance algorithm), its current state (γ, β, running
statistics), and a session that runs a *copy* of it through the layer protocol, so that the user's object is never
modified. Nothing here imports a framework.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from bnparity.reference.spec import LayerSpec

from .base import LayerSession
from .registry import Unavailable, descriptor, descriptors, load_every

MODULE = "user_layers"
CLASS = "UserLayers"


@dataclass(frozen=True)
class UserLayer:
    """A user's layer object, read.

    Attributes:
        framework: the framework's descriptor name.
        kind: what the object is, as its framework names it ("torch.nn.BatchNorm2d", "flax.linen.BatchNorm").
        spec: the spec it computes; its axis is the channel axis of the inputs the object takes (1 for PyTorch's
            and Gluon's layers, -1 for Flax's by default), its initial running statistics the object's current ones,
            per channel.
        dtype: the dtype of its parameters ("float32", "float64", ...).
        gamma: γ as the object holds it now (float64; ones when the layer has none).
        beta: β (zeros when the layer has none).
        conventions: spec field -> how the object states it, in the framework's own words, for messages
            ("momentum": "0.9 on the old value", "running_var": "biased").
        session: a fresh copy of the object, with its current state, run through the layer protocol; each call
            gives a new copy, and the user's object is never touched.
    """

    framework: str
    kind: str
    spec: LayerSpec
    dtype: str
    gamma: np.ndarray
    beta: np.ndarray
    session: Callable[[], LayerSession] = field(repr=False, compare=False)
    conventions: dict[str, str] = field(default_factory=dict)


class UserLayers(ABC):
    """One framework's reader of user layer objects."""

    framework: ClassVar[str]
    supported: ClassVar[tuple[str, ...]]  # the layer types it reads, as users write them (for TypeError messages)

    @abstractmethod
    def read(self, layer: object, variables: object | None = None) -> UserLayer | None:
        """The user's `layer` read (with its `variables`, for frameworks whose modules hold no state), or None when
        it is not one of this framework's objects. Raises TypeError for one of its objects that is not a supported
        normalization layer, naming what is supported."""

    @abstractmethod
    def to_numpy(self, value: object) -> np.ndarray | None:
        """`value` as a NumPy array if it is one of this framework's tensors, else None."""


def another_frameworks_object(obj: object, framework: str) -> bool:
    """Whether `obj`'s class (or a base of it) comes from the library of a framework folder other than
    `framework`'s: that folder reads it. A library may build its layers on another's (Keras 3's layers are torch
    Modules on its torch backend): the torch folder must not claim them."""
    own = descriptor(framework).package
    others = {d.distributions[0] for d in descriptors() if d.package != own}
    return any(cls.__module__.split(".")[0] in others for cls in type(obj).__mro__)


def readers() -> tuple[list[UserLayers], list[Unavailable]]:
    """The reader of every framework this process has imported (a user's layer is one of theirs), and why the others
    are unavailable."""
    return load_every(MODULE, CLASS, "{framework} has no reader of user layers", imported_only=True)
