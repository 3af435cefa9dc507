"""Id vocabularies: raw id → index (index 0 = padding / unknown)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from tfcascade import features as F
from tfcascade.data.examples import vocabulary_feature

VOCAB_FEATURES = F.USER_FEATURES + F.ITEM_FEATURES


def record_ids(record: Mapping) -> Iterable[tuple[str, int]]:
    """(vocabulary, raw id) pairs of one record, padding (−1 in lists) left out."""
    for name in F.USER_FEATURES:
        yield name, int(record[name])
    for name in F.ITEM_FEATURES + F.HISTORY_FEATURES:
        vocab = vocabulary_feature(name)
        values = np.asarray(record[name])
        if name in F.ITEM_FEATURES:
            values = values[np.asarray(record["mask"]) > 0]
        for v in values[values >= 0].tolist():
            yield vocab, v


def build_vocabularies(records: Iterable[Mapping]) -> dict[str, list[int]]:
    """Sorted distinct raw ids per vocabulary feature."""
    seen: dict[str, set] = {f: set() for f in VOCAB_FEATURES}
    for record in records:
        for name, value in record_ids(record):
            seen[name].add(value)
    return {f: sorted(v) for f, v in seen.items()}
