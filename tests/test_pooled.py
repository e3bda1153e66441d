"""The pooled MMD, its guard and its label-free strata, against slow references."""

import itertools

import numpy as np
import pytest
import torch

from scvi_mmd.mmd import gaussian_kernel, mmd_exact, mmd_unbiased, pooled_weights
from scvi_mmd.module import OnlineKMeans
from scvi_mmd.module._guard import mutual_neighbours_pooled


def _slow_pooled(z, groups, gamma, unbiased=True, strata=None):
    """sum over (stratum, batch pair) of c_k c_l MMD^2, over the sum of c_k c_l (a loop)."""
    strata = torch.zeros_like(groups) if strata is None else strata
    estimator = mmd_unbiased if unbiased else mmd_exact
    num = den = 0.0
    for s in strata.unique():
        zs, gs = z[strata == s], groups[strata == s]
        for k, l in itertools.combinations(gs.unique().tolist(), 2):  # noqa: E741
            a, b = zs[gs == k], zs[gs == l]
            if unbiased and (len(a) < 2 or len(b) < 2):
                continue
            num += len(a) * len(b) * float(estimator(a, b, gamma))
            den += len(a) * len(b)
    return num / den if den else 0.0


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_weights_match_the_pair_loop(unbiased, seed):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    groups = torch.randint(0, 9, (40,), generator=gen)  # some batches of 0 or 1 cell
    strata = torch.randint(0, 3, (40,), generator=gen)
    kernel = gaussian_kernel(z, z, 0.4)
    for s in (None, strata):
        weights = pooled_weights(groups, strata=s, dtype=torch.float64, unbiased=unbiased)
        assert torch.equal(weights, weights.T)
        assert float((kernel * weights).sum()) == pytest.approx(
            _slow_pooled(z, groups, 0.4, unbiased, s), rel=1e-10, abs=1e-12)


def test_two_batches_is_the_plain_u_statistic():
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(25, 2, generator=gen, dtype=torch.float64)
    groups = torch.tensor([0] * 10 + [1] * 15)
    weights = pooled_weights(groups, dtype=torch.float64)
    value = (gaussian_kernel(z, z, 1.0) * weights).sum()
    assert float(value) == pytest.approx(float(mmd_unbiased(z[:10], z[10:], 1.0)))


def test_ignored_cells_and_singletons_leave_no_trace():
    groups = torch.tensor([0] * 10 + [1] * 10 + [2] * 9 + [3])  # batch 3: one cell
    ignore = torch.zeros(30, dtype=torch.bool)
    ignore[:4] = True
    weights = pooled_weights(groups, ignore=ignore, dtype=torch.float64)
    assert (weights[:4] == 0).all() and (weights[:, :4] == 0).all()
    assert (weights[-1] == 0).all()  # a batch of one cell has no within-batch estimate
    kept = ~ignore
    kept[-1] = False
    reference = pooled_weights(groups[kept], dtype=torch.float64)
    assert torch.allclose(weights[kept][:, kept], reference)


def test_pooled_weights_of_one_batch_are_zero():
    assert (pooled_weights(torch.zeros(10, dtype=torch.long)) == 0).all()


def test_pooled_is_zero_in_expectation_for_identical_batches():
    gen = torch.Generator().manual_seed(5)
    values = []
    for _ in range(300):
        z = torch.randn(64, 2, generator=gen, dtype=torch.float64)
        groups = torch.randint(0, 16, (64,), generator=gen)
        values.append(float((gaussian_kernel(z, z, 0.5) * pooled_weights(
            groups, dtype=torch.float64)).sum()))
    values = np.asarray(values)
    assert abs(values.mean()) < 3 * values.std() / np.sqrt(len(values))


