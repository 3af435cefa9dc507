"""Differentiable top-K operators and hard cascade selection: plain TensorFlow, no Keras.

Soft top-k memberships ``[..., n] -> [..., n]`` (values in [0, 1], summing to about k):
``dftopk`` (O(n), arXiv 2510.11472), ``lapsum_topk`` (arXiv 2503.06242),
``tournament_topk`` / ``iterative_softmax_topk`` (successive halving, arXiv 2010.15552).
Soft permutations ``[..., n] -> [..., n, n]``: ``neural_sort`` (arXiv 1903.08850) and
``soft_sort`` (arXiv 2006.16038), with ``topq_membership`` reading a top-q membership off one.
Hard selection: ``hard_topk_mask``, ``kth_largest``, ``cascade_select`` /
``survivor_cascade`` (a cascade's stage cuts) and ``brute_force_top_k`` (exact top-k over a
corpus in chunks).

Every function is also importable from its own module (``tfcascade.ops.lapsum`` …).
"""

from tfcascade.ops.brute_force_topk import brute_force_top_k
from tfcascade.ops.cascade_select import cascade_select, survivor_cascade
from tfcascade.ops.dftopk import dftopk, dftopk_logits
from tfcascade.ops.hard_topk import hard_topk_mask
from tfcascade.ops.lapsum import lapsum_topk
from tfcascade.ops.select import kth_largest
from tfcascade.ops.soft_permutation import neural_sort, soft_sort, topq_membership
from tfcascade.ops.tournament import iterative_softmax_topk, tournament_topk

__all__ = ["brute_force_top_k", "cascade_select", "dftopk", "dftopk_logits", "hard_topk_mask",
           "iterative_softmax_topk", "kth_largest", "lapsum_topk", "neural_sort", "soft_sort",
           "survivor_cascade", "topq_membership", "tournament_topk"]
