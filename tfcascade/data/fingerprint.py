"""The fingerprint of a preprocessing: which vocabularies and list schema its ids belong to.

A model's embedding rows are indexed by one preprocessing's vocabularies; the same raw id has
another index under another preprocessing's. ``metadata.json`` carries the fingerprint, the
model's ``config.json`` keeps it, and evaluate, export, a training resume and the TFX
components refuse data whose fingerprint differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

SCHEMA_KEYS = ("stages", "train_list_size", "eval_list_size", "history_length", "id_padding")


class DataMismatchError(ValueError):
    """A model and a dataset that do not belong together."""


def vocabulary_fingerprint(vocabularies: Mapping[str, Sequence[int]], meta: Mapping) -> str:
    """sha256 over every vocabulary (feature and raw ids in index order) and the list schema.

    Args:
      vocabularies: feature -> raw ids (line i of ``vocab/<feature>.txt`` is index i + 1).
      meta: the preprocessing metadata (``SCHEMA_KEYS`` are hashed).

    Returns:
      ``"sha256:<hex>"``.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps({k: meta.get(k) for k in SCHEMA_KEYS}, sort_keys=True).encode())
    for feature in sorted(vocabularies):
        digest.update(f"\n{feature}:".encode())
        digest.update(",".join(str(int(v)) for v in vocabularies[feature]).encode())
    return f"sha256:{digest.hexdigest()}"


def require_same_data(expected: str | None, meta: Mapping, data: str, action: str) -> None:
    """Refuses ``data`` unless its fingerprint is the one the model was trained on.

    Args:
      expected: the model's ``data_fingerprint`` (None: a model from before fingerprints,
        accepted with any data).
      meta: ``data``'s ``metadata.json``.
      data: the data folder, for the message.
      action: what was attempted (``"evaluate"``, ``"export"``, ...), for the message.

    Raises:
      DataMismatchError: the fingerprints differ, or ``data`` has none.
    """
    if expected is None:
        return
    got = meta.get("fingerprint")
    if got != expected:
        raise DataMismatchError(
            f"{action}: data={data!r} has vocabulary fingerprint {got} but the model was trained on "
            f"{expected}; its ids would be looked up in another preprocessing's vocabularies "
            "(use the preprocessing the model was trained on, or retrain)")
