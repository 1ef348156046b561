"""The method registry (timm-style): what each `model.method` is, in one place, instead of string switches.

Torch-free, so configs, the CLI and reports can ask about a method without importing a network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_ad.errors import ConfigError


@dataclass(frozen=True)
class Method:
    """How one method uses the frozen teacher; every method exports to the same kind of graph."""

    name: str
    summary: str
    pair_strides: Callable[[Any], list[list[int]]]  # ModelConfig -> teacher strides of each teacher/student pair
    augmented_inputs: bool = False  # students see T(augmented x) and must restore T(x) (Improved RD)
    needs_gaussian: bool = False  # the per-location Gaussian map is the whole model

    @property
    def has_student(self) -> bool:
        return not self.needs_gaussian


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is registered twice")
    _REGISTRY[method.name] = method
    return method


def method_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_method(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"model.method: must be one of {', '.join(_REGISTRY)}, got {name!r}") from None


register(Method("rd", "reverse distillation (RD4AD)", lambda m: [list(m.strides)]))
register(Method("rd_aug", "reverse distillation restoring raw features from augmented inputs (Improved RD)",
                lambda m: [list(m.strides)], augmented_inputs=True))
register(Method("dual", "a shallow texture pair and a deep semantic pair, normalised and fused (Dual model KD)",
                lambda m: [list(m.shallow_strides), list(m.deep_strides)]))
register(Method("gauss", "per-location Gaussian of teacher features, no student", lambda m: [], needs_gaussian=True))
