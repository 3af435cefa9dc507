"""Cascade losses by name."""

from __future__ import annotations

import importlib

from tfcascade.losses.base import CascadeLoss

_LOSSES = {
    "bce": ("tfcascade.losses.bce", "BCELoss"),
    "icc": ("tfcascade.losses.icc", "ICCLoss"),
    "rankflow": ("tfcascade.losses.rankflow", "RankFlowLoss"),
    "fs_ranknet": ("tfcascade.losses.fs_ranknet", "FSRankNetLoss"),
    "fs_lambdaloss": ("tfcascade.losses.fs_lambdaloss", "FSLambdaLoss"),
    "arf": ("tfcascade.losses.arf", "ARFLoss"),
    "arf_v2": ("tfcascade.losses.arf", "ARFv2Loss"),
    "lcron": ("tfcascade.losses.lcron", "LCRONLoss"),
    "dftopk": ("tfcascade.losses.dftopk", "DFTopKCascadeLoss"),
    "lapsum": ("tfcascade.losses.lapsum", "LapSumCascadeLoss"),
}
# Losses whose ``temperature`` option is the operator's temperature.
TEMPERATURE_LOSSES = ("lcron", "dftopk", "lapsum", "arf", "arf_v2")


def names() -> list[str]:
    """Every registered loss name."""
    return list(_LOSSES)


def loss_class(name: str) -> type[CascadeLoss]:
    if name not in _LOSSES:
        raise ValueError(f"unknown loss name={name!r}; valid names: {', '.join(_LOSSES)}")
    module, cls = _LOSSES[name]
    return getattr(importlib.import_module(module), cls)


def get(name: str, stages: int = 2, **options) -> CascadeLoss:
    """Builds the loss ``name`` for a ``stages``-stage cascade with its options.

    Raises:
      ValueError: unknown name (the message lists the valid ones) or bad options.
    """
    cls = loss_class(name)
    if options.get("temperature") is None:
        options.pop("temperature", None)
    elif name not in TEMPERATURE_LOSSES:
        raise ValueError(f"loss {name!r} has no temperature option (temperature={options['temperature']})")
    try:
        return cls(stages=stages, name=f"{name}_loss", **options)
    except TypeError as err:
        raise ValueError(f"bad options for loss {name!r}: {err}") from err
