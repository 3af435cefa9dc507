"""Cascade losses (LCRON, the DFTopK cascade loss and the published baselines).

``get(name, stages=2, **options)`` builds one; ``names()`` lists them.
"""

from tfcascade.losses.base import CascadeLoss
from tfcascade.losses.registry import get, names
from tfcascade.losses.uncertainty import UncertaintyWeighting

__all__ = ["CascadeLoss", "UncertaintyWeighting", "get", "names"]