@pytest.mark.parametrize("ties", [False, True])
def test_pooled_mutual_neighbours_match_a_loop(ties):
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(30, 2, generator=gen)
    groups = torch.randint(0, 4, (30,), generator=gen)
    if ties:  # duplicated codes (e.g. cells with the same counts): equal distances
        z[10:20] = z[:10]
    neg_sq = -torch.cdist(z, z).square()
    k = 3
    got = mutual_neighbours_pooled(groups, neg_sq, k)
    d = torch.cdist(z, z).square()

    def nearest(i):  # the cells as near as the k-th nearest, ties at it included
        other = [j for j in range(30) if groups[j] != groups[i]]
        kth = sorted(float(d[i, j]) for j in other)[k - 1]
        return {j for j in other if float(d[i, j]) <= kth}

    near = [nearest(i) for i in range(30)]
    expected = [any(i in near[j] for j in near[i]) for i in range(30)]
    assert got.tolist() == expected
    if ties:  # the ties matter here: topk's first k would keep fewer cells
        assert max(len(v) for v in near) > k
        # k = 1: two cells at one place, equally near a cell of another batch, both match it
        z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
        got = mutual_neighbours_pooled(torch.tensor([0, 1, 1, 0]), -torch.cdist(z, z).square(), 1)
        assert got.tolist() == [True, True, True, False]


def test_online_kmeans_finds_separated_clusters():
    gen = torch.Generator().manual_seed(7)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    kmeans = OnlineKMeans(3, 2)
    for _ in range(50):
        label = torch.randint(0, 3, (64,), generator=gen)
        kmeans.update(centres[label] + 0.1 * torch.randn(64, 2, generator=gen))
    found = kmeans.assign(centres)
    assert sorted(found.tolist()) == [0, 1, 2]  # one centroid per cluster
    with pytest.raises(ValueError, match="mmd_clusters"):
        OnlineKMeans(0, 2)


def test_online_kmeans_follows_a_loaded_state():
    codes = torch.randn(20, 2, generator=torch.Generator().manual_seed(9))
    kmeans = OnlineKMeans(3, 2)
    kmeans.update(codes)
    assert kmeans.is_shared and kmeans.filled.all()
    unseeded = OnlineKMeans(3, 2)
    unseeded.shared.fill_(False)
    kmeans.load_state_dict(unseeded.state_dict())
    assert not kmeans.is_shared  # not the host copy of the state before
    assert not kmeans.filled.any()
    kmeans.update(codes)  # seeded again, not compared with empty centroids
    assert kmeans.filled.all() and kmeans.centroids.abs().sum() > 0


@pytest.mark.parametrize("guard", [True, False])
def test_fused_null_equals_the_separate_null(guard):
    from scvi_mmd.module import MMDPenalty

    gen = torch.Generator().manual_seed(8)
    z = torch.randn(64, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    batch = torch.randint(0, 6, (64, 1), generator=gen)
    penalty = MMDPenalty(6, pairs="pooled", guard=guard, kernel_scales=[0.5, 1.0, 2.0])
    penalty._null_generator = torch.Generator().manual_seed(0)
    term, null = penalty.term_and_null(z, batch)
    penalty._null_generator = torch.Generator().manual_seed(0)
    assert float(null) == pytest.approx(float(penalty.null(z, batch)), rel=1e-12)
    assert float(term) == pytest.approx(float(penalty(z, batch)), rel=1e-12)
    term.backward()  # the term has a gradient, the null none
    assert z.grad is not None and torch.isfinite(z.grad).all() and not null.requires_grad


def test_shared_strata_keep_shared_clusters_and_pool_the_others():
    from scvi_mmd.module._clusters import shared_strata

    groups = torch.tensor([0, 0, 1, 1, 0, 0, 1, 2])
    clusters = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3])
    # cluster 0 (batches 0, 1) and 3 (batches 1, 2) are shared; 1 and 2 are one batch's
    assert shared_strata(groups, clusters, 4).tolist() == [0, 0, 0, 4, 4, 4, 3, 3]
    # against a loop over the cells, with empty clusters and many batches
    generator = torch.Generator().manual_seed(0)
    for n_batches in (2, 7, 300):
        groups = torch.randint(n_batches, (64,), generator=generator)
        clusters = torch.randint(12, (64,), generator=generator)
        pairs = list(zip(groups.tolist(), clusters.tolist()))
        expected = [c if any(h != g for h, d in pairs if d == c) else 16 for g, c in pairs]
        assert shared_strata(groups, clusters, 16).tolist() == expected


