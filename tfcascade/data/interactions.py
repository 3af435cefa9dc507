"""Reader for implicit-feedback interaction folders (``user item`` pairs per line).

The TopKGAT datasets (Ali-Display, Epinions, Food; TopKGAT, arXiv 2601.18432) ship as one folder
per dataset::

    info.txt    "train N" / "valid N" / "test N" / "users N" / "items N" (+ free text after ---)
    train.txt   one "user item" pair per line, 0-based ids
    valid.txt
    test.txt

Duplicate pairs are kept as they are (the official TopKGAT code counts them in the degrees and
in the loss). Every problem is reported with the file and the 1-based line number.

The shipped Epinions ``info.txt`` says 17,893 users / 17,659 items but its files use ids up to
17,893 / 17,659 (one more of each). ``load_interactions`` therefore sizes the id space as
``max(info count, largest id + 1)`` and logs a warning when it had to grow it; pass
``strict=True`` to get an error instead.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
_INFO_KEYS = ("users", "items") + SPLITS


@dataclasses.dataclass(frozen=True)
class Interactions:
    """The splits of one dataset as ``int64 [rows, 2]`` arrays of ``(user, item)``.

    Attributes:
      num_users: users are ``0 .. num_users - 1``.
      num_items: items are ``0 .. num_items - 1``.
      train, valid, test: ``int64 [rows, 2]`` pairs, in file order, duplicates kept.
      name: the folder's name.
    """

    num_users: int
    num_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    name: str = ""

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got split={name!r}")
        return getattr(self, name)

    def items_by_user(self, split: str) -> list[np.ndarray]:
        """Unique items of each user in ``split`` (sorted), as a list indexed by user id."""
        pairs = np.unique(self.split(split), axis=0)
        starts = np.searchsorted(pairs[:, 0], np.arange(self.num_users + 1))
        return [pairs[starts[u]:starts[u + 1], 1] for u in range(self.num_users)]

    def subset_users(self, max_users: int) -> Interactions:
        """The same dataset restricted to users ``< max_users`` (items keep their ids); for tests."""
        keep = {s: self.split(s)[self.split(s)[:, 0] < max_users] for s in SPLITS}
        return Interactions(min(max_users, self.num_users), self.num_items, name=self.name, **keep)


def read_info(path: str | Path) -> dict[str, int]:
    """Parses ``info.txt``: ``key value`` lines up to a line starting with ``---``.

    Returns:
      A dict with at least ``users`` and ``items`` (and the split sizes where given).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"info file not found: {path}")
    info: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("---"):
            break
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{number}: expected 'key count', got {line!r}")
        info[parts[0]] = int(parts[1])
    for key in ("users", "items"):
        if key not in info:
            raise ValueError(f"{path}: missing the '{key} N' line (found keys {sorted(info)})")
    return info


def read_pairs(path: str | Path, num_users: int | None = None,
               num_items: int | None = None) -> np.ndarray:
    """Reads one ``user item`` file.

    Args:
      path: the text file.
      num_users, num_items: ids must lie in ``[0, num_users)`` and ``[0, num_items)``; None
        checks only that ids are >= 0.

    Returns:
      ``int64 [rows, 2]`` array of pairs in file order.

    Raises:
      FileNotFoundError: no such file.
      ValueError: a malformed line or an id out of range, naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"interaction file not found: {path}")
    text = path.read_text()
    lines = text.splitlines()
    try:
        pairs = np.array([line.split() for line in lines], dtype=np.int64)
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError
    except (ValueError, OverflowError):
        pairs = _parse_slowly(path, lines)
    if pairs.size == 0:
        return np.zeros((0, 2), np.int64)
    for column, limit, what in ((0, num_users, "user"), (1, num_items, "item")):
        upper = np.iinfo(np.int64).max if limit is None else limit
        bad = np.flatnonzero((pairs[:, column] < 0) | (pairs[:, column] >= upper))
        if bad.size:
            row = int(bad[0])
            raise ValueError(
                f"{path}:{row + 1}: {what} id {int(pairs[row, column])} out of range "
                f"[0, {limit if limit is not None else 'inf'}) (num_{what}s={limit}); "
                f"line {lines[row]!r}"
            )
    return pairs


def _parse_slowly(path: Path, lines: list[str]) -> np.ndarray:
    """Line-by-line parse that names the first bad line (only runs when the fast path fails)."""
    rows = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if len(parts) != 2 or not all(_is_int(p) for p in parts):
            raise ValueError(f"{path}:{number}: expected 'user item' (two integers), got {line!r}")
        rows.append((int(parts[0]), int(parts[1])))
    return np.asarray(rows, np.int64).reshape(-1, 2)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def load_interactions(folder: str | Path, strict: bool = False) -> Interactions:
    """Loads ``info.txt`` and the three splits of one dataset folder.

    Split sizes given in ``info.txt`` are checked against the files.

    Args:
      folder: the dataset folder.
      strict: if True, an id ``>=`` the ``info.txt`` count is an error (naming file and line);
        if False (default), the id space grows to ``largest id + 1`` with a logged warning.

    Returns:
      The ``Interactions``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder}")
    info = read_info(folder / "info.txt")
    users, items = info["users"], info["items"]
    splits = {}
    for split in SPLITS:
        pairs = read_pairs(folder / f"{split}.txt", users if strict else None,
                           items if strict else None)
        if split in info and info[split] != len(pairs):
            raise ValueError(
                f"{folder / (split + '.txt')}: has {len(pairs)} pairs but {folder / 'info.txt'} "
                f"says {split} {info[split]}"
            )
        splits[split] = pairs
    seen_users = 1 + max((int(p[:, 0].max()) for p in splits.values() if len(p)), default=-1)
    seen_items = 1 + max((int(p[:, 1].max()) for p in splits.values() if len(p)), default=-1)
    if seen_users > users or seen_items > items:
        logger.warning(
            "%s: ids go up to user %d / item %d but info.txt says users %d / items %d; "
            "using %d users and %d items", folder, seen_users - 1, seen_items - 1, users, items,
            max(users, seen_users), max(items, seen_items))
    return Interactions(max(users, seen_users), max(items, seen_items), name=folder.name, **splits)
