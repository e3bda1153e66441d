"""The MMD maths against slow, independent loop references and analytic values."""

import math

import pytest
import torch

from scvi_mmd.mmd import (
    gaussian_kernel,
    group_counts,
    grouped_mmd,
    grouped_mmd_conditional,
    grouped_mmd_exact,
    grouped_mmd_linear,
    median_heuristic_gamma,
    mmd_exact,
    mmd_linear,
    mmd_unbiased,
    random_pairs,
    sequential_pairs,
    squared_distances,
)

# ---------------------------------------------------------------- slow references (float64)


def ref_kernel(a, b, gamma):
    return math.exp(-gamma * sum((float(u) - float(v)) ** 2 for u, v in zip(a, b, strict=True)))


def ref_mmd_exact(x, y, gamma=1.0):
    """Square of eq. (5) of Gretton et al. (2012): a plain double loop."""
    m, n = len(x), len(y)
    kxx = sum(ref_kernel(a, b, gamma) for a in x for b in x) / m**2
    kyy = sum(ref_kernel(a, b, gamma) for a in y for b in y) / n**2
    kxy = sum(ref_kernel(a, b, gamma) for a in x for b in y) / (m * n)
    return kxx + kyy - 2 * kxy


def ref_mmd_unbiased(x, y, gamma=1.0):
    """Unbiased U-statistic of eq. (3): diagonal terms left out."""
    m, n = len(x), len(y)
    kxx = sum(ref_kernel(x[i], x[j], gamma) for i in range(m) for j in range(m) if i != j)
    kyy = sum(ref_kernel(y[i], y[j], gamma) for i in range(n) for j in range(n) if i != j)
    kxy = sum(ref_kernel(a, b, gamma) for a in x for b in y)
    return kxx / (m * (m - 1)) + kyy / (n * (n - 1)) - 2 * kxy / (m * n)


def ref_mmd_linear(x, y, gamma=1.0):
    """Lemma 14, truncated to 2h = min(m, n), cell i paired with cell i + h."""
    h = min(len(x), len(y)) // 2
    if h == 0:
        return 0.0
    total = 0.0
    for i in range(h):
        x1, x2, y1, y2 = x[i], x[i + h], y[i], y[i + h]
        total += (
            ref_kernel(x1, x2, gamma)
            + ref_kernel(y1, y2, gamma)
            - ref_kernel(x1, y2, gamma)
            - ref_kernel(x2, y1, gamma)
        )
    return total / h


def ref_estimator(mode):
    """The loop reference of a mode; the U-statistic is 0 for a sample of < 2 cells."""
    if mode == "unbiased":
        return lambda x, y, gamma: (ref_mmd_unbiased(x, y, gamma)
                                    if min(len(x), len(y)) >= 2 else 0.0)
    return ref_mmd_exact if mode == "normal" else ref_mmd_linear


def ref_grouped(z, groups, mode, gamma=1.0):
    """Sum over sequential pairs of present groups, one Python loop per pair."""
    groups = [int(g) for g in groups]
    present = sorted(set(groups))
    by_group = {g: [z[i] for i in range(len(groups)) if groups[i] == g] for g in present}
    estimator = ref_estimator(mode)
    return sum(
        estimator(by_group[a], by_group[b], gamma)
        for a, b in zip(present[:-1], present[1:], strict=True)
    )


def analytic_mmd2(delta, sigma, d, gamma):
    """Population MMD^2 of N(0, s^2 I) vs N(delta, s^2 I) under exp(-gamma ||x - y||^2)."""
    c = 1 + 4 * gamma * sigma**2
    return 2 * c ** (-d / 2) * (1 - math.exp(-gamma * delta**2 / c))


# ---------------------------------------------------------------- two-sample estimators


def test_squared_distances_match_loop():
    gen = torch.Generator().manual_seed(12)
    x, y = torch.randn(4, 3, generator=gen) + 100.0, torch.randn(5, 3, generator=gen) + 100.0
    ref = torch.tensor([[float(((a - b) ** 2).sum()) for b in y] for a in x])
    torch.testing.assert_close(squared_distances(x, y), ref, rtol=1e-4, atol=1e-4)
    assert (squared_distances(x, x).diagonal().abs() < 1e-3).all()


