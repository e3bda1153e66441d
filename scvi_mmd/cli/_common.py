"""What every subcommand shares: errors, argument types, reading and checking input, writing."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

LATENT_KEY = "X_scvi_mmd"
DEMO_EPOCHS = 40


class InputError(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


def number_arg(text: str) -> float:
    """A number (its range is checked by the library, which owns the setting)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def numbers_arg(text: str) -> list[float]:
    return [number_arg(part) for part in text.split(",") if part.strip()]


def gamma_arg(text: str) -> float | str:
    return text if text == "median" else number_arg(text)


def scales_arg(text: str) -> list[float] | None:
    return None if text.lower() == "none" else numbers_arg(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def minibatch_size(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"must be >= 2 (batch normalisation needs two cells per minibatch): {text!r}")
    return value


def check_output_file(path: str, overwrite: bool, input_path: str | None) -> Path:
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


def check_folder(path: str, overwrite: bool, what: str) -> Path:
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} is not a folder: {path}")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise InputError(f"{what} exists and is not empty: {path} (pass --overwrite)")
    parent = folder.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InputError(f"cannot create {what}: {path}")
    return folder


def read_input(path: str, backed: bool = False):
    """Read an h5ad file (``backed``: its matrix stays on disk), turning every failure into an
    :class:`InputError`.
    """
    import anndata

    file = Path(path)
    if not file.exists():
        raise InputError(f"input file not found: {path}")
    if not file.is_file():
        raise InputError(f"input is not a file: {path}")
    try:
        return anndata.read_h5ad(file, backed="r" if backed else None)
    except Exception as error:  # h5py and anndata raise many types for a bad file
        raise InputError(f"not a readable h5ad file: {path} ({type(error).__name__})") from None


def check_adata(adata, batch_key: str, labels_key: str | None, layer: str | None) -> None:
    """Cells and genes present, keys present, at least two batches, raw counts (all checked)."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"input has {adata.n_obs} cells x {adata.n_vars} genes: nothing to do")
    from scvi_mmd.model._validation import check_obs_column

    if batch_key not in adata.obs:
        raise InputError(f"batch key {batch_key!r} not in obs (columns: "
                         f"{', '.join(map(str, adata.obs))})")
    if labels_key is not None and labels_key not in adata.obs:
        raise InputError(f"labels key {labels_key!r} not in obs")
    try:
        for key in (batch_key, labels_key):
            if key is not None:
                check_obs_column(adata, key)
    except ValueError as error:
        raise InputError(str(error)) from None
    n_batches = adata.obs[batch_key].nunique()
    if n_batches < 2:
        raise InputError(f"batch key {batch_key!r} has {n_batches} batch: nothing to correct")
    if layer is not None and layer not in adata.layers:
        names = [str(k) for k in adata.layers.keys() if k is not None]  # anndata 0.13 lists None
        raise InputError(f"layer {layer!r} not in layers ({', '.join(names) or 'none'})")
    import warnings

    from scvi_mmd.model._validation import check_counts

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


def atomic_write_h5ad(adata, out: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent or ".")
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def demo_data(seed: int):
    from scvi_mmd.data import simulate_batches

    return simulate_batches(n_cells=1500, n_genes=500, n_batches=3, n_cell_types=4,
                            batch_effect=0.6, seed=seed)


def hvg_subset(adata, n_top_genes: int, batch_key: str, layer: str | None):
    if adata.isbacked:  # the matrix stays on disk: train on its genes as they are
        if 0 < n_top_genes < adata.n_vars:
            raise InputError("--backed trains on every gene of INPUT: select genes beforehand "
                             "and pass --n-top-genes 0")
        return adata
    if n_top_genes <= 0 or n_top_genes >= adata.n_vars:
        return adata.copy()
    return adata[:, highly_variable(adata, n_top_genes, batch_key, layer)].copy()


def highly_variable(adata, n_top_genes: int, batch_key: str, layer: str | None = None):
    """Mask of the ``n_top_genes`` most variable genes (seurat_v3 on counts, per batch; over
    all cells, with a warning, when a batch is too small for scanpy's loess).
    """
    import warnings

    import scanpy as sc

    kwargs = {"flavor": "seurat_v3", "n_top_genes": n_top_genes, "layer": layer,
              "inplace": False}
    try:
        flags = sc.pp.highly_variable_genes(adata, batch_key=batch_key, **kwargs)
    except ValueError as error:
        warnings.warn(f"seurat_v3 could not rank genes within every batch of {batch_key!r} "
                      f"({error}); ranking them over all cells instead.", UserWarning,
                      stacklevel=2)
        flags = sc.pp.highly_variable_genes(adata, **kwargs)
    return flags["highly_variable"].to_numpy()


