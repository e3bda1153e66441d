"""Maximum Mean Discrepancy (MMD) estimators, as pure :mod:`torch` functions.

Everything here follows Gretton et al. (2012), "A Kernel Two-Sample Test", JMLR 13:723-773,
and imports nothing but :mod:`torch`, so each formula can be checked against the paper. One
concern per file: :mod:`._kernels` (kernels and the fused kernel sum), :mod:`._bandwidth`
(the median heuristic), :mod:`._estimators` (the textbook estimators), :mod:`._pairings`
(pairings and pair / kept cell weights), :mod:`._grouped` (grouped estimators).

Two families of functions:

* two-sample estimators on tensors ``x`` of shape ``(..., m, d)`` and ``y`` of shape
  ``(..., n, d)``: :func:`mmd_exact` (eq. 5, squared), :func:`mmd_unbiased` (eq. 3) and
  :func:`mmd_linear` (Lemma 14);
* grouped estimators, :func:`grouped_mmd_exact` and :func:`grouped_mmd_linear`, that take one
  tensor ``z`` of shape ``(..., n, d)``, an integer group code per cell (the batch) and a
  pairing of groups (by default :func:`sequential_pairs`: each batch present with the next
  present one, in code order) and return the sum of MMD^2 over the pairs. They use only tensor
  operations of shapes fixed by ``n`` and the number of groups: no Python loop over groups, no
  data-dependent shapes and no host-device synchronisation, so they run the same on a GPU.

A pairing is a long tensor ``partners`` of shape ``(n_groups, n_partners)``: row ``k`` lists the
groups ``l`` for which MMD^2(group k, group l) is added to the sum, padded with ``-1``
(:func:`sequential_pairs`, :func:`random_pairs`, :func:`all_pairs`).
:func:`grouped_mmd_conditional` compares batches within each label (class-conditional MMD);
:func:`kept_pair_weights` restricts each pair to chosen cells (a weighted MMD, used by the
label-free guard of :mod:`scvi_mmd.module`). :func:`pooled_weights` gives the pooled MMD (all
pairs of batches weighted by their cell pairs, ``O(n^2)`` whatever the number of batches, well
estimated with a few cells per batch).

Kernel bandwidth: ``gamma`` is a number, or several (a multi-scale kernel: the mean of the
Gaussian kernels); :func:`median_heuristic_gamma` gives ``1 / (2 median d^2)`` of a minibatch.

Speed: the grouped exact estimators reduce the ``n x n`` kernel with one fused
:func:`weighted_kernel_sum` (one autograd node with a closed-form gradient in ``z``, which
keeps an ``n x d`` matrix for the backward pass; cache-sized row blocks; and one ``exp`` for
scales that are powers of two apart), so the recommended multi-scale kernel costs about what
a single fixed ``gamma`` does.
"""

from ._bandwidth import median_heuristic_gamma
from ._estimators import mmd_exact, mmd_linear, mmd_unbiased
from ._grouped import (
    REDUCTIONS,
    grouped_mmd,
    grouped_mmd_conditional,
    grouped_mmd_exact,
    grouped_mmd_linear,
)
from ._kernels import GammaLike, gaussian_kernel, squared_distances, weighted_kernel_sum
from ._pairings import (
    PAIRINGS,
    all_pairs,
    group_counts,
    kept_pair_weights,
    n_pairs,
    pair_weights,
    pooled_weights,
    random_pairs,
    sequential_pairs,
)

__all__ = [
    "GammaLike",
    "PAIRINGS",
    "REDUCTIONS",
    "all_pairs",
    "gaussian_kernel",
    "group_counts",
    "grouped_mmd",
    "grouped_mmd_conditional",
    "grouped_mmd_exact",
    "grouped_mmd_linear",
    "kept_pair_weights",
    "median_heuristic_gamma",
    "mmd_exact",
    "mmd_linear",
    "mmd_unbiased",
    "n_pairs",
    "pair_weights",
    "pooled_weights",
    "random_pairs",
    "sequential_pairs",
    "squared_distances",
    "weighted_kernel_sum",
]