def test_clusters_that_split_the_batches_are_dropped_early():
    kmeans = OnlineKMeans(2, 2)
    kmeans.start(decide_at=3)
    for _ in range(3):
        kmeans.observe_purity(torch.tensor([True, True, True, False]))
    assert not bool(kmeans.shared) and float(kmeans.pure_share) == pytest.approx(0.75)
    kmeans.observe_purity(torch.tensor([False] * 4))  # decided: later steps change nothing
    assert not bool(kmeans.shared)
    kmeans.start(decide_at=2)
    for _ in range(2):
        kmeans.observe_purity(torch.tensor([True, False, False, False]))
    assert bool(kmeans.shared)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_default_guard_checks_only_the_cells_of_unshared_clusters(seed):
    from scvi_mmd.module import MMDPenalty
    from scvi_mmd.module._clusters import shared_strata

    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [20.0, 20.0], [-20.0, 0.0]],
                           dtype=torch.float64)
    cluster = torch.randint(0, 5, (100,), generator=gen)
    z = centres[cluster] + torch.randn(100, 2, generator=gen, dtype=torch.float64)
    groups = torch.randint(0, 3, (100,), generator=gen)
    groups[cluster == 3], groups[cluster == 4] = 0, 1  # clusters one batch alone has
    values = {}
    for guard in (None, True, False):
        penalty = MMDPenalty(3, pairs="pooled", clusters=5, n_latent=2, kernel_gamma=1.0,
                             guard=guard).double().eval()
        penalty.clusters.centroids.copy_(centres)
        penalty.clusters.filled.fill_(True)
        values[guard] = float(penalty(z, groups))
    assert penalty.guard_scope == "none"
    strata = shared_strata(groups, penalty.clusters.assign(z), 5)  # (a few cross the lines)
    unmatched = ~mutual_neighbours_pooled(groups, -torch.cdist(z, z).square(), 3)
    assert unmatched[strata < 5].any() and unmatched[strata == 5].all()
    for guard, ignored in ((None, unmatched & (strata == 5)), (True, unmatched),
                           (False, torch.zeros_like(unmatched))):
        kept = ~ignored
        expected = _slow_pooled(z[kept], groups[kept], 1.0, strata=strata[kept])
        assert values[guard] == pytest.approx(expected, rel=1e-9)
    assert len({round(v, 12) for v in values.values()}) == 3  # three different selections


@pytest.mark.parametrize("mode, stray, guard_runs", [
    ("unbiased", 0, False), ("unbiased", 1, False), ("normal", 1, True), ("unbiased", 2, True)])
def test_the_guard_is_skipped_only_where_it_changes_no_weight(mode, stray, guard_runs):
    from scvi_mmd.module import MMDPenalty
    from scvi_mmd.module._clusters import shared_strata

    gen = torch.Generator().manual_seed(4)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [20.0, 20.0], [-20.0, 0.0]],
                           dtype=torch.float64)
    cluster = torch.randint(0, 3, (60,), generator=gen)
    cluster[:stray] = 3  # cells of batch 1 alone in cluster 3, far from everything
    z = centres[cluster] + torch.randn(60, 2, generator=gen, dtype=torch.float64)
    groups = torch.randint(0, 3, (60,), generator=gen)
    groups[cluster == 2], groups[cluster == 3] = 0, 1  # clusters one batch alone has
    penalty = MMDPenalty(3, mode=mode, pairs="pooled", clusters=4, n_latent=2,
                         kernel_gamma=1.0).double().eval()
    penalty.clusters.centroids.copy_(centres)
    penalty.clusters.filled.fill_(True)
    calls = []
    keep_pooled = penalty.selector.keep_pooled
    penalty.selector.keep_pooled = lambda *a: calls.append(1) or keep_pooled(*a)
    value = float(penalty(z, groups))
    assert bool(calls) == guard_runs
    strata = shared_strata(groups, penalty.clusters.assign(z), 4)
    unmatched = ~mutual_neighbours_pooled(groups, -torch.cdist(z, z).square(), 3) & (strata == 4)
    assert unmatched[cluster >= 2].all()  # the unshared cells have no mutual neighbour
    kept = ~unmatched
    expected = _slow_pooled(z[kept], groups[kept], 1.0, mode == "unbiased", strata[kept])
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)
    if guard_runs:  # the guard matters there: without it the unshared cells would count
        assert _slow_pooled(z, groups, 1.0, mode == "unbiased", strata) != pytest.approx(expected)
