"""Session 20 probe (history only): the MMD with each cell weighted by its mutual-neighbour edges to each other batch
(per batch pair and stratum, matched regions carry equal mass in both batches)."""
import torch

def degree_weights(groups, neg_sq, strata=None, k=3, unbiased=True, dtype=torch.float32):
    groups = groups.reshape(-1)
    while neg_sq.dim() > 2:
        neg_sq = neg_sq[0]
    n = groups.shape[0]
    other = groups[:, None] != groups[None, :]
    same_s = None if strata is None else strata.reshape(-1)[:, None] == strata.reshape(-1)[None, :]
    allowed = other if same_s is None else other & same_s
    kk = min(k, n - 1)
    if kk < 1:
        return torch.zeros(n, n, dtype=dtype, device=groups.device)
    score = neg_sq.detach().masked_fill(~allowed, float("-inf"))
    top = score.topk(kk, dim=-1).indices
    near = torch.zeros(n, n, dtype=torch.bool, device=groups.device).scatter_(1, top, True) & allowed
    M = (near & near.T).to(dtype)
    total = M.sum() / 2
    S = (~other).to(dtype)
    T = torch.ones_like(S) if same_s is None else same_s.to(dtype)
    ST = S * T
    D = M @ S                     # D_ij: edges from i to batch b_j (within i's stratum)
    E = ST @ D                    # E_ij: edges between (s_i, b_i) and b_j
    cnt = S.sum(0)
    if unbiased:  # a pair whose edges on one side all sit on one cell has no within estimate
        D2 = D * D
        den = E * E - ST @ D2                  # my side: (s_i, b_i) towards b_j
        den_other = E * E - (T * D2.T) @ S     # the other side: (s_i, b_j) towards b_i
        valid = (den > 0) & (den_other > 0)
    else:
        den, valid = E * E, E > 0
    Einv = torch.where(valid, 1.0 / E.clamp_min(1e-12), torch.zeros_like(E))
    F = torch.where(valid, E / den.clamp_min(1e-12), torch.zeros_like(E))
    cross = -(D * D.T) * Einv * (1 - S) * T
    same = ((D * F / cnt) @ D.T) * ST
    if unbiased:
        same.fill_diagonal_(0.0)
    total = (M * valid).sum() / 2
    W = (same + cross) / total.clamp_min(1.0)
    return W

def loop_reference(z, groups, strata, k=3, unbiased=True):
    """Slow: edges, then per stratum and batch pair the weighted MMD^2, averaged with weights E."""
    z = z.double(); n = len(groups)
    d = torch.cdist(z, z) ** 2
    g = groups.tolist(); s = strata.tolist() if strata is not None else [0] * n
    nn_ = []
    for i in range(n):
        cand = [j for j in range(n) if g[j] != g[i] and s[j] == s[i]]
        cand.sort(key=lambda j: float(d[i, j]))
        nn_.append(set(cand[:k]))
    edges = {(i, j) for i in range(n) for j in nn_[i] if i in nn_[j]}
    gamma = 0.7
    K = torch.exp(-gamma * d)
    num = den_total = 0.0
    for st in set(s):
        for b in set(g):
            for c in set(g):
                if b >= c: continue
                a = {i: sum(1 for j in range(n) if (i, j) in edges and g[j] == c) for i in range(n) if g[i] == b and s[i] == st}
                cc = {j: sum(1 for i in range(n) if (j, i) in edges and g[i] == b) for j in range(n) if g[j] == c and s[j] == st}
                E = sum(a.values())
                if E == 0: continue
                def within(w):
                    items = list(w.items()); tot = 0.0; norm = 0.0
                    for i, wi in items:
                        for j, wj in items:
                            if unbiased and i == j: continue
                            tot += wi * wj * float(K[i, j]); norm += wi * wj
                    return tot / norm if norm > 0 else None
                wa, wc = within(a), within(cc)
                if wa is None or wc is None:
                    continue
                xab = sum(a[i] * cc[j] * float(K[i, j]) for i in a for j in cc) / (E * E)
                num += E * (wa + wc - 2 * xab); den_total += E
    return num / den_total if den_total else 0.0

if __name__ == "__main__":
    torch.manual_seed(0)
    for unbiased in (True, False):
        for trial in range(3):
            n = 40
            z = torch.randn(n, 3).double()
            groups = torch.randint(0, 3, (n,))
            strata = torch.randint(0, 2, (n,)) if trial else None
            neg = -torch.cdist(z, z) ** 2
            W = degree_weights(groups, neg, strata, unbiased=unbiased, dtype=torch.float64)
            K = torch.exp(-0.7 * torch.cdist(z, z) ** 2)
            print(unbiased, trial, float((W * K).sum()), loop_reference(z, groups, strata, unbiased=unbiased), float((W - W.T).abs().max()))
