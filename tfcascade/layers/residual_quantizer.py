"""Residual quantization (RQ) with learned codebooks: the quantizer of TARQ (arXiv 2509.16931).

    r_1 = x,   c_l = argmin_c ‖r_l − E_l[c]‖²,   r_{l+1} = r_l − E_l[c_l],   x ≈ Σ_l E_l[c_l]

Codebooks learn with the VQ-VAE objective per level (codebook term plus β-weighted commitment,
straight-through estimator), usage is tracked with an exponential moving average, and dead
codes can be re-seeded from recent residuals (``reset_dead_codes``; during ``fit`` the
``CodebookMonitor``, which TARQ brings to its training) or the codebooks refreshed by residual
k-means (``fit_kmeans``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfcascade._keras import keras


def residual_encode(x: tf.Tensor, codebooks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Greedy residual quantization of ``x [N, d]`` with ``codebooks [L, C, d]``.

    Returns:
      ``(codes int32 [N, L], quantized [N, d] = Σ_l E_l[codes_l], residuals [L, N, d])`` where
      ``residuals[l]`` is the residual r_l entering level l.
    """
    residual = x
    codes, residuals = [], []
    quantized = tf.zeros_like(x)
    for level in range(codebooks.shape[0]):
        book = codebooks[level]
        # ‖r − e‖² = ‖r‖² − 2 r·e + ‖e‖²; ‖r‖² does not change the argmin.
        distance = tf.reduce_sum(tf.square(book), axis=-1) - 2.0 * tf.matmul(residual, book, transpose_b=True)
        code = tf.argmin(distance, axis=-1, output_type=tf.int32)
        chosen = tf.gather(book, code)
        residuals.append(residual)
        codes.append(code)
        quantized = quantized + chosen
        residual = residual - chosen
    return tf.stack(codes, axis=-1), quantized, tf.stack(residuals, axis=0)


