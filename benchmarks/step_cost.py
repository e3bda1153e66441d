"""The MMD term's cost per training step: SCVI's and the default's steps alternated.

Usage::

    python benchmarks/step_cost.py --batches 4,64,512            # 20,000 cells, minibatch 128
    python benchmarks/step_cost.py --batches 4 --batch-size 1024
    python benchmarks/step_cost.py --device cuda                 # on a GPU (gpu_check.sh)

Per-epoch ratios on this shared 2-core machine move by +-0.1 between rounds (its speed drifts
over minutes). Here both models train in ONE process on the same minibatches, one step of
each in turn (the order swapped every step), so a slow spell hits both: the ratio of their
median step times is the cost of the term. The default ``SCVIMMD`` is first trained for
``--epochs`` epochs (its controller leaves the warm-up and sets its weight); then each step is
the module's forward pass with the loss, backward and an Adam step, with the weight it reached
and the permutation null on the steps its controller asks for (one in four), as its training
plan does after the warm-up (with nothing to correct: the term on one step in four, for the
record).
The data are ``scale.py``'s simulated counts, loaded in memory. Prints one line per setting;
no file is written.

These steps leave out what an epoch adds to each of them for both models alike: the data
loader (a dense minibatch from the AnnData) and Lightning's per-step work. The script then
times ``--epoch-rounds`` full SCVI epochs through ``train()`` (one epoch each, setup
excluded) and reports ``epoch_ratio_estimate = 1 + term / SCVI's step in an epoch``: the
issue's per-epoch ratio, read without the +-0.1 epoch-to-epoch drift of this machine.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def step_times(n_cells: int, n_batches: int, batch_size: int, epochs: int, steps: int,
               rounds: int, device: str = "cpu", epoch_rounds: int = 3) -> dict:
    import anndata
    import scvi
    import torch
    from scale import counts_file
    from scvi.dataloaders import AnnDataLoader

    from scvi_mmd import SCVIMMD
    from scvi_mmd.train import MMDTrainingPlan

    path = counts_file(n_cells, n_batches)
    scvi.settings.seed = 0
    models = {}
    for name, cls in (("SCVI", scvi.model.SCVI), ("default", SCVIMMD)):
        adata = anndata.read_h5ad(path)
        cls.setup_anndata(adata, batch_key="batch")
        models[name] = cls(adata)
    default = models["default"]
    default.train(max_epochs=epochs, batch_size=batch_size, enable_progress_bar=False,
                  train_size=1.0, check_val_every_n_epoch=None,
                  accelerator="gpu" if device == "cuda" else "cpu")
    weight, rule = default.mmd_weight, default.module.weight_rule
    loader = AnnDataLoader(models["SCVI"].adata_manager, batch_size=batch_size, shuffle=True)
    minibatches = [{k: v.to(device) for k, v in b.items()}
                   for _, b in zip(range(steps), loader, strict=False)]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for model in models.values():
        model.module.to(device).train()
    optimisers = {k: torch.optim.Adam(m.module.parameters(), lr=1e-3) for k, m in models.items()}
    times = {k: [] for k in models}
    for _ in range(rounds):
        for i, tensors in enumerate(minibatches):
            for name in (("SCVI", "default") if i % 2 else ("default", "SCVI")):
                kwargs = {"kl_weight": 1.0}
                if name == "default":  # as the training plan asks
                    kwargs.update(mmd_weight=weight, compute_null=rule.null_due(i),
                                  compute_term=weight != 0 or rule.listening
                                  or i % MMDTrainingPlan.record_every == 0)
                module = models[name].module
                sync()
                start = time.perf_counter()
                loss = module(tensors, loss_kwargs=kwargs)[2].loss
                loss.backward()
                optimisers[name].step()
                optimisers[name].zero_grad(set_to_none=True)
                sync()
                times[name].append(time.perf_counter() - start)
    skip = len(minibatches) // 4  # the first steps of the first round warm the allocator
    median = {k: float(np.median(v[skip:]) * 1e3) for k, v in times.items()}
    term = median["default"] - median["SCVI"]
    epoch_step = scvi_epoch_step_ms(models["SCVI"], batch_size, device, epoch_rounds)
    return {"device": device, "n_cells": n_cells, "n_batches": n_batches,
            "batch_size": batch_size,
            "phase": default.mmd_strength_state["phase"], "weight": round(weight, 3),
            "SCVI_step_ms": round(median["SCVI"], 2),
            "default_step_ms": round(median["default"], 2),
            "term_ms": round(term, 2),
            "step_ratio": round(median["default"] / median["SCVI"], 3),
            "SCVI_epoch_step_ms": round(epoch_step, 2),
            "epoch_ratio_estimate": round(1 + term / epoch_step, 3)}


def scvi_epoch_step_ms(model, batch_size: int, device: str, rounds: int) -> float:
    """Median over ``rounds`` one-epoch trainings of SCVI's epoch time per step (ms)."""
    from speed import EpochTimer

    timer = EpochTimer()
    for _ in range(rounds):
        model.train(max_epochs=1, batch_size=batch_size, train_size=1.0,
                    accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                    enable_progress_bar=False, enable_model_summary=False,
                    check_val_every_n_epoch=None, callbacks=[timer])
    steps = math.ceil(model.adata.n_obs / batch_size)
    return float(np.median(timer.seconds)) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--batches", default="4,64,512")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the default first")
    parser.add_argument("--steps", type=int, default=200, help="minibatches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epoch-rounds", type=int, default=3,
                        help="full SCVI epochs timed for the per-epoch estimate")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    for n_batches in (int(b) for b in args.batches.split(",")):
        print(step_times(args.cells, n_batches, args.batch_size, args.epochs, args.steps,
                         args.rounds, args.device, args.epoch_rounds), flush=True)


if __name__ == "__main__":
    main()
