"""Training callbacks: per-step timing (the benchmark's train-step time) and the codebook
monitor of residual quantizers (defined beside ``layers.ResidualQuantizer``, which it keeps
alive, so that a stage such as TARQ can bring it to its training without importing training)."""

from __future__ import annotations

import statistics
import time

from tfcascade._keras import keras
from tfcascade.layers.residual_quantizer import CodebookMonitor

__all__ = ["CodebookMonitor", "StepTimer"]


class StepTimer(keras.callbacks.Callback):
    """Records the wall time of every training batch; ``median_ms`` skips the first (tracing)."""

    def __init__(self):
        super().__init__()
        self.times_ms: list[float] = []
        self._start = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times_ms.append((time.perf_counter() - self._start) * 1e3)

    @property
    def median_ms(self) -> float | None:
        steady = self.times_ms[1:] or self.times_ms
        return statistics.median(steady) if steady else None
