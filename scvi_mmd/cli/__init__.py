"""The ``scvi-mmd`` command line: ``integrate`` (train, write the latent) and ``sweep``.

An input problem is one line on standard error (``scvi-mmd: error: ...``, status 2); the input
is never written to; outputs appear only when complete (written aside, then renamed).
"""

from __future__ import annotations

import argparse
import sys

from scvi_mmd._defaults import DEFAULT_KERNEL_SCALES, DEFAULT_MODE, DEFAULT_STRENGTH
from scvi_mmd.module._penalty import MMD_MODES, MMD_PAIRS

from ._common import (
    DEMO_EPOCHS,
    LATENT_KEY,
    InputError,
    gamma_arg,
    minibatch_size,
    number_arg,
    numbers_arg,
    positive_int,
    scales_arg,
)
from ._integrate import integrate
from ._sweep import sweep

__all__ = ["main", "build_parser", "InputError", "LATENT_KEY"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``scvi-mmd: error: ...``, status 2)."""

    def error(self, message: str):
        raise InputError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    add = integrate.add_argument
    add("input", nargs="?", help="h5ad file with raw counts (omit for the demo)")
    add("--batch-key", help="obs column with the batch (required with INPUT)")
    add("--labels-key", help="obs column with cell types (optional)")
    add("--label-aware", action="store_true",
        help="compare batches within each cell type of --labels-key (label-aware MMD)")
    add("--unlabeled-category",
        help="value of --labels-key marking unlabeled cells (ignored by the label-aware MMD)")
    add("--layer", help="layer with raw counts (default: X)")
    add("--n-top-genes", type=int, default=2000,
        help="highly variable genes to train on, seurat_v3 per batch; 0 = all (default: 2000)")
    add("--strength", type=number_arg, default=None,
        help="correction strength in [0, 1]: the weight is set during training so that the "
        "batches' latent discrepancy goes from scVI's level (0) to the noise of a minibatch "
        f"with no batch effect (1); default {DEFAULT_STRENGTH:g} unless --mmd-weight is given")
    add("--mmd-weight", type=number_arg, default=None,
        help="instead of --strength: one fixed weight (0 = scVI)")
    add("--guard", action=argparse.BooleanOptionalAction, default=None,
        help="the label-free guard against over-correction: compare only cells with a mutual "
        "nearest neighbour in another batch (--guard: all cells; default: the cells of "
        "clusters one batch alone has, none with --label-aware or --mmd-mode fast)")
    add("--mmd-mode", choices=MMD_MODES, default=DEFAULT_MODE,
        help=f"MMD estimator (default: {DEFAULT_MODE})")
    add("--mmd-kernel-gamma", type=gamma_arg, default="median",
        help="kernel inverse bandwidth, a number or 'median' (default)")
    scales = ",".join(f"{s:g}" for s in DEFAULT_KERNEL_SCALES)
    add("--mmd-kernel-scales", type=scales_arg, default=list(DEFAULT_KERNEL_SCALES),
        help=f"comma-separated multipliers of gamma, or 'none' (default: {scales})")
    add("--mmd-pairs", choices=MMD_PAIRS, default=None,
        help="which batches are compared: all pairs pooled ('pooled', the default with the "
        "exact estimators) or pairs ('sequential', the default with --mmd-mode fast or "
        "--label-aware)")
    add("--backed", action="store_true",
        help="read INPUT from disk as training goes (anndata backed mode), for files larger "
        "than memory; needs --n-top-genes 0")
    add("--max-epochs", type=positive_int, default=None,
        help=f"training epochs (default: scvi-tools' heuristic; {DEMO_EPOCHS} for the demo)")
    add("--batch-size", type=minibatch_size, default=128)
    add("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    add("--seed", type=int, default=0)
    add("-o", "--output", help="output h5ad (required with INPUT)")
    add("--model-dir", help="save the trained model to this folder")
    add("--plots", help="folder for training-curve and UMAP plots")
    add("--overwrite", action="store_true",
        help="replace an existing output file or model folder")

    sweep = sub.add_parser(
        "sweep",
        help="benchmark the knob: scib-metrics over strengths and/or fixed weights",
        description="Fit SCVI, SCVIMMD over a grid of weights and the baselines, score every "
        "embedding with scib-metrics and write results.csv and plots "
        "(needs the 'benchmark' extra).",
    )
    sweep.add_argument("input", help="h5ad file with raw counts")
    sweep.add_argument("--batch-key", required=True)
    sweep.add_argument("--labels-key", required=True)
    sweep.add_argument("--layer")
    sweep.add_argument("--weights", type=numbers_arg, default=[0.0, 1.0, 10.0, 100.0],
                       help="comma-separated fixed weights (default: 0,1,10,100; '' for none)")
    sweep.add_argument("--strengths", type=numbers_arg, default=[],
                       help="comma-separated strengths, each fit with the default "
                       "configuration (e.g. 0.5,0.9,1)")
    sweep.add_argument("--mmd-modes", default="normal", help="comma-separated, e.g. normal,fast")
    sweep.add_argument("--n-top-genes", type=int, default=2000)
    sweep.add_argument("--max-epochs", type=positive_int, default=100)
    sweep.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    sweep.add_argument("--baselines", default="pca,scvi,harmony,scanorama",
                       help="comma-separated subset of pca,scvi,harmony,scanorama")
    sweep.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    sweep.add_argument("-o", "--output-dir", required=True)
    sweep.add_argument("--overwrite", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scvi-mmd`` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return integrate(args) if args.command == "integrate" else sweep(args)
    except InputError as error:
        print(f"scvi-mmd: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scvi-mmd: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
