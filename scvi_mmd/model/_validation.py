"""Checks of user input that run before any training.

Each check raises a :class:`ValueError` (or warns) with what is wrong and where, so that bad
input never reaches torch, where it would fail deep in a distribution's argument check or,
worse, train without a word and leave a silently broken model.
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
        raise ValueError(
            f"The AnnData has {adata.n_obs} cells x {adata.n_vars} genes: SCVIMMD needs at least "
            "one cell and one gene."
        )


def check_obs_column(adata: AnnData, key: str) -> None:
    """Raise a :class:`ValueError` if ``adata.obs[key]`` has missing (NaN) or empty values.

    scvi-tools would register such cells as a category of their own or fail with a message
    about categories; here the message names the column and the number of cells.
    """
    if key is None or key not in adata.obs:
        return
    column = adata.obs[key]
    missing = column.isna().to_numpy()
    as_text = column.astype("string").str.strip()
    empty = (as_text == "").fillna(False).to_numpy()
    n_bad = int((missing | empty).sum())
    if n_bad:
        raise ValueError(
            f"adata.obs[{key!r}] has {n_bad} of {adata.n_obs} cells with a missing (NaN) or "
            "empty value: give every cell a value, or remove those cells."
        )


def _bad_entries_sparse(matrix) -> tuple[int, int, np.ndarray, np.ndarray, bool]:
    """Count NaN/inf and negative stored values of a sparse matrix; rows/cols of a few."""
    matrix = matrix if sp.isspmatrix_csr(matrix) or isinstance(matrix, sp.csr_array) else (
        sp.csr_matrix(matrix)
    )
    data = matrix.data
    not_finite = ~np.isfinite(data)
    negative = data < 0
    bad = np.flatnonzero(not_finite | negative)[:_N_EXAMPLES]
    rows = np.searchsorted(matrix.indptr, bad, side="right") - 1
    with np.errstate(invalid="ignore"):
        non_integer = bool(np.any(np.isfinite(data) & (data % 1 != 0)))
    return int(not_finite.sum()), int(negative.sum()), rows, matrix.indices[bad], non_integer


def _bad_entries_dense(matrix) -> tuple[int, int, np.ndarray, np.ndarray, bool]:
    """Same as :func:`_bad_entries_sparse` for a dense (or backed) matrix, in row chunks."""
    n_not_finite = n_negative = 0
    rows, cols = [], []
    non_integer = False
    for start in range(0, matrix.shape[0], _ROW_CHUNK):
        block = matrix[start : start + _ROW_CHUNK]
        if sp.issparse(block):  # a backed (on-disk) sparse matrix gives sparse chunks
            n_nf, n_neg, r, c, frac = _bad_entries_sparse(block)
            n_not_finite, n_negative = n_not_finite + n_nf, n_negative + n_neg
            rows += (r + start).tolist()[: max(_N_EXAMPLES - len(rows), 0)]
            cols += c.tolist()[: max(_N_EXAMPLES - len(cols), 0)]
            non_integer = non_integer or frac
            continue
        block = np.asarray(block)
        not_finite = ~np.isfinite(block)
        negative = block < 0
        n_not_finite += int(not_finite.sum())
        n_negative += int(negative.sum())
        if len(rows) < _N_EXAMPLES:
            r, c = np.nonzero(not_finite | negative)
            rows += (r[: _N_EXAMPLES - len(rows)] + start).tolist()
            cols += c[: _N_EXAMPLES - len(cols)].tolist()
        if not non_integer:
            with np.errstate(invalid="ignore"):
                non_integer = bool(np.any(np.isfinite(block) & (block % 1 != 0)))
    return n_not_finite, n_negative, np.asarray(rows, int), np.asarray(cols, int), non_integer


def check_counts(adata: AnnData, layer: str | None = None) -> None:
    """Check that ``adata.X`` (or ``adata.layers[layer]``) holds usable counts.

    Every stored entry is read once (``O(nnz)`` for a sparse matrix; dense matrices in chunks
    of rows), so the check is exact, unlike scvi-tools' check of a random sample.

    Raises
    ------
    ValueError
        If the matrix holds NaN, infinite or negative values: the message gives how many and
        the cell and gene names of a few.

    Warns
    -----
    UserWarning
        If the matrix holds non-integer values (normalised data?), as scvi-tools does.
    """
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    matrix = adata.X if layer is None else adata.layers[layer]
    if matrix is None:
        raise ValueError(f"{where} is empty (None): it must hold the raw counts.")
    if sp.issparse(matrix):
        n_not_finite, n_negative, rows, cols, non_integer = _bad_entries_sparse(matrix)
    else:
        n_not_finite, n_negative, rows, cols, non_integer = _bad_entries_dense(matrix)
    if n_not_finite or n_negative:
        examples = ", ".join(
            f"({adata.obs_names[r]!s}, {adata.var_names[c]!s})" for r, c in zip(rows, cols)
        )
        raise ValueError(
            f"{where} must hold raw counts, but it has {n_not_finite} NaN or infinite and "
            f"{n_negative} negative entries, e.g. at (cell, gene) {examples}. Remove or fix "
            "those cells or genes, or pass the layer with the raw counts."
        )
    if non_integer:
        warnings.warn(
            f"{where} does not contain unnormalized count data (it has non-integer values). "
            "Are you sure this is what you want?",
            UserWarning,
            stacklevel=settings.warnings_stacklevel,
        )


def check_batch_size(batch_size) -> None:
    """Raise a :class:`ValueError` unless ``batch_size`` is an integer ``>= 2``.

    Batch normalisation cannot train on a minibatch of one cell.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or (
        batch_size < 2
    ):
        raise ValueError(
            f"`batch_size` must be an integer >= 2 (batch normalisation needs two cells per "
            f"training minibatch), got {batch_size!r}."
        )


