"""The ``scvi-mmd`` command line: ``integrate`` (train and write the latent) and ``sweep``.

Every input problem ends in one line on standard error, ``scvi-mmd: error: ...``, and exit
status 2; the input file is never written to, and outputs appear only when complete (written
to a temporary name in the same folder, then renamed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

LATENT_KEY = "X_scvi_mmd"
DEMO_EPOCHS = 40
# The command line's defaults: a median-heuristic, multi-scale kernel, whose strength follows
# the scale of the latent space (gamma = 1 on a 10-d latent barely acts below weights ~1e3).
DEFAULT_WEIGHT = 100.0
DEFAULT_SCALES = [0.25, 0.5, 1.0, 2.0, 4.0]


class InputError(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


# ------------------------------------------------------------------ argument parsing


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be finite and >= 0: {text!r}")
    return value


def _weights(text: str) -> list[float]:
    return [_weight(part) for part in text.split(",") if part.strip()]


def _gamma(text: str) -> float | str:
    if text == "median":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'median': {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be finite and > 0: {text!r}")
    return value


def _scales(text: str) -> list[float] | None:
    if text.lower() == "none":
        return None
    values = [_weight(part) for part in text.split(",") if part.strip()]
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"must be positive numbers or 'none': {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def _minibatch_size(text: str) -> int:
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"must be >= 2 (batch normalisation needs two cells per minibatch): {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scvi-mmd",
        description="scVI with a tunable MMD batch-correction penalty (scvi-tools extension).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    integrate = sub.add_parser(
        "integrate",
        help="train SCVIMMD and write the latent to obsm['X_scvi_mmd']",
        description="Train SCVIMMD on an h5ad of raw counts and write the latent representation "
        "to obsm['X_scvi_mmd'] of a copy of it (cells, obs, var and X untouched). Without "
        "INPUT, runs on a built-in simulated data set and reports how well batches mixed.",
    )
    integrate.add_argument("input", nargs="?", help="h5ad file with raw counts (omit for the demo)")
    integrate.add_argument("--batch-key", help="obs column with the batch (required with INPUT)")
    integrate.add_argument("--labels-key", help="obs column with cell types (optional)")
    integrate.add_argument("--label-aware", action="store_true",
                           help="compare batches within each cell type of --labels-key "
                           "(label-aware MMD)")
    integrate.add_argument("--unlabeled-category",
                           help="value of --labels-key marking unlabeled cells (ignored by the "
                           "label-aware MMD)")
    integrate.add_argument("--layer", help="layer with raw counts (default: X)")
    integrate.add_argument("--n-top-genes", type=int, default=2000,
                           help="highly variable genes to train on, seurat_v3 per batch; "
                           "0 = all genes (default: 2000)")
    integrate.add_argument("--mmd-weight", type=_weight, default=DEFAULT_WEIGHT,
                           help=f"weight of the MMD term (default: {DEFAULT_WEIGHT:g})")
    integrate.add_argument("--mmd-mode", choices=["normal", "unbiased", "fast"],
                           default="normal", help="MMD estimator (default: normal)")
    integrate.add_argument("--mmd-kernel-gamma", type=_gamma, default="median",
                           help="kernel inverse bandwidth, a number or 'median' (default)")
    integrate.add_argument("--mmd-kernel-scales", type=_scales, default=DEFAULT_SCALES,
                           help="comma-separated multipliers of gamma for a multi-scale kernel, "
                           "or 'none' (default: " + ",".join(f"{s:g}" for s in DEFAULT_SCALES)
                           + ")")
    integrate.add_argument("--mmd-pairs", choices=["sequential", "random", "all"],
                           default="sequential")
    integrate.add_argument("--max-epochs", type=_positive_int, default=None,
                           help="training epochs (default: scvi-tools' heuristic; "
                           f"{DEMO_EPOCHS} for the demo)")
    integrate.add_argument("--batch-size", type=_minibatch_size, default=128)
    integrate.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    integrate.add_argument("--seed", type=int, default=0)
    integrate.add_argument("-o", "--output", help="output h5ad (required with INPUT)")
    integrate.add_argument("--model-dir", help="save the trained model to this folder")
    integrate.add_argument("--plots", help="folder for training-curve and UMAP plots")
    integrate.add_argument("--overwrite", action="store_true",
                           help="replace an existing output file or model folder")

    sweep = sub.add_parser(
        "sweep",
        help="benchmark the knob: scib-metrics over a grid of mmd_weight",
        description="Fit SCVI, SCVIMMD over a grid of weights and the baselines, score every "
        "embedding with scib-metrics and write results.csv and plots "
        "(needs the 'benchmark' extra).",
    )
    sweep.add_argument("input", help="h5ad file with raw counts")
    sweep.add_argument("--batch-key", required=True)
    sweep.add_argument("--labels-key", required=True)
    sweep.add_argument("--layer")
    sweep.add_argument("--weights", type=_weights, default=[0.0, 1.0, 10.0, 100.0],
                       help="comma-separated weights (default: 0,1,10,100)")
    sweep.add_argument("--mmd-modes", default="normal", help="comma-separated, e.g. normal,fast")
    sweep.add_argument("--n-top-genes", type=int, default=2000)
    sweep.add_argument("--max-epochs", type=_positive_int, default=100)
    sweep.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    sweep.add_argument("--baselines", default="pca,scvi,harmony,scanorama",
                       help="comma-separated subset of pca,scvi,harmony,scanorama")
    sweep.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    sweep.add_argument("-o", "--output-dir", required=True)
    sweep.add_argument("--overwrite", action="store_true")
    return parser


# ------------------------------------------------------------------ checks


def _check_output_file(path: str, overwrite: bool, input_path: str | None) -> Path:
    out = Path(path)
    if out.suffix != ".h5ad":
        raise InputError(f"output must end in .h5ad: {path}")
    if input_path is not None and out.resolve() == Path(input_path).resolve():
        raise InputError("output must differ from INPUT (the input file is never modified)")
    if out.exists() and not overwrite:
        raise InputError(f"output exists: {path} (pass --overwrite to replace it)")
    if out.is_dir():
        raise InputError(f"output is a folder: {path}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output folder is not writable: {parent}")
    return out


def _check_folder(path: str, overwrite: bool, what: str) -> Path:
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} is not a folder: {path}")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise InputError(f"{what} exists and is not empty: {path} (pass --overwrite)")
    parent = folder.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InputError(f"cannot create {what}: {path}")
    return folder


def read_input(path: str):
    """Read an h5ad file, turning every failure into an :class:`InputError`."""
    import anndata

    file = Path(path)
    if not file.exists():
        raise InputError(f"input file not found: {path}")
    if not file.is_file():
        raise InputError(f"input is not a file: {path}")
    try:
        return anndata.read_h5ad(file)
    except Exception as error:  # h5py and anndata raise many types for a bad file
        raise InputError(f"not a readable h5ad file: {path} ({type(error).__name__})") from None


def check_adata(adata, batch_key: str, labels_key: str | None, layer: str | None) -> None:
    """Cells and genes present, keys present, at least two batches, raw counts (all checked)."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"input has {adata.n_obs} cells x {adata.n_vars} genes: nothing to do")
    if batch_key not in adata.obs:
        raise InputError(
            f"batch key {batch_key!r} not in obs (columns: {', '.join(map(str, adata.obs))})"
        )
    n_batches = adata.obs[batch_key].nunique()
    if n_batches < 2:
        raise InputError(f"batch key {batch_key!r} has {n_batches} batch: nothing to correct")
    if labels_key is not None and labels_key not in adata.obs:
        raise InputError(f"labels key {labels_key!r} not in obs")
    if layer is not None and layer not in adata.layers:
        names = [str(k) for k in adata.layers.keys() if k is not None]  # anndata 0.13 lists None
        raise InputError(f"layer {layer!r} not in layers ({', '.join(names) or 'none'})")
    from scvi_mmd.model._validation import check_counts

    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check_counts(adata, layer)
        except ValueError as error:
            raise InputError(str(error)) from None
    if caught:  # non-integer values: normalised data passed by mistake
        where = "X" if layer is None else f"layer {layer!r}"
        raise InputError(f"{where} does not hold raw counts (non-integer values): "
                         "pass --layer with the counts")