def test_gaussian_kernel_matches_loop():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=gen), torch.randn(4, 3, generator=gen)
    k = gaussian_kernel(x, y, gamma=0.3)
    ref = torch.tensor([[ref_kernel(a, b, 0.3) for b in y] for a in x])
    torch.testing.assert_close(k, ref.float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("estimator", "reference", "m", "n", "d", "gamma"),
    [
        (mmd_exact, ref_mmd_exact, 7, 7, 2, 1.0),
        (mmd_exact, ref_mmd_exact, 5, 9, 3, 0.2),
        (mmd_exact, ref_mmd_exact, 1, 4, 10, 2.0),
        (mmd_unbiased, ref_mmd_unbiased, 7, 7, 2, 1.0),
        (mmd_unbiased, ref_mmd_unbiased, 2, 9, 3, 0.2),
        (mmd_linear, ref_mmd_linear, 8, 8, 2, 1.0),
        (mmd_linear, ref_mmd_linear, 7, 12, 3, 0.2),
        (mmd_linear, ref_mmd_linear, 5, 3, 4, 2.0),
    ],
)
def test_two_sample_estimators_match_loop(estimator, reference, m, n, d, gamma):
    gen = torch.Generator().manual_seed(m * 100 + n)
    x = torch.randn(m, d, generator=gen, dtype=torch.float64)
    y = torch.randn(n, d, generator=gen, dtype=torch.float64) + 0.5
    assert estimator(x, y, gamma).item() == pytest.approx(reference(x, y, gamma), abs=1e-10)


def test_identical_sets_give_zero():
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(1))
    assert mmd_exact(x, x).item() == pytest.approx(0.0, abs=1e-6)
    # every Lemma-14 term is k(x1,x2) + k(x1,x2) - k(x1,x2) - k(x2,x1) = 0
    assert mmd_linear(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_exact_is_nonnegative_and_symmetric():
    gen = torch.Generator().manual_seed(2)
    for _ in range(20):
        x = torch.randn(6, 2, generator=gen) * 0.3
        y = torch.randn(9, 2, generator=gen) * 0.3
        assert mmd_exact(x, y).item() >= -1e-6
        assert mmd_exact(x, y).item() == pytest.approx(mmd_exact(y, x).item(), abs=1e-6)
        assert mmd_linear(x, y).item() == pytest.approx(mmd_linear(y, x).item(), abs=1e-6)


def test_tiny_samples_are_defined():
    x, y = torch.zeros(1, 3), torch.ones(1, 3)
    assert mmd_linear(x, y).item() == 0.0
    assert mmd_exact(x, y).item() == pytest.approx(2 - 2 * math.exp(-3), abs=1e-6)


def test_estimators_against_analytic_population_value():
    """Linear estimate is unbiased; the exact (V-statistic) one is biased upwards."""
    d, sigma, delta, gamma, m, draws = 2, 1.0, 1.0, 0.5, 40, 400
    truth = analytic_mmd2(delta, sigma, d, gamma)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(draws, m, d, generator=gen, dtype=torch.float64) * sigma
    y = torch.randn(draws, m, d, generator=gen, dtype=torch.float64) * sigma
    y[..., 0] += delta
    linear = mmd_linear(x, y, gamma)
    exact = mmd_exact(x, y, gamma)
    unbiased = mmd_unbiased(x, y, gamma)
    assert unbiased[0].item() == pytest.approx(ref_mmd_unbiased(x[0], y[0], gamma), abs=1e-10)
    se_linear = linear.std().item() / math.sqrt(draws)
    assert abs(linear.mean().item() - truth) < 4 * se_linear
    assert abs(unbiased.mean().item() - truth) < 4 * unbiased.std().item() / math.sqrt(draws)
    # V-statistic bias: + (2/m) (1 - E k(x, x')) > 0, well above its noise
    assert exact.mean().item() - truth > 0.5 * (2 / m) * (1 - (1 + 4 * gamma) ** (-d / 2))
    # fast-mode mean is close to the exact unbiased value
    assert abs(linear.mean().item() - unbiased.mean().item()) < 4 * se_linear


def test_linear_zero_in_expectation_for_same_distribution():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(500, 30, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(500, 30, 3, generator=gen, dtype=torch.float64)
    values = mmd_linear(x, y)
    assert abs(values.mean().item()) < 4 * values.std().item() / math.sqrt(500)
    assert (values < 0).any()  # unbiased, so it can be negative


# ---------------------------------------------------------------- grouped estimators


def test_sequential_pairs_skip_absent_groups():
    counts = torch.tensor([2, 0, 3, 1, 0])
    assert sequential_pairs(counts).flatten().tolist() == [2, -1, 3, -1, -1]
    assert sequential_pairs(torch.tensor([0, 4, 0])).flatten().tolist() == [-1, -1, -1]


@pytest.mark.parametrize("mode", ["normal", "unbiased", "fast"])
def test_grouped_example_from_the_spec(mode):
    """batches [0, 0, 1, 1, 3, 3] -> MMD(b0, b1) + MMD(b1, b3)."""
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 1, 3, 3])
    pair_estimator = {"normal": mmd_exact, "unbiased": mmd_unbiased, "fast": mmd_linear}[mode]
    expected = pair_estimator(z[0:2], z[2:4]) + pair_estimator(z[2:4], z[4:6])
    value = grouped_mmd(z, groups, n_groups=4, mode=mode)
    assert value.item() == pytest.approx(expected.item(), abs=1e-12)
    assert value.item() == pytest.approx(ref_grouped(z, groups, mode), abs=1e-10)


