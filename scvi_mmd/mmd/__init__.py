"""Maximum Mean Discrepancy (MMD) estimators, as pure :mod:`torch` functions.

Everything follows Gretton et al. (2012), "A Kernel Two-Sample Test", JMLR 13:723-773, and
imports only :mod:`torch`. :mod:`._kernels`: Gaussian kernels and the fused kernel sum;
:mod:`._bandwidth`: the median heuristic; :mod:`._estimators`: the two-sample estimators
(eq. 3, eq. 5, Lemma 14); :mod:`._pairings`: which batches are compared and the cell weights
of a pair or of the pooled MMD; :mod:`._grouped`: every pair of a minibatch in one pass, with
no Python loop over groups and no host synchronisation.
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
    "GammaLike", "PAIRINGS", "REDUCTIONS", "all_pairs", "gaussian_kernel", "group_counts",
    "grouped_mmd", "grouped_mmd_conditional", "grouped_mmd_exact", "grouped_mmd_linear",
    "kept_pair_weights", "median_heuristic_gamma", "mmd_exact", "mmd_linear", "mmd_unbiased",
    "n_pairs", "pair_weights", "pooled_weights", "random_pairs", "sequential_pairs",
    "squared_distances", "weighted_kernel_sum",
]