# ------------------------------------------------------------------ integrate


def _atomic_write_h5ad(adata, out: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent or ".")
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _demo_data(seed: int):
    from scvi_mmd.data import simulate_batches

    return simulate_batches(
        n_cells=1500, n_genes=500, n_batches=3, n_cell_types=4, batch_effect=0.6, seed=seed
    )


def _hvg_subset(adata, n_top_genes: int, batch_key: str, layer: str | None):
    import scanpy as sc

    if n_top_genes <= 0 or n_top_genes >= adata.n_vars:
        return adata.copy()
    flags = sc.pp.highly_variable_genes(
        adata, flavor="seurat_v3", n_top_genes=n_top_genes, batch_key=batch_key, layer=layer,
        inplace=False,
    )
    return adata[:, flags["highly_variable"].to_numpy()].copy()


def _plots(model, adata, latent, batch_key, labels_key, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    folder.mkdir(parents=True, exist_ok=True)
    history = model.history
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("elbo", axes[0]), ("mmd_loss", axes[1])):
        for mode in ("train", "validation"):
            name = f"{key}_{mode}"
            if name in history:
                series = history[name][name].astype(float)
                ax.plot(series.index, series.to_numpy(), label=mode)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key.replace("_", " "))
        ax.legend()
    fig.suptitle("SCVIMMD training")
    fig.tight_layout()
    curves = folder / "training_curves.png"
    fig.savefig(curves, dpi=100)
    plt.close(fig)

    view = sc.AnnData(obs=adata.obs[[k for k in (batch_key, labels_key) if k]].copy())
    view.obsm[LATENT_KEY] = latent
    sc.pp.neighbors(view, use_rep=LATENT_KEY)
    sc.tl.umap(view)
    colors = [k for k in (batch_key, labels_key) if k]
    fig = sc.pl.umap(view, color=colors, show=False, return_fig=True)
    umap = folder / "umap.png"
    fig.savefig(umap, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [curves, umap]


def integrate(args) -> int:
    import numpy as np

    demo = args.input is None
    if demo:
        batch_key = args.batch_key or "batch"
        labels_key = args.labels_key or "cell_type"
        if args.layer is not None:
            raise InputError("--layer applies to INPUT only")
    else:
        if args.batch_key is None:
            raise InputError("--batch-key is required with INPUT")
        if args.output is None:
            raise InputError("-o/--output is required with INPUT")
        batch_key, labels_key = args.batch_key, args.labels_key
    if args.label_aware and labels_key is None:
        raise InputError("--label-aware needs --labels-key")
    if args.unlabeled_category is not None and not args.label_aware:
        raise InputError("--unlabeled-category applies only with --label-aware")
    out = None if args.output is None else _check_output_file(
        args.output, args.overwrite, args.input
    )
    model_dir = None if args.model_dir is None else _check_folder(
        args.model_dir, args.overwrite, "model folder"
    )
    plots_dir = None if args.plots is None else _check_folder(args.plots, True, "plots folder")

    adata = _demo_data(args.seed) if demo else read_input(args.input)
    check_adata(adata, batch_key, labels_key, args.layer)

    import scvi

    from scvi_mmd import SCVIMMD

    scvi.settings.seed = args.seed
    work = _hvg_subset(adata, args.n_top_genes, batch_key, args.layer)
    try:  # the library's own checks of the data and settings, as one-line errors
        SCVIMMD.setup_anndata(work, batch_key=batch_key, layer=args.layer,
                              labels_key=labels_key if args.label_aware else None,
                              unlabeled_category=args.unlabeled_category)
        model = SCVIMMD(
            work,
            mmd_mode=args.mmd_mode,
            mmd_conditional=args.label_aware,
            mmd_weight=args.mmd_weight,
            mmd_kernel_gamma=args.mmd_kernel_gamma,
            mmd_kernel_scales=args.mmd_kernel_scales,
            mmd_pairs=args.mmd_pairs,
        )
    except ValueError as error:
        raise InputError(str(error)) from None
    max_epochs = args.max_epochs or (DEMO_EPOCHS if demo else None)
    model.train(
        max_epochs=max_epochs,
        batch_size=args.batch_size,
        accelerator=args.accelerator,
        check_val_every_n_epoch=1,
    )
    latent = model.get_latent_representation()

    written = []
    if model_dir is not None:
        model.save(str(model_dir), overwrite=True)
        written.append(model_dir)
    if plots_dir is not None:
        written += _plots(model, adata, latent, batch_key, labels_key, plots_dir)
    if out is not None:
        result = adata  # a fresh read of INPUT (or the demo data): write a copy with the latent
        result.obsm[LATENT_KEY] = latent.astype(np.float32)
        result.uns["scvi_mmd"] = {
            "mmd_mode": args.mmd_mode,
            "mmd_conditional": bool(args.label_aware),
            "labels_key": str(labels_key) if args.label_aware else "",
            "mmd_weight": args.mmd_weight,
            "mmd_kernel_gamma": str(args.mmd_kernel_gamma),
            "mmd_kernel_scales": str(args.mmd_kernel_scales),
            "mmd_pairs": args.mmd_pairs,
            "batch_key": batch_key,
            "n_genes_used": int(work.n_vars),
            "max_epochs": int(len(model.history["elbo_train"])),
            "seed": args.seed,
        }
        _atomic_write_h5ad(result, out)
        written.insert(0, out)

    print(_summary(model, work, latent, batch_key, labels_key, adata, written))
    return 0


def _summary(model, work, latent, batch_key, labels_key, adata, written) -> str:
    from scvi_mmd.metrics import batch_mixing, label_purity

    history = model.history
    lines = [
        "",
        f"SCVIMMD ({model.module.mmd_mode}, mmd_weight={model.module.mmd_weight:g}) on "
        f"{work.n_obs} cells x {work.n_vars} genes, "
        f"{work.obs[batch_key].nunique()} batches, {len(history['elbo_train'])} epochs",
        f"  final ELBO (train):       {float(history['elbo_train'].iloc[-1, 0]):.2f}",
        f"  final MMD term (train):   {float(history['mmd_loss_train'].iloc[-1, 0]):.4f}",
        f"  batch mixing (kNN, 0-1):  "
        f"{batch_mixing(latent, adata.obs[batch_key].to_numpy()):.3f}  (higher = better mixed)",
    ]
    if labels_key is not None:
        lines.append(
            f"  cell-type purity (kNN):   "
            f"{label_purity(latent, adata.obs[labels_key].to_numpy()):.3f}  "
            "(higher = types better apart)"
        )
    lines += [f"  wrote {path}" for path in written]
    return "\n".join(lines)


# ------------------------------------------------------------------ sweep


def sweep(args) -> int:
    try:
        from scvi_mmd import benchmark
    except ImportError as error:
        raise InputError(
            f"sweep needs the benchmark extra: pip install 'scvi-mmd[benchmark]' ({error})"
        ) from None
    out_dir = _check_folder(args.output_dir, args.overwrite, "output folder")
    adata = read_input(args.input)
    check_adata(adata, args.batch_key, args.labels_key, args.layer)
    modes = [m.strip() for m in args.mmd_modes.split(",") if m.strip()]
    if not modes or any(m not in ("normal", "unbiased", "fast") for m in modes):
        raise InputError("--mmd-modes must list normal, unbiased and/or fast, "
                         f"got {args.mmd_modes!r}")
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = set(baselines) - set(benchmark.BASELINES)
    if unknown:
        raise InputError(f"unknown baselines: {', '.join(sorted(unknown))}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    results = benchmark.run_sweep(
        adata,
        batch_key=args.batch_key,
        labels_key=args.labels_key,
        layer=args.layer,
        weights=args.weights,
        modes=modes,
        seeds=seeds,
        baselines=baselines,
        n_top_genes=args.n_top_genes,
        max_epochs=args.max_epochs,
        accelerator=args.accelerator,
        output_dir=out_dir,
    )
    print(results.to_string(index=False, float_format="%.3f"))
    print(f"wrote {out_dir / 'results.csv'} and plots in {out_dir}")
    return 0


# ------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scvi-mmd`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return integrate(args) if args.command == "integrate" else sweep(args)
    except InputError as error:
        print(f"scvi-mmd: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scvi-mmd: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