@pytest.mark.parametrize("mode", ["normal", "unbiased", "fast"])
@pytest.mark.parametrize("seed", range(6))
def test_grouped_matches_loop_on_random_layouts(mode, seed):
    gen = torch.Generator().manual_seed(seed)
    n, n_groups = 40, 6
    z = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    groups = torch.randint(0, n_groups, (n,), generator=gen)
    groups[groups == 2] = 4  # an absent group in the middle
    groups[0] = 5
    expected = ref_grouped(z, groups, mode, gamma=0.7)
    value = grouped_mmd(z, groups[:, None], n_groups, mode=mode, gamma=0.7)
    assert value.item() == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("mode", ["normal", "unbiased", "fast"])
def test_one_group_gives_zero(mode):
    z = torch.randn(10, 4)
    groups = torch.full((10,), 2)
    assert grouped_mmd(z, groups, 3, mode=mode).item() == 0.0


def test_unbiased_one_cell_group_contributes_zero_and_small_samples_raise():
    z = torch.randn(9, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 0, 1, 2, 2, 2, 2])  # pairs (0, 1), (1, 2) hold one cell
    assert grouped_mmd_exact(z, groups, 3, unbiased=True).item() == 0.0
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 3])  # (2, 3) holds one cell: 0
    expected = mmd_unbiased(z[:4], z[4:7])
    value = grouped_mmd_exact(z, groups, 4, unbiased=True)
    assert value.item() == pytest.approx(expected.item(), abs=1e-12)
    with pytest.raises(ValueError, match=">= 2 cells"):
        mmd_unbiased(z[:1], z[1:5])


def test_unbiased_is_zero_in_expectation_for_same_distribution():
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(400, 8, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(400, 8, 3, generator=gen, dtype=torch.float64)
    unbiased, biased = mmd_unbiased(x, y), mmd_exact(x, y)
    assert abs(unbiased.mean().item()) < 4 * unbiased.std().item() / math.sqrt(400)
    assert (unbiased < 0).any()
    # the V-statistic on 8 cells sits on its floor (2/8)(1 - E k) instead
    assert biased.mean().item() > 0.1


def test_one_cell_group_in_fast_mode_is_finite_and_contributes_zero():
    z = torch.randn(9, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 0, 1, 2, 2, 2, 2])
    value = grouped_mmd_linear(z, groups, 3)
    assert torch.isfinite(value)
    assert value.item() == 0.0  # both pairs, (0, 1) and (1, 2), involve the single cell
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 3])
    value = grouped_mmd_linear(z, groups, 4)
    assert value.item() == pytest.approx(ref_grouped(z, groups, "fast"), abs=1e-12)
    assert torch.isfinite(grouped_mmd_exact(z, groups, 4))


@pytest.mark.parametrize("mode", ["normal", "unbiased", "fast"])
def test_sample_dimension(mode):
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(3, 15, 4, generator=gen, dtype=torch.float64)
    groups = torch.randint(0, 3, (15,), generator=gen)
    values = grouped_mmd(z, groups, 3, mode=mode)
    assert values.shape == (3,)
    for s in range(3):
        assert values[s].item() == pytest.approx(grouped_mmd(z[s], groups, 3, mode=mode).item())


def grouped_mmd_unbiased(z, groups, n_groups):
    return grouped_mmd_exact(z, groups, n_groups, unbiased=True)