def last_minibatch_has_one_cell(n_train: int, batch_size: int) -> bool:
    """Whether a training set of ``n_train`` cells leaves one cell in its last minibatch.

    Such a minibatch must be dropped (a different cell each epoch, since minibatches are
    shuffled). A training set of a single cell cannot be trained at all.

    Raises
    ------
    ValueError
        If ``n_train == 1``.
    """
    if n_train == 1:
        raise ValueError("The training set has a single cell: SCVIMMD needs at least two.")
    return n_train % batch_size == 1


def check_saved_model(dir_path: str, prefix: str | None = None) -> None:
    """Raise a :class:`ValueError` naming the file if a saved ``model.pt`` is unreadable.

    A model saved by :meth:`~scvi.model.base.BaseModelClass.save` is a zip archive written by
    :func:`torch.save`; a truncated or corrupt file fails the archive's directory or CRC check.
    A missing file is left to scvi-tools, which says so.
    """
    path = os.path.join(dir_path, f"{prefix or ''}model.pt")
    if not os.path.isfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(
            f"Could not read the saved model {path}: the file is truncated or corrupt ({error})."
        ) from error
    if bad is not None:
        raise ValueError(
            f"Could not read the saved model {path}: the file is corrupt (entry {bad!r} fails "
            "its checksum)."
        )


class CheckedLoadMixin:
    """``load`` and ``load_query_data`` of :class:`~scvi.model.base.BaseModelClass` /
    :class:`~scvi.model.base.ArchesMixin`, with the saved model and the data checked first.
    """

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, *args, prefix=None, **kwargs):
        """Load a saved model, as :meth:`scvi.model.base.BaseModelClass.load`.

        A truncated or corrupt ``model.pt`` gives a :class:`ValueError` that names the file,
        before torch tries to read it.
        """
        check_saved_model(dir_path, prefix)
        return super().load(dir_path, adata, *args, prefix=prefix, **kwargs)

    @classmethod
    def load_query_data(cls, adata: AnnData | None = None, reference_model=None, *args,
                        **kwargs):
        """Map query data onto a reference, as :meth:`scvi.model.base.ArchesMixin.load_query_data`.

        A saved reference model is checked as in :meth:`load`, and the query's counts as in
        :meth:`setup_anndata`, before any training.
        """
        if isinstance(reference_model, str | os.PathLike):
            check_saved_model(str(reference_model), kwargs.get("prefix"))
        if adata is not None:
            check_not_empty(adata)
        model = super().load_query_data(adata, reference_model, *args, **kwargs)
        if adata is not None:
            check_counts(adata, model.registry_["setup_args"].get("layer"))
        return model
