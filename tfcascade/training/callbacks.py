"""Training callbacks: per-step timing (the benchmark's train-step time) and the codebook
monitor of residual quantizers (TARQ)."""

from __future__ import annotations

import statistics
import time

from tfcascade._keras import keras
from tfcascade.layers.residual_quantizer import ResidualQuantizer


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


class CodebookMonitor(keras.callbacks.Callback):
    """Keeps the codebooks alive during ``fit``.

    After the first training batch (optionally) fits all codebooks by residual k-means on the
    batch's item vectors; every ``every`` batches re-seeds dead codes from recent residuals;
    writes ``tarq/utilisation_level<l>`` into the epoch logs (progress bar / TensorBoard).

    Args:
      quantizer: the model's ``ResidualQuantizer``.
      every: batches between dead-code resets.
      kmeans_at_start: residual k-means initialisation after the first batch.
      seed: seeds the re-seeding draws.
    """

    def __init__(self, quantizer: ResidualQuantizer, every: int = 100,
                 kmeans_at_start: bool = True, seed: int = 0):
        super().__init__()
        if every <= 0:
            raise ValueError(f"every must be > 0, got every={every!r}")
        self.quantizer, self.every, self.seed = quantizer, int(every), seed
        self.kmeans_at_start, self.resets, self._steps = kmeans_at_start, 0, 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if self._steps == 1 and self.kmeans_at_start:
            self.quantizer.fit_kmeans(self.quantizer.recent.numpy()[0], iterations=10, seed=self.seed)
        elif self._steps % self.every == 0:
            self.resets += self.quantizer.reset_dead_codes(seed=self.seed + self._steps)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for level, value in enumerate(self.quantizer.utilisation()):
                logs[f"tarq/utilisation_level{level}"] = float(value)