ESTIMATORS = [grouped_mmd_exact, grouped_mmd_unbiased, grouped_mmd_linear]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_gradient_reaches_z(estimator):
    gen = torch.Generator().manual_seed(8)
    z = (torch.randn(24, 3, generator=gen) * 0.5).requires_grad_()
    groups = torch.arange(24) % 3
    estimator(z, groups, 3).backward()
    assert torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_gradient_is_finite_for_duplicated_points(estimator):
    z = torch.zeros(8, 3, requires_grad=True)
    estimator(z, torch.arange(8) % 2, 2).backward()
    assert torch.isfinite(z.grad).all()


def test_fast_mode_builds_no_quadratic_matrix():
    """200k cells: an n x n float matrix would need 160 GB."""
    n = 200_000
    gen = torch.Generator().manual_seed(9)
    z = torch.randn(n, 2, generator=gen)
    groups = torch.randint(0, 4, (n,), generator=gen)
    assert torch.isfinite(grouped_mmd_linear(z, groups, 4))


def test_group_counts():
    counts = group_counts(torch.tensor([0, 2, 2, 2]), 4, torch.float32)
    assert counts.tolist() == [1.0, 0.0, 3.0, 0.0]


def test_bad_arguments():
    z = torch.randn(5, 2)
    with pytest.raises(ValueError, match="mode"):
        grouped_mmd(z, torch.zeros(5, dtype=torch.long), 2, mode="exact")
    with pytest.raises(ValueError, match="groups"):
        grouped_mmd(z, torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="shape"):
        grouped_mmd(torch.randn(5), torch.zeros(5, dtype=torch.long), 2)


# ---------------------------------------------------------------- kernel and pairing options


def ref_grouped_pairs(z, groups, pairs, mode, gamma=1.0):
    estimator = ref_estimator(mode)
    by_group = {g: [z[i] for i in range(len(groups)) if int(groups[i]) == g] for g in set(
        int(g) for g in groups)}
    return sum(estimator(by_group[a], by_group[b], gamma) for a, b in pairs)


@pytest.mark.parametrize("mode", ["normal", "unbiased", "fast"])
def test_multiscale_kernel_is_mean_over_scales(mode):
    gen = torch.Generator().manual_seed(10)
    z = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    groups = torch.randint(0, 3, (30,), generator=gen)
    scales = [0.1, 1.0, 3.0]
    multi = grouped_mmd(z, groups, 3, mode=mode, gamma=torch.tensor(scales, dtype=z.dtype))
    single = [grouped_mmd(z, groups, 3, mode=mode, gamma=g) for g in scales]
    assert multi.item() == pytest.approx(sum(single).item() / 3, abs=1e-12)


def test_median_heuristic_gamma_within_groups():
    z = torch.tensor([[0.0], [10.0], [1.0], [13.0], [3.0], [50.0]])
    groups = torch.tensor([0, 1, 0, 1, 0, 2])
    # same-group neighbours after a stable sort: (0, 1), (1, 3) in group 0; (10, 13) in 1:
    # squared distances 1, 4, 9 -> median 4; group 2 has one cell and no pair
    assert median_heuristic_gamma(z, groups).item() == pytest.approx(1 / 8)
    assert median_heuristic_gamma(z, groups[:, None], ignore=1).item() == pytest.approx(1 / 2)
    # no pair at all: the minibatch-wide median
    lonely = torch.tensor([0, 1, 2, 3, 4, 5])
    assert median_heuristic_gamma(z, lonely).item() == median_heuristic_gamma(z).item()
    zs = torch.stack([z, 2 * z])
    assert median_heuristic_gamma(zs, groups).tolist() == pytest.approx([1 / 8, 1 / 32])


def test_median_heuristic_gamma():
    z = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    # pairs (i, i + 2): squared distances 9, 36, 9, 36 -> median 9 (lower median)
    assert median_heuristic_gamma(z).item() == pytest.approx(1 / 18)
    zs = torch.stack([z, 2 * z])
    assert median_heuristic_gamma(zs).tolist() == pytest.approx([1 / 18, 1 / 72])
    assert torch.isfinite(median_heuristic_gamma(torch.zeros(5, 2)))


@pytest.mark.parametrize("mode", ["normal", "unbiased", "fast"])
def test_all_pairs_match_loop(mode):
    gen = torch.Generator().manual_seed(11)
    z = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    groups = torch.tensor([0, 1, 3] * 10)
    expected = ref_grouped_pairs(z, groups, [(0, 1), (0, 3), (1, 3)], mode)
    value = grouped_mmd(z, groups, 4, mode=mode, partners="all")
    assert value.item() == pytest.approx(expected, abs=1e-10)


