# ruff: noqa
# Session 24 probe (kept in git history only; removed in the next commit).
import sys, time, numpy as np, torch
torch.set_num_threads(2)
from scvi_mmd.module import MMDPenalty
from scvi_mmd.module._clusters import shared_strata
d = torch.load(sys.argv[1] if len(sys.argv) > 1 else "/work/probe/zs4_sc2.pt"); zs = d["zs"]
pen = MMDPenalty(4, n_latent=10, kernel_scales=[0.25, 0.5, 1.0, 2.0, 4.0], clusters=16)
pen.load_state_dict(d["pen"]); pen.clusters._seeded = True; pen.clusters._shared = d["shared"]
pen.train(); pen._frozen = True
LADDER = [0, 1, 2, 3, 4]

class PairSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, i, j, w, g0):
        diff = z.index_select(-2, i).sub_(z.index_select(-2, j))
        sq = (diff * diff).sum(-1)
        p = torch.mul(sq, -g0).exp_()
        k = p.clone(); c = p.clone(); cur = p
        for e in LADDER[1:]:
            cur = cur * cur
            k.add_(cur); c.add_(cur, alpha=2.0 ** e)
        value = (k * w).sum(-1) / len(LADDER)
        coef = c.mul_(w).mul_(g0 * (-2.0 / len(LADDER)))   # d value / d diff = coef * diff
        ctx.save_for_backward(i, j, diff.mul_(coef[..., None]))
        ctx.n = z.shape[-2]
        return value
    @staticmethod
    def backward(ctx, go):
        i, j, gd = ctx.saved_tensors
        gd = gd * go[..., None, None] if go.dim() else gd * go
        out = gd.new_zeros(gd.shape[:-2] + (ctx.n, gd.shape[-1]))
        out.index_add_(-2, i, gd).index_add_(-2, j, gd, alpha=-1.0)
        return out, None, None, None, None

def pair_term(z, groups):
    groups = groups.reshape(-1)
    assigned = pen.clusters.assign(z.detach())
    strata = shared_strata(groups, assigned, 16)
    together = strata[:, None] == strata[None, :]
    same = together & (groups[:, None] == groups[None, :])
    count = same.sum(1)
    used = count >= 2
    in_stratum = (together & used).sum(1)
    others = ((in_stratum - count) * used).to(z.dtype)
    Z = 0.5 * others.sum()
    within = others / (count - 1).clamp_min(1).to(z.dtype)
    together &= used[:, None]
    together &= used[None, :]
    i, j = together.triu_(1).nonzero(as_tuple=True)
    w = torch.where(groups.index_select(0, i) == groups.index_select(0, j), within.index_select(0, i), -1.0).mul_(2.0 / Z.clamp_min(1.0))
    g0 = pen.gamma(z, strata)[..., 0]
    return PairSum.apply(z, i, j, w, g0)
vals = []
for z, g in zs[:10]:
    a = z.clone().requires_grad_(True); va = pen.pooled(a, g); va.backward()
    b = z.clone().requires_grad_(True); vb = pair_term(b, g); vb.backward()
    vals.append((va.item(), vb.item(), float((a.grad - b.grad).abs().max() / a.grad.abs().max())))
print(vals[:4])
ts = {"pooled": [], "pairs": []}
for r in range(15):
    for i, (z, g) in enumerate(zs):
        for name in (("pooled", "pairs") if i % 2 else ("pairs", "pooled")):
            x = z.clone().requires_grad_(True)
            t0 = time.perf_counter()
            v = pen.pooled(x, g) if name == "pooled" else pair_term(x, g)
            v.backward(); ts[name].append(time.perf_counter() - t0)
a, b = np.array(ts["pooled"]), np.array(ts["pairs"])
print("pooled", np.median(a) * 1e6, "pairs", np.median(b) * 1e6, "paired ratio", np.median(b / a))
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for i, (z, g) in enumerate(zs):
        x = z.clone().requires_grad_(True); pair_term(x, g).backward()
rows = sorted([(e.self_cpu_time_total / 64, e.count / 64, e.key) for e in prof.key_averages()], reverse=True)
print(sum(r[0] for r in rows)); print("; ".join(f"{k} x{c:.0f} {t:.0f}" for t, c, k in rows if t > 3))
