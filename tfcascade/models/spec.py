"""CascadeSpec: the shape of a cascade — which stages, what they are called, and where they cut.

A T-stage cascade (T = 2: retrieval → ranking; T = 3: retrieval → pre-ranking → ranking) keeps,
at inference, the top-q_1 of the candidates by stage 1, then the top-q_2 of those by stage 2,
and so on; the last stage returns its top-k::

    S_0 = candidates,   S_t = top-q_t of S_{t−1} by stage t's scores,   output = top-k of S_T

with q_1 ≥ q_2 ≥ … ≥ q_T ≥ k > 0. The quality of the whole cascade is its joint recall
(LCRON, arXiv 2503.09492)::

    Recall@k@q_T = |S_T ∩ G_k| / k,     G_k = the k best items by the labels,

and the cascade losses train every stage for it with the same cuts (``stage_qs``). The defaults
are LCRON's setup: k = 10 and qs (30, 20) for two stages, (40, 30, 20) for three.

The spec is the one description of that shape: ``build_cascade``, ``CascadeModel`` (and its
``config.json``), ``training.train``, the ``tfcascade train`` / ``compare`` commands, the TFX
Trainer's ``run_fn``, the pipeline and the serving export all read it from here.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from tfcascade.losses.base import DEFAULT_QS, DEFAULT_STAGE_NAMES
from tfcascade.models.din import DIN
from tfcascade.models.dssm import DSSM
from tfcascade.models.mlp import MLPPreranker
from tfcascade.models.tarq import TARQ
from tfcascade.ops.cascade_select import check_qs

# Stage kind -> stage model class (each class names its own kind).
STAGE_CLASSES = {cls.kind: cls for cls in (DSSM, MLPPreranker, DIN, TARQ)}
DEFAULT_STAGE_KINDS = {2: ("dssm", "din"), 3: ("dssm", "mlp", "din")}
DEFAULT_K = 10


@dataclasses.dataclass(frozen=True)
class CascadeSpec:
    """The stages of a cascade and its cuts; validated when built (module docstring).

    Args:
      stage_kinds: the stage models, earliest first, each a key of ``STAGE_CLASSES``
        (``dssm``, ``mlp``, ``din``, ``tarq``); 2 or 3 of them.
      stage_names: one distinct Python identifier per stage; they name the metrics
        (``<name>_recall``, ``<name>_ndcg``) and the serving signatures.
      qs: q_t, how many items stage t keeps at inference; positive, non-increasing.
      k: the ground-truth size K and the number of items the cascade returns, 0 < k ≤ q_T.

    Raises:
      ValueError: naming the field and its value.
    """

    stage_kinds: tuple[str, ...]
    stage_names: tuple[str, ...]
    qs: tuple[int, ...]
    k: int

    def __post_init__(self):
        kinds = _strings("stage_kinds", self.stage_kinds)
        if len(kinds) not in (2, 3):
            raise ValueError(f"stage_kinds must name 2 or 3 stages, got stage_kinds={list(kinds)}")
        for i, kind in enumerate(kinds):
            if kind not in STAGE_CLASSES:
                raise ValueError(f"stage_kinds[{i}]={kind!r} is not a stage kind; known: {sorted(STAGE_CLASSES)}")
        names = _strings("stage_names", self.stage_names)
        if len(names) != len(kinds):
            raise ValueError(f"stage_names needs one name per stage ({len(kinds)}), got stage_names={list(names)}")
        if not all(name.isidentifier() for name in names) or len(set(names)) != len(names):
            raise ValueError(f"stage_names must be distinct identifiers, got stage_names={list(names)}")
        qs = tuple(self.qs) if isinstance(self.qs, Sequence) and not isinstance(self.qs, str) else (self.qs,)
        if not all(_is_int(q) for q in qs):
            raise ValueError(f"qs must be integers, got qs={list(qs)}")
        if len(qs) != len(kinds):
            raise ValueError(f"qs needs one value per stage ({len(kinds)}), got qs={[int(q) for q in qs]}")
        qs = check_qs(qs)
        if not _is_int(self.k) or not 0 < self.k <= qs[-1]:
            raise ValueError(f"k must be in 1..{qs[-1]} (the last stage's q), got k={self.k!r}")
        object.__setattr__(self, "stage_kinds", kinds)
        object.__setattr__(self, "stage_names", names)
        object.__setattr__(self, "qs", qs)
        object.__setattr__(self, "k", int(self.k))

    @classmethod
    def default(cls, stages: int = 2, *, stage_kinds: Sequence[str] | None = None,
                stage_names: Sequence[str] | None = None, qs: Sequence[int] | None = None,
                k: int | None = None) -> CascadeSpec:
        """The reference cascade of ``stages`` stages, with any field given here instead.

        ``default(2)`` is DSSM → DIN named retrieval, ranking, qs (30, 20), k 10; ``default(3)``
        DSSM → MLP → DIN named retrieval, prerank, ranking, qs (40, 30, 20), k 10. E.g.
        ``CascadeSpec.default(3, stage_kinds=("dssm", "tarq", "din"))`` puts TARQ in the
        pre-ranking slot.

        Raises:
          ValueError: ``stages`` is not 2 or 3, a given field does not have ``stages``
            entries, or the spec is invalid.
        """
        if isinstance(stages, bool) or stages not in (2, 3):
            raise ValueError(f"stages must be 2 or 3, got stages={stages!r}")
        given = {"stage_kinds": stage_kinds, "stage_names": stage_names, "qs": qs}
        for name, value in given.items():
            if value is not None and (isinstance(value, str) or len(value) != stages):
                raise ValueError(f"{name} needs {stages} entries (stages={stages}), got {name}={value!r}")
        return cls(stage_kinds=tuple(stage_kinds or DEFAULT_STAGE_KINDS[stages]),
                   stage_names=tuple(stage_names or DEFAULT_STAGE_NAMES[stages]),
                   qs=tuple(qs or DEFAULT_QS[stages]), k=DEFAULT_K if k is None else k)

    @property
    def num_stages(self) -> int:
        """T, the number of stages."""
        return len(self.stage_kinds)

    def get_config(self) -> dict[str, Any]:
        """The spec as a JSON-friendly dict (lists, ints, strings); ``from_config`` inverts it."""
        return {"stage_kinds": list(self.stage_kinds), "stage_names": list(self.stage_names),
                "qs": list(self.qs), "k": self.k}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CascadeSpec:
        """The spec of a :meth:`get_config` dict.

        Raises:
          ValueError: a key is missing or unknown, or the spec is invalid.
        """
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(config) - set(fields))
        if unknown:
            raise ValueError(f"unknown CascadeSpec key {unknown[0]!r} (value {config[unknown[0]]!r}); "
                             f"known keys: {fields}")
        missing = [name for name in fields if name not in config]
        if missing:
            raise ValueError(f"CascadeSpec config lacks {missing[0]!r}; got keys {sorted(config)}")
        return cls(**{name: config[name] for name in fields})


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _strings(name: str, values) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{name} must be a sequence of strings, got {name}={values!r}")
    return tuple(values)
