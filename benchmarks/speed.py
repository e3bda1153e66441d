"""Speed and memory of the MMD term: SCVI vs SCVIMMD epochs, and the MMD function alone.

Usage::

    python benchmarks/speed.py                      # 10k cells x 2k genes, CPU or GPU
    python benchmarks/speed.py --n-cells 2000 --rounds 2 --quick   # a smoke run

Part 1 times training epochs of ``scvi.model.SCVI`` and ``SCVIMMD`` configurations
(``--configs``, see ``CONFIGS``: gamma = 1 and the recommended median multi-scale kernel, exact
and fast, and the loss-conditional model trained over a weight range) on the same synthetic
counts, interleaved round by round (SCVI, config 1, config 2, ...; the order rotates from one
round to the next, so that no method always runs first) so that drifts of the machine hit
every method alike. It prints the median epoch time of each and the median over rounds of its
ratio to SCVI's epoch in the same round. It then times each trained SCVIMMD's MMD term alone
(``MMDVAE.mmd_loss``, forward + backward, one minibatch, 200 repeats): ``1 + term / SCVI's
time per step`` (``term_ratio_*``) estimates the same ratio without the epoch-to-epoch noise.

Part 2 times the grouped MMD function alone (forward + backward) for n = 128 .. 8192 cells,
with both kernels, and reports the memory it keeps for the backward pass, its peak memory
(allocated tensors during one forward + backward: the profiler's events on the CPU, the
allocator's high-water mark on CUDA) and the number of tensor operations it dispatches
(what its time at small minibatches mostly depends on).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import anndata
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import scipy.sparse as sp
import scvi
import torch
from scvi import REGISTRY_KEYS

from scvi_mmd import SCVIMMD
from scvi_mmd.mmd import grouped_mmd, median_heuristic_gamma


class EpochTimer(pl.Callback):
    """Wall-clock seconds of each training epoch (setup and teardown excluded)."""

    def __init__(self):
        self.seconds: list[float] = []

    def _sync(self, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_epoch_start(self, trainer, pl_module):
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self._sync(pl_module)
        self.seconds.append(time.perf_counter() - self._start)


def synthetic_counts(n_cells: int, n_genes: int, n_batches: int, seed: int = 0) -> anndata.AnnData:
    """Negative-binomial counts with a per-batch gene scaling."""
    rng = np.random.default_rng(seed)
    batch = rng.integers(0, n_batches, n_cells)
    base = rng.gamma(0.5, 2.0, n_genes)
    batch_factor = rng.lognormal(0.0, 0.3, (n_batches, n_genes))
    mean = base[None, :] * batch_factor[batch]
    counts = rng.negative_binomial(5, 5 / (5 + mean)).astype(np.float32)
    adata = anndata.AnnData(sp.csr_matrix(counts))
    adata.obs["batch"] = pd.Categorical([f"b{b}" for b in batch])
    return adata


RECOMMENDED = {"mmd_kernel_gamma": "median", "mmd_kernel_scales": [0.25, 0.5, 1.0, 2.0, 4.0]}
CONFIGS = {  # explicit mmd_guard: the guard is on by default with the exact estimators
    "normal": {"mmd_mode": "normal", "mmd_weight": 1.0, "mmd_guard": False},
    "fast": {"mmd_mode": "fast", "mmd_weight": 1.0},
    "normal_rec": {"mmd_mode": "normal", "mmd_weight": 10.0, "mmd_guard": False, **RECOMMENDED},
    "fast_rec": {"mmd_mode": "fast", "mmd_weight": 10.0, **RECOMMENDED},
    "guarded_rec": {"mmd_mode": "normal", "mmd_weight": 10.0, "mmd_guard": True, **RECOMMENDED},
    "conditional_rec": {"mmd_mode": "normal", "mmd_weight": (0.1, 1000.0), "mmd_guard": False,
                        **RECOMMENDED},
    "conditional_guarded_rec": {"mmd_mode": "normal", "mmd_weight": (0.1, 1000.0), "mmd_guard": True,
                     **RECOMMENDED},
    "default": {},  # SCVIMMD(adata): the default strength, U-statistic, recommended kernel, guard
    "fixed_default_kernel": {"mmd_weight": 10.0},  # the same configuration at a fixed weight
}
KERNELS = {"gamma1": {"gamma": 1.0}, "median5": {"gamma": "median", "scales": [0.25, 0.5, 1, 2, 4]}}


def time_epochs(n_cells, n_genes, n_batches, batch_size, rounds, accelerator, configs):
    adata = synthetic_counts(n_cells, n_genes, n_batches)
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    models = {"SCVI": scvi.model.SCVI(adata)}
    for name in configs:
        data = adata.copy()
        if name == "scvi_control":  # a second SCVI: how far apart two identical methods land
            scvi.model.SCVI.setup_anndata(data, batch_key="batch")
            models[name] = scvi.model.SCVI(data)
            continue
        SCVIMMD.setup_anndata(data, batch_key="batch")
        models[name] = SCVIMMD(data, **CONFIGS[name])
    timers = {name: EpochTimer() for name in models}
    train_kwargs = {
        "max_epochs": 1,
        "batch_size": batch_size,
        "train_size": 1.0,
        "accelerator": accelerator,
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    for name, model in models.items():  # warm-up epoch, not timed
        model.train(**train_kwargs)
    names = list(models)
    for r in range(rounds):  # the order rotates, so no method always runs first or last
        for name in names[r % len(names):] + names[:r % len(names)]:
            models[name].train(**train_kwargs, callbacks=[timers[name]])
    term_ms = {name: 1e3 * time_mmd_term(model, batch_size) for name, model in models.items()
               if isinstance(model, SCVIMMD)}
    return {name: t.seconds for name, t in timers.items()}, term_ms


def time_mmd_term(model: SCVIMMD, batch_size: int, repeats: int = 200) -> float:
    """Median seconds of the trained module's MMD term, forward + backward, on one minibatch.

    The codes are the model's latent means of the first ``batch_size`` cells, with their
    batches, through :meth:`~scvi_mmd.module.MMDVAE.mmd_loss` (bandwidth, pairing, guard and
    all, as in a training step; with a strength, also its permutation null). Hundreds of repeats of a ~1 ms call give a median that the
    machine's drifts barely move, unlike a 4 s epoch; over SCVI's time per step it estimates
    the extra share of an epoch that the term costs.
    """
    module = model.module
    device = next(module.parameters()).device
    z = torch.as_tensor(model.get_latent_representation(indices=np.arange(batch_size)),
                        device=device).requires_grad_()
    codes = model.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)  # as the module sees
    batch = torch.as_tensor(np.asarray(codes[:batch_size]), device=device).long()

    def step():
        module.mmd_loss(z, batch).backward()
        if module.strength is not None:  # the strength's permutation null, every training step
            module.mmd_null_loss(z, batch)

    return median_seconds(step, device, repeats, warmup=10)


def median_seconds(step, device, repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``step()`` over ``repeats`` calls after ``warmup`` calls
    (on CUDA, synchronised after each)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of ``fn()``."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def time_function(n, n_batches, mode, device, repeats, kernel="gamma1", d=10):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(n, d, generator=gen).to(device).requires_grad_()
    groups = torch.randint(0, n_batches, (n,), generator=gen).to(device)
    spec = KERNELS[kernel]

    def mmd():  # as MMDVAE.mmd_loss does it: the bandwidth is recomputed at every step
        gamma = spec["gamma"]
        if gamma == "median":
            gamma = median_heuristic_gamma(z)
        if spec.get("scales"):
            gamma = gamma[..., None] * torch.tensor(spec["scales"], dtype=z.dtype,
                                                    device=z.device)
        return grouped_mmd(z, groups, n_batches, mode=mode, gamma=gamma)

    def step():
        out = mmd()
        out.backward()
        return out

    seconds = median_seconds(step, device, repeats)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _, saved = saved_bytes(mmd)
    n_ops, peak_cpu = profile_step(step)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_cpu
    return seconds, saved / 2**20, peak / 2**20, n_ops


def profile_step(fn) -> tuple[int, int]:
    """Tensor operations ``fn()`` dispatches, and the high-water mark of its CPU tensors.

    One profiled call. The operations are the top-level aten calls: at small minibatches the
    cost of the MMD term is mostly their number (each has a fixed cost of several
    microseconds on a CPU), which unlike a time does not depend on the machine or its load.
    The memory is each operation's own allocations minus releases (and the "[memory]"
    releases between operations), summed in the order they start; tensors that existed
    before the call are not counted.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    n_ops = current = peak = 0
    for event in events:
        n_ops += event.name.startswith("aten::") and (
            event.cpu_parent is None or not event.cpu_parent.name.startswith("aten::"))
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return n_ops, peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-cells", type=int, default=10_000)
    parser.add_argument("--n-genes", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per method")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 2048])
    parser.add_argument("--n-batches", type=int, nargs="+", default=[2, 32])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS),
                        choices=[*CONFIGS, "scvi_control"],
                        help="SCVIMMD configurations timed against SCVI; 'scvi_control' times a "
                             "second SCVI, whose ratio shows the resolution of the measurement")
    parser.add_argument("--function-sizes", type=int, nargs="+",
                        default=[128, 512, 2048, 4096, 8192])
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--out", default=None, help="CSV prefix for the two tables")
    parser.add_argument("--quick", action="store_true", help="skip the function benchmark")
    args = parser.parse_args(argv)

    scvi.settings.seed = 0
    device = torch.device(
        "cuda" if torch.cuda.is_available() and args.accelerator in ("auto", "gpu") else "cpu"
    )
    print(f"device: {device}, torch {torch.__version__}, scvi-tools {scvi.__version__}, "
          f"threads {torch.get_num_threads()}")

    rows = []
    for n_batches in args.n_batches:
        for batch_size in args.batch_sizes:
            seconds, term_ms = time_epochs(args.n_cells, args.n_genes, n_batches, batch_size,
                                           args.rounds, args.accelerator, args.configs)
            med = {name: statistics.median(times) for name, times in seconds.items()}
            row = {"n_batches": n_batches, "batch_size": batch_size, "scvi_s": med["SCVI"]}
            row.update({f"{name}_s": med[name] for name in args.configs})
            # paired: each round's epoch over SCVI's epoch of the same round, then the median
            row.update({f"ratio_{name}": statistics.median(
                t / s for t, s in zip(seconds[name], seconds["SCVI"])) for name in args.configs})
            # the MMD term alone over SCVI's mean time per step: 1 + that share estimates the
            # ratio without the epoch-to-epoch noise (FiLM's cost is not in it)
            step_ms = 1e3 * med["SCVI"] / math.ceil(args.n_cells / batch_size)
            row["scvi_step_ms"] = step_ms
            row.update({f"term_ms_{name}": ms for name, ms in term_ms.items()})
            row.update({f"term_ratio_{name}": 1.0 + ms / step_ms for name, ms in term_ms.items()})
            rows.append(row)
            print(pd.DataFrame([row]).to_string(index=False, float_format="%.3f"), flush=True)
    epochs = pd.DataFrame(rows)
    print("\nEpoch time, median over rounds (seconds), and median over rounds of the "
          "ratio to SCVI's epoch in the same round:")
    print(epochs.to_string(index=False, float_format="%.3f"))

    if not args.quick:
        rows = []
        for n_batches in args.n_batches:
            for n in args.function_sizes:
                for mode in ("normal", "fast"):
                    for kernel in KERNELS:
                        seconds, saved_mb, peak_mb, n_ops = time_function(
                            n, n_batches, mode, device, repeats=5 if n <= 2048 else 2,
                            kernel=kernel,
                        )
                        rows.append({"n_batches": n_batches, "n": n, "mode": mode,
                                     "kernel": kernel, "ms_fwd_bwd": 1e3 * seconds,
                                     "saved_mb": saved_mb, "peak_mb": peak_mb,
                                     "n_ops": n_ops})
        functions = pd.DataFrame(rows)
        print("\nMMD function alone, forward + backward (d = 10):")
        print(functions.to_string(index=False, float_format="%.3f"))
        if args.out:
            functions.to_csv(f"{args.out}_function.csv", index=False)
    if args.out:
        epochs.to_csv(f"{args.out}_epochs.csv", index=False)


if __name__ == "__main__":
    main()