@keras.utils.register_keras_serializable(package="tfcascade")
class ResidualQuantizer(keras.layers.Layer):
    """L-level residual quantizer with straight-through gradients and usage tracking.

    ``call(x [..., d])`` returns ``(x + stop_gradient(q − x), codes [..., L])`` and, when
    training, adds the loss ``Σ_l ‖sg(r_l) − E_l[c_l]‖² + commitment · ‖r_l − sg(E_l[c_l])‖²``
    (means over rows; van den Oord et al. 2017, arXiv 1711.00937) and updates the usage EMA.

    Args:
      num_levels: L.
      codebook_size: C.
      commitment: β of the commitment term (0.25).
      usage_decay: decay of the per-code usage EMA.
      dead_threshold: a code is dead when its usage EMA is below ``dead_threshold / C``
        (i.e. it gets less than that fraction of a uniform share of assignments).
      sample_size: residuals of recent batches kept per level to re-seed dead codes.
      init_stddev: std of the codebook initialisation.
    """

    def __init__(self, num_levels: int = 3, codebook_size: int = 64, commitment: float = 0.25,
                 usage_decay: float = 0.95, dead_threshold: float = 0.03, sample_size: int = 256,
                 init_stddev: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("num_levels", num_levels), ("codebook_size", codebook_size),
                            ("sample_size", sample_size)):
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
        if commitment < 0:
            raise ValueError(f"commitment must be >= 0, got commitment={commitment!r}")
        if not 0.0 <= usage_decay < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got usage_decay={usage_decay!r}")
        self.num_levels, self.codebook_size = int(num_levels), int(codebook_size)
        self.commitment, self.usage_decay = float(commitment), float(usage_decay)
        self.dead_threshold, self.sample_size = float(dead_threshold), int(sample_size)
        self.init_stddev = float(init_stddev)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.codebooks = self.add_weight(
            name="codebooks", shape=(self.num_levels, self.codebook_size, dim),
            initializer=keras.initializers.RandomNormal(stddev=self.init_stddev))
        self.usage = self.add_weight(
            name="usage", shape=(self.num_levels, self.codebook_size), trainable=False,
            initializer=keras.initializers.Constant(1.0 / self.codebook_size))
        self.recent = self.add_weight(
            name="recent_residuals", shape=(self.num_levels, self.sample_size, dim),
            trainable=False, initializer="zeros")
        super().build(input_shape)

    def encode(self, x: tf.Tensor) -> tf.Tensor:
        """Codes ``int32 [..., L]`` of ``x [..., d]`` (no gradient, no side effects)."""
        flat = tf.reshape(x, [-1, tf.shape(x)[-1]])
        codes, _, _ = residual_encode(flat, tf.convert_to_tensor(self.codebooks))
        return tf.reshape(codes, tf.concat([tf.shape(x)[:-1], [self.num_levels]], 0))

    def decode(self, codes: tf.Tensor) -> tf.Tensor:
        """``Σ_l E_l[codes[..., l]]``."""
        return tf.add_n([tf.gather(self.codebooks[level], codes[..., level])
                         for level in range(self.num_levels)])

    def call(self, x, training=False):
        flat = tf.reshape(x, [-1, tf.shape(x)[-1]])
        codes, quantized, residuals = residual_encode(flat, tf.convert_to_tensor(self.codebooks))
        if training:
            chosen = tf.stack([tf.gather(self.codebooks[level], codes[:, level])
                               for level in range(self.num_levels)], axis=0)  # [L, N, d]
            codebook_loss = tf.reduce_mean(tf.reduce_sum(tf.square(tf.stop_gradient(residuals) - chosen), -1))
            commit_loss = tf.reduce_mean(tf.reduce_sum(tf.square(residuals - tf.stop_gradient(chosen)), -1))
            self.add_loss(self.num_levels * (codebook_loss + self.commitment * commit_loss))
            self._track(codes, residuals)
        quantized = flat + tf.stop_gradient(quantized - flat)
        shape = tf.shape(x)
        return (tf.reshape(quantized, shape),
                tf.reshape(codes, tf.concat([shape[:-1], [self.num_levels]], 0)))

    def _track(self, codes: tf.Tensor, residuals: tf.Tensor) -> None:
        one_hot = tf.one_hot(tf.transpose(codes), self.codebook_size)  # [L, N, C]
        share = tf.reduce_mean(one_hot, axis=1)
        self.usage.assign(self.usage_decay * self.usage + (1.0 - self.usage_decay) * share)
        n = tf.shape(residuals)[1]
        repeats = (self.sample_size + n - 1) // n
        sample = tf.tile(tf.stop_gradient(residuals), [1, repeats, 1])[:, :self.sample_size]
        self.recent.assign(sample)

    def utilisation(self) -> np.ndarray:
        """Fraction of live codes per level, ``[L]`` (usage EMA ≥ dead_threshold / C)."""
        return np.mean(self.usage.numpy() >= self.dead_threshold / self.codebook_size, axis=1)

    def reset_dead_codes(self, seed: int | None = None) -> int:
        """Re-seeds every dead code with a random recent residual of its level.

        Returns:
          The number of codes reset (their usage restarts at a uniform share).
        """
        rng = np.random.default_rng(seed)
        dead = self.usage.numpy() < self.dead_threshold / self.codebook_size
        if not dead.any():
            return 0
        books, usage, recent = self.codebooks.numpy(), self.usage.numpy(), self.recent.numpy()
        for level, code in zip(*np.nonzero(dead), strict=True):
            books[level, code] = recent[level, rng.integers(self.sample_size)]
            usage[level, code] = 1.0 / self.codebook_size
        self.codebooks.assign(books)
        self.usage.assign(usage)
        return int(dead.sum())

    def fit_kmeans(self, x, iterations: int = 10, seed: int = 0) -> float:
        """Residual k-means: fits level l's codebook to the residuals left by levels < l.

        Args:
          x: ``[N, d]`` vectors (e.g. every item's representation), N ≥ C.
          iterations: Lloyd iterations per level.

        Returns:
          The mean squared reconstruction error ``mean ‖x − Σ_l E_l[c_l]‖²`` afterwards.
        """
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or len(x) < self.codebook_size:
            raise ValueError(f"x must be [N, d] with N >= codebook_size={self.codebook_size}, "
                             f"got shape {x.shape}")
        if not self.built:
            self.build(x.shape)
        rng = np.random.default_rng(seed)
        books = np.zeros(self.codebooks.shape, np.float32)
        residual = x.copy()
        for level in range(self.num_levels):
            centres = residual[rng.choice(len(residual), self.codebook_size, replace=False)]
            for _ in range(iterations):
                assign = _nearest(residual, centres)
                counts = np.bincount(assign, minlength=self.codebook_size)
                sums = np.zeros_like(centres)
                np.add.at(sums, assign, residual)
                empty = counts == 0
                centres = np.where(empty[:, None], centres, sums / np.maximum(counts, 1)[:, None])
                if empty.any():  # re-seed empty clusters with the worst-fit points
                    error = np.sum((residual - centres[assign]) ** 2, axis=1)
                    centres[empty] = residual[np.argsort(-error)[:empty.sum()]]
            assign = _nearest(residual, centres)
            books[level] = centres
            residual = residual - centres[assign]
        self.codebooks.assign(books)
        self.usage.assign(np.full(self.usage.shape, 1.0 / self.codebook_size, np.float32))
        return float(np.mean(np.sum(residual ** 2, axis=1)))

    def get_config(self) -> dict:
        return {**super().get_config(), "num_levels": self.num_levels,
                "codebook_size": self.codebook_size, "commitment": self.commitment,
                "usage_decay": self.usage_decay, "dead_threshold": self.dead_threshold,
                "sample_size": self.sample_size, "init_stddev": self.init_stddev}


def _nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    distance = np.sum(centres ** 2, axis=1)[None, :] - 2.0 * x @ centres.T
    return np.argmin(distance, axis=1)


def codebook_utilisation(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """Fraction of each level's C codes used by at least one of ``codes [N, L]`` (e.g. a catalogue)."""
    codes = np.asarray(codes).reshape(-1, np.shape(codes)[-1])
    return np.array([np.unique(codes[:, level]).size / codebook_size for level in range(codes.shape[1])])


class CodebookMonitor(keras.callbacks.Callback):
    """Keeps the codebooks of a ``ResidualQuantizer`` alive during ``fit``.

    After the first training batch (optionally) fits all codebooks by residual k-means on the
    batch's item vectors; every ``every`` batches re-seeds dead codes from recent residuals;
    writes ``tarq/utilisation_level<l>`` into the epoch logs (progress bar / TensorBoard).

    It is defined here, beside the stage whose training it belongs to, because
    :meth:`TARQ.training_callbacks` returns it and models may not import
    ``tfcascade.training`` (ops ← layers ← losses / metrics ← models ← training);
    ``tfcascade.training.callbacks`` re-exports it with the other training callbacks.

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