def test_random_pairs_follow_a_permutation():
    counts = torch.tensor([3, 0, 2, 4])
    rank = torch.tensor([2, 0, 3, 1])  # order of codes: 1, 3, 0, 2 -> present: 3, 0, 2
    assert sequential_pairs(counts, rank).flatten().tolist() == [2, -1, -1, 0]
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        partners = random_pairs(counts, gen).flatten()
        assert sorted((partners >= 0).nonzero().flatten().tolist()).__len__() == 2
        assert set(partners.tolist()) - {-1} <= {0, 2, 3}


def test_grouped_rejects_unknown_pairing():
    with pytest.raises(ValueError, match="partners"):
        grouped_mmd(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), 2, partners="nearest")


# ---------------------------------------------------------------- class-conditional MMD


def ref_conditional(z, batches, labels, mode, unlabeled=None, gamma=1.0):
    """Loop over labels: sequential batch pairs within each label, mean over labels with pairs."""
    per_label = []
    for t in sorted(set(int(v) for v in labels)):
        if t == unlabeled:
            continue
        idx = [i for i in range(len(labels)) if int(labels[i]) == t]
        present = sorted(set(int(batches[i]) for i in idx))
        if len(present) < 2:
            continue
        per_label.append(ref_grouped([z[i] for i in idx], [batches[i] for i in idx], mode, gamma))
    return sum(per_label) / max(len(per_label), 1)


@pytest.mark.parametrize("mode", ["normal", "unbiased", "fast"])
@pytest.mark.parametrize("seed", range(4))
def test_conditional_matches_per_label_loop(mode, seed):
    gen = torch.Generator().manual_seed(20 + seed)
    n = 60
    z = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    batches = torch.randint(0, 3, (n,), generator=gen)
    labels = torch.randint(0, 4, (n,), generator=gen)
    labels[(labels == 2) & (batches != 1)] = 0  # label 2 exists in batch 1 only
    expected = ref_conditional(z, batches, labels, mode, unlabeled=3, gamma=0.5)
    value = grouped_mmd_conditional(z, batches, 3, labels[:, None], 4, unlabeled=3, mode=mode,
                                    gamma=0.5)
    assert value.item() == pytest.approx(expected, abs=1e-10)


def test_conditional_ignores_unlabeled_cells():
    gen = torch.Generator().manual_seed(30)
    z = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    batches = torch.arange(40) % 2
    labels = torch.zeros(40, dtype=torch.long)
    labels[:10] = 1  # unlabeled
    base = grouped_mmd_conditional(z, batches, 2, labels, 2, unlabeled=1)
    moved = z.clone()
    moved[:10] += 100.0  # unlabeled cells far away change nothing
    assert grouped_mmd_conditional(moved, batches, 2, labels, 2, unlabeled=1).item() == (
        pytest.approx(base.item(), abs=1e-12)
    )
    assert base.item() == pytest.approx(ref_grouped(z[10:], batches[10:], "normal"), abs=1e-10)


@pytest.mark.parametrize("mode", ["normal", "unbiased", "fast"])
def test_conditional_label_in_one_batch_contributes_zero(mode):
    z = torch.randn(20, 2, generator=torch.Generator().manual_seed(31))
    batches = torch.tensor([0] * 10 + [1] * 10)
    labels = torch.tensor([0] * 10 + [1] * 10)  # each label in one batch only
    assert grouped_mmd_conditional(z, batches, 2, labels, 2, mode=mode).item() == 0.0
    # the plain MMD would pull the two (different) types together
    assert grouped_mmd(z, batches, 2, mode="normal").item() > 0


