"""Which Keras tfcascade builds on, chosen once per process without importing Keras.

TensorFlow binds ``tf.keras`` lazily, on its first use, to Keras 3 or, when the environment
variable ``TF_USE_LEGACY_KERAS`` is ``1``/``true``/``True`` at that moment, to Keras 2
(``tf_keras``). TensorFlow Recommenders, and so ``CascadeModel``, need Keras 2; the operator
layers and the Keras-style losses work in either. The rule, first match wins:

1. ``tf.keras`` is bound already: its Keras (this never binds it).
2. ``TF_USE_LEGACY_KERAS`` is set: ``1``/``true``/``True`` gives tf_keras, any other value
   Keras 3 (TensorFlow's own reading of the variable).
3. ``keras`` was imported before ``tensorflow`` (a Keras 3 program: Keras 3 imports
   TensorFlow as its backend): Keras 3.
4. Otherwise tf_keras, and ``TF_USE_LEGACY_KERAS=1`` is set so that ``tf.keras`` and TFRS
   agree — whether TensorFlow was imported before tfcascade or not.
"""

from __future__ import annotations

import os
import sys

TF_KERAS = "tf_keras"
KERAS_3 = "keras_3"
_TF_TRUE = ("1", "true", "True")  # what TensorFlow's lazy loader accepts


def tf_keras_binding() -> str | None:
    """What ``tf.keras`` is bound to (``"tf_keras"``, ``"keras_3"``), or None while TensorFlow
    is not imported or ``tf.keras`` not yet used. Reads TensorFlow's lazy loader without
    triggering it."""
    tf = sys.modules.get("tensorflow")
    loader = getattr(tf, "__dict__", {}).get("keras") if tf is not None else None
    if loader is None:
        return None
    try:
        if not object.__getattribute__(loader, "_tfll_initialized"):
            return None
        version = object.__getattribute__(loader, "_tfll_keras_version")
    except AttributeError:  # not the lazy loader: a bound module
        version = TF_KERAS if getattr(loader, "__name__", "").startswith("tf_keras") else KERAS_3
    return TF_KERAS if version == TF_KERAS else KERAS_3


def _keras_imported_first() -> bool:
    """Whether Keras 3 started importing before TensorFlow. ``sys.modules`` keeps insertion
    order; both packages re-insert their own top-level name at the end of their import, so
    the first of their submodules tells which import came first."""
    def first(package: str) -> int | None:
        return next((i for i, name in enumerate(sys.modules) if name.split(".", 1)[0] == package), None)

    keras_at, tf_at = first("keras"), first("tensorflow")
    return keras_at is not None and (tf_at is None or keras_at < tf_at)


def choose() -> str:
    """The Keras of this process by the module docstring's rule (sets ``TF_USE_LEGACY_KERAS=1``
    in case 4)."""
    bound = tf_keras_binding()
    if bound is not None:
        return bound
    flag = os.environ.get("TF_USE_LEGACY_KERAS")
    if flag is not None:
        return TF_KERAS if flag in _TF_TRUE else KERAS_3
    if _keras_imported_first():
        return KERAS_3
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    return TF_KERAS


KERAS = choose()


def require_tf_keras(what: str) -> None:
    """Refuses ``what`` (a TFRS / tf_keras part of tfcascade) in a process on Keras 3.

    Raises:
      ImportError: saying why this process is on Keras 3 and how to get Keras 2.
    """
    bound = tf_keras_binding()
    if KERAS == TF_KERAS and bound in (None, TF_KERAS):
        return
    if bound == KERAS_3:
        why = "tf.keras is already bound to Keras 3"
    elif os.environ.get("TF_USE_LEGACY_KERAS") is not None:
        why = f"TF_USE_LEGACY_KERAS={os.environ['TF_USE_LEGACY_KERAS']!r}"
    else:
        why = "keras (3) was imported before tensorflow and tfcascade"
    raise ImportError(
        f"{what} needs Keras 2 (tf_keras, for TensorFlow Recommenders) but this process uses Keras 3 "
        f"({why}). Fix: set TF_USE_LEGACY_KERAS=1 before Python starts (export TF_USE_LEGACY_KERAS=1), "
        "or import tfcascade before keras. tfcascade.ops, .layers and .losses work in Keras 3 as they are.")
