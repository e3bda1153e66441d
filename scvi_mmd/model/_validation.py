"""Checks of user input before any training: a :class:`ValueError` (or a warning) that says
what is wrong and where, never a failure deep in torch or a silently broken model.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scvi import settings

if TYPE_CHECKING:
    from anndata import AnnData

_ROW_CHUNK = 8192  # rows of a dense matrix checked at a time (bounded temporary memory)
_N_EXAMPLES = 3


def check_not_empty(adata: AnnData) -> None:
    """Raise a :class:`ValueError` for an AnnData without cells or without genes."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"The AnnData has {adata.n_obs} cells x {adata.n_vars} genes: "
                         "SCVIMMD needs at least one cell and one gene.")


def check_obs_column(adata: AnnData, key: str) -> None:
    """A :class:`ValueError` if ``adata.obs[key]`` has missing (NaN) or empty values."""
    if key is None or key not in adata.obs:
        return
    column = adata.obs[key]
    missing = column.isna().to_numpy()
    as_text = column.astype("string").str.strip()
    empty = (as_text == "").fillna(False).to_numpy()
    n_bad = int((missing | empty).sum())
    if n_bad:
        raise ValueError(f"adata.obs[{key!r}] has {n_bad} of {adata.n_obs} cells with a "
                         "missing (NaN) or empty value: give every cell a value, or remove "
                         "those cells.")


def _bad_entries(matrix) -> tuple[int, int, list, list, bool]:
    """Counts of NaN/inf and negative values, rows and columns of a few, any non-integer;
    a matrix not in memory as sparse is read in chunks of rows (bounded memory).
    """
    n_not_finite = n_negative = 0
    rows, cols, non_integer = [], [], False
    if sp.issparse(matrix):
        chunks = [(0, matrix)]
    else:
        chunks = ((start, matrix[start:start + _ROW_CHUNK])
                  for start in range(0, matrix.shape[0], _ROW_CHUNK))
    for start, block in chunks:
        if not isinstance(block, sp.csr_matrix | sp.csr_array):  # (dense: its non-zeros)
            block = sp.csr_matrix(block if sp.issparse(block) else np.asarray(block))
        data = block.data
        not_finite, negative = ~np.isfinite(data), data < 0
        n_not_finite += int(not_finite.sum())
        n_negative += int(negative.sum())
        bad = np.flatnonzero(not_finite | negative)[:max(_N_EXAMPLES - len(rows), 0)]
        rows += (np.searchsorted(block.indptr, bad, side="right") - 1 + start).tolist()
        cols += block.indices[bad].tolist()
        if not non_integer:
            with np.errstate(invalid="ignore"):
                non_integer = bool(np.any(np.isfinite(data) & (data % 1 != 0)))
    return n_not_finite, n_negative, rows, cols, non_integer


def check_counts(adata: AnnData, layer: str | None = None) -> None:
    """Check every entry of ``adata.X`` (or ``layers[layer]``) once (sparse: ``O(nnz)``).

    Raises a :class:`ValueError` for NaN, infinite or negative values (how many; a few cells
    and genes by name); warns for non-integer values, as scvi-tools does on a sample.
    """
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    matrix = adata.X if layer is None else adata.layers[layer]
    if matrix is None:
        raise ValueError(f"{where} is empty (None): it must hold the raw counts.")
    n_not_finite, n_negative, rows, cols, non_integer = _bad_entries(matrix)
    if n_not_finite or n_negative:
        examples = ", ".join(f"({adata.obs_names[r]!s}, {adata.var_names[c]!s})"
                             for r, c in zip(rows, cols))
        raise ValueError(f"{where} must hold raw counts, but it has {n_not_finite} NaN or "
                         f"infinite and {n_negative} negative entries, e.g. at (cell, gene) "
                         f"{examples}. Remove or fix those cells or genes, or pass the layer "
                         "with the raw counts.")
    if non_integer:
        warnings.warn(f"{where} does not contain unnormalized count data (it has non-integer "
                      "values). Are you sure this is what you want?", UserWarning,
                      stacklevel=settings.warnings_stacklevel)


def check_batch_size(batch_size) -> None:
    """A :class:`ValueError` unless ``batch_size`` is an integer ``>= 2`` (batch norm)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) \
            or batch_size < 2:
        raise ValueError("`batch_size` must be an integer >= 2 (batch normalisation needs two "
                         f"cells per training minibatch), got {batch_size!r}.")


def last_minibatch_has_one_cell(n_train: int, batch_size: int) -> bool:
    """Whether ``n_train`` cells leave one cell in the last minibatch (to be dropped); a
    :class:`ValueError` for a single training cell.
    """
    if n_train == 1:
        raise ValueError("The training set has a single cell: SCVIMMD needs at least two.")
    return n_train % batch_size == 1


def check_saved_model(dir_path: str, prefix: str | None = None) -> None:
    """A :class:`ValueError` naming ``model.pt`` if it is truncated or corrupt (its zip
    directory or CRC check fails); a missing file is left to scvi-tools.
    """
    path = os.path.join(dir_path, f"{prefix or ''}model.pt")
    if not os.path.isfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"Could not read the saved model {path}: the file is truncated or "
                         f"corrupt ({error}).") from error
    if bad is not None:
        raise ValueError(f"Could not read the saved model {path}: the file is corrupt (entry "
                         f"{bad!r} fails its checksum).")


class CheckedLoadMixin:
    """``load`` and ``load_query_data`` with the saved model and the data checked first."""

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, *args, prefix=None, **kwargs):
        """As :meth:`scvi.model.base.BaseModelClass.load`; a corrupt file is a ValueError."""
        check_saved_model(dir_path, prefix)
        return super().load(dir_path, adata, *args, prefix=prefix, **kwargs)

    @classmethod
    def load_query_data(cls, adata: AnnData | None = None, reference_model=None, *args,
                        **kwargs):
        """As :meth:`scvi.model.base.ArchesMixin.load_query_data`, with the saved reference
        and the query's counts checked first.
        """
        if isinstance(reference_model, str | os.PathLike):
            check_saved_model(str(reference_model), kwargs.get("prefix"))
        if adata is not None:
            check_not_empty(adata)
        model = super().load_query_data(adata, reference_model, *args, **kwargs)
        if adata is not None:
            check_counts(adata, model.registry_["setup_args"].get("layer"))
        return model