def test_conditional_gradient_and_pairings():
    z = torch.randn(30, 2, generator=torch.Generator().manual_seed(32), requires_grad=True)
    batches, labels = torch.arange(30) % 3, (torch.arange(30) // 3) % 2
    for pairing in ("sequential", "random", "all"):
        value = grouped_mmd_conditional(z, batches, 3, labels, 2, pairing=pairing)
        (grad,) = torch.autograd.grad(value, z)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---------------------------------------------------------------- the fused kernel sum


@pytest.mark.parametrize(
    "gamma",
    [0.7, [0.25, 0.5, 1.0, 2.0, 4.0], [0.3, 1.1, 2.9], "per-sample ladder", "per-sample other",
     [0.5, 0.5, 1.0], [0.25, 1.0, 1.0, 8.0]],  # ladders with a scale twice and steps of 2^k
)
@pytest.mark.parametrize("n", [5, 700])  # 700 cells: several row blocks of the fused loop
def test_weighted_kernel_sum_matches_autograd_reference(gamma, n):
    """Value and gradient equal plain autograd through ``sum(W * mean_s exp(-g_s d^2))``."""
    from scvi_mmd.mmd import weighted_kernel_sum

    gen = torch.Generator().manual_seed(n)
    z = torch.randn(2, n, 3, generator=gen, dtype=torch.float64)
    weights = torch.randn(n, n, generator=gen, dtype=torch.float64)
    if gamma == "per-sample ladder":  # the shape MMDVAE passes: (samples, scales)
        gamma = torch.tensor([[0.2], [0.9]], dtype=torch.float64) * torch.tensor(
            [0.25, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    elif gamma == "per-sample other":
        gamma = torch.tensor([[0.2, 0.3], [0.9, 0.1]], dtype=torch.float64)
    fused_z = z.clone().requires_grad_()
    value = weighted_kernel_sum(fused_z, weights, gamma)  # W is not symmetric here
    value.sum().backward()

    ref_z = z.clone().requires_grad_()
    d2 = squared_distances(ref_z, ref_z)
    g = torch.as_tensor(gamma, dtype=torch.float64).reshape(-1) if not torch.is_tensor(
        gamma) or gamma.dim() < 2 else gamma
    if g.dim() == 1:
        g = g.expand(2, -1)
    ref = torch.stack([
        sum((torch.exp(-gs * d2[i]) * weights).sum() for gs in g[i]) / g.shape[1]
        for i in range(2)
    ])
    ref.sum().backward()
    torch.testing.assert_close(value, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fused_z.grad, ref_z.grad, rtol=1e-8, atol=1e-10)


def test_weighted_kernel_sum_symmetric_weights_and_given_distances():
    """With symmetric ``W`` flagged and the distances passed in, the same value and gradient."""
    from scvi_mmd.mmd import weighted_kernel_sum

    gen = torch.Generator().manual_seed(3)
    z = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(40, 40, generator=gen, dtype=torch.float64)
    w = w + w.T
    grads = []
    for kwargs in ({}, {"symmetric": True, "neg_sq": -squared_distances(z, z)}):
        zz = z.clone().requires_grad_()
        value = weighted_kernel_sum(zz, w, [0.5, 1.0, 2.0], **kwargs)
        value.backward()
        grads.append((value.detach(), zz.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_weighted_kernel_sum_under_no_grad_keeps_nothing():
    from scvi_mmd.mmd import weighted_kernel_sum

    z = torch.randn(50, 4)
    with torch.no_grad():
        value = weighted_kernel_sum(z, torch.ones(50, 50), [0.5, 1.0])
    assert not value.requires_grad
    expected = (gaussian_kernel(z, z, [0.5, 1.0])).sum()
    torch.testing.assert_close(value, expected)


@pytest.mark.parametrize("mode", ["normal", "unbiased", "fast"])
@pytest.mark.parametrize("gamma", [0.8, [0.5, 1.0, 2.0, 4.0], [0.3, 1.7]])
@pytest.mark.parametrize("guarded", [False, True])
def test_grouped_gradient_matches_finite_differences(mode, gamma, guarded):
    """The closed-form gradients (fused exact sum, paired kernel) against finite differences."""
    if guarded and mode == "fast":
        pytest.skip("the fast estimator takes no cell weights")
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(2, 23, 3, generator=gen, dtype=torch.float64).requires_grad_()
    groups = torch.randint(0, 3, (23,), generator=gen)
    keep = (torch.rand(23, 3, generator=gen) > 0.3).to(torch.float64) if guarded else None
    if not isinstance(gamma, float):
        gamma = torch.tensor([[0.4], [1.3]], dtype=torch.float64) * torch.tensor(
            gamma, dtype=torch.float64)  # per-sample bandwidths, as MMDVAE passes them

    def value(codes):
        return grouped_mmd(codes, groups, 3, mode=mode, gamma=gamma, partners="all", keep=keep)

    assert torch.autograd.gradcheck(value, (z,), eps=1e-6, atol=1e-7)
