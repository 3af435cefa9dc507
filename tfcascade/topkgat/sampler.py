"""Uniform negative sampling for BPR training on user–item pairs."""

from __future__ import annotations

import numpy as np


class NegativeSampler:
    """One uniform negative item per training row, rejecting the user's training items.

    Rejected draws are redrawn until none is a training item of its user (the official
    protocol). Users who have interacted with every item cannot get a negative: an error.
    """

    def __init__(self, pairs: np.ndarray, num_items: int, seed: int = 0):
        pairs = np.asarray(pairs, np.int64)
        self.users = pairs[:, 0]
        self.num_items = int(num_items)
        self.known = np.unique(pairs[:, 0] * num_items + pairs[:, 1])
        per_user = np.bincount(self.known // num_items)
        if per_user.size and per_user.max() >= num_items:
            user = int(np.argmax(per_user))
            raise ValueError(f"user {user} has interacted with all {num_items} items: no negative "
                             "item can be sampled for it")
        self.rng = np.random.default_rng(seed)

    def sample(self) -> np.ndarray:
        """``int32 [rows]`` negatives, one per training row."""
        negatives = self.rng.integers(0, self.num_items, size=len(self.users))
        todo = np.arange(len(self.users))
        while todo.size:
            keys = self.users[todo] * self.num_items + negatives[todo]
            position = np.minimum(np.searchsorted(self.known, keys), len(self.known) - 1)
            todo = todo[self.known[position] == keys]
            negatives[todo] = self.rng.integers(0, self.num_items, size=todo.size)
        return negatives.astype(np.int32)
