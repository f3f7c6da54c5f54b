"""A registry of ECG encoder builders: create an encoder by name, list the known names.

Builders register themselves with :func:`register_ecg_encoder` (as ``timm`` models do). An encoder
made by :func:`create_ecg_encoder` carries ``architecture = {"name": ..., "kwargs": {...}}``, a
JSON-serialisable description that a checkpoint can store and hand back to
:func:`create_ecg_encoder` to rebuild the same module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_ecg_encoder(builder: Builder) -> Builder:
    """Register ``builder`` under its function name; raises ``ValueError`` on a duplicate name."""
    name = builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"ECG encoder {name!r} is already registered")
    _BUILDERS[name] = builder
    return builder


def list_ecg_encoders() -> list[str]:
    """Names of the registered ECG encoders, sorted."""
    return sorted(_BUILDERS)


def create_ecg_encoder(name: str, **overrides: Any) -> nn.Module:
    """Build the registered encoder ``name`` with keyword ``overrides`` of its defaults.

    Raises ``KeyError`` listing the known names for an unknown ``name``, and ``TypeError`` naming
    the override when one is not JSON-serialisable (the architecture must be storable in a
    checkpoint). The returned module has an ``architecture`` attribute that rebuilds it:
    ``create_ecg_encoder(arch["name"], **arch["kwargs"])``.
    """
    if name not in _BUILDERS:
        raise KeyError(f"unknown ECG encoder {name!r}; known: {', '.join(list_ecg_encoders())}")
    for key, value in overrides.items():
        try:
            json.dumps(value)
        except TypeError as err:
            raise TypeError(
                f"override {key!r}={value!r} of ECG encoder {name!r} is not JSON-serialisable"
            ) from err
    model = _BUILDERS[name](**overrides)
    architecture = {"name": name, "kwargs": json.loads(json.dumps(overrides))}
    # A plain attribute: nn.Module.__setattr__ stores it, though its stub admits only tensors.
    model.architecture = architecture  # type: ignore[assignment]
    return model
