"""Minibatches of an AnnData whose matrix stays on disk, read in contiguous chunks of rows.

scvi-tools reads a backed minibatch as one fancy index of scattered rows (about a second per
minibatch here). Here each epoch visits chunks of ``chunk_size`` rows in a random order,
``chunks_per_buffer`` at a time, and draws minibatches from a permutation of each buffer, so
a file sorted by sample still gives minibatches of many samples (docs/atlas.md).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from lightning.pytorch import LightningDataModule
from scvi.data import AnnTorchDataset


def read_rows(data, rows: np.ndarray):
    """Rows ``rows`` (sorted, unique) of a registered field, CSR if sparse; a backed matrix
    is read one contiguous run at a time.
    """
    if isinstance(data, np.ndarray) or sp.issparse(data):
        block = data[rows]
    else:  # on disk: one slice per contiguous run
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts, stops = rows[np.r_[0, breaks]], rows[np.r_[breaks - 1, len(rows) - 1]] + 1
        parts = [data[int(a):int(b)] for a, b in zip(starts, stops, strict=True)]
        block = sp.vstack(parts, format="csr") if sp.issparse(parts[0]) else np.concatenate(parts)
    return block.tocsr() if sp.issparse(block) else np.asarray(block)


class _Rows:
    """Minibatches of the cells ``rows`` (dicts of tensors, as scvi-tools' loader gives),
    shuffled by chunks and buffers or in order; read in this process (h5py is not shared).
    """

    def __init__(self, dataset: AnnTorchDataset, rows: np.ndarray, batch_size: int,
                 shuffle: bool, chunk_size: int, chunks_per_buffer: int, seed: int,
                 drop_last: bool, epochs=None):
        self.fields = {}  # key -> (the registered data, its dtype); frames as arrays, once
        for key, dtype in dataset.keys_and_dtypes.items():
            data = dataset.data[key]
            self.fields[key] = (data.to_numpy() if isinstance(data, pd.DataFrame) else data, dtype)
        self.rows, self.batch_size, self.shuffle = np.asarray(rows), batch_size, shuffle
        # the chunks of the shuffled reading, in file order (visited in a new order each epoch)
        self.chunks = np.array_split(np.sort(self.rows),
                                     max(1, math.ceil(len(self.rows) / chunk_size)))
        self.chunk_size, self.chunks_per_buffer = chunk_size, chunks_per_buffer
        self.seed, self.drop_last = seed, drop_last
        self.epochs = itertools.count() if epochs is None else epochs  # shared by loaders

    def __len__(self) -> int:
        n = len(self.rows) / self.batch_size
        return math.floor(n) if self.drop_last else math.ceil(n)

    def _buffers(self):
        """Blocks of rows, each read together: (sorted unique rows, order to yield them in)."""
        if not self.shuffle:
            step = self.batch_size * max(1, self.chunks_per_buffer * self.chunk_size
                                         // self.batch_size)
            for start in range(0, len(self.rows), step):
                wanted = self.rows[start:start + step]
                unique, where = np.unique(wanted, return_inverse=True)
                yield unique, where
            return
        rng = np.random.default_rng((self.seed, next(self.epochs)))
        order = rng.permutation(len(self.chunks))
        for start in range(0, len(order), self.chunks_per_buffer):
            picked = np.sort(order[start:start + self.chunks_per_buffer])
            block = np.concatenate([self.chunks[i] for i in picked])
            yield block, rng.permutation(len(block))

    def __iter__(self):
        carry = None
        for block, order in self._buffers():
            values = {key: read_rows(data, block)[order] for key, (data, _) in self.fields.items()}
            if carry is not None:
                values = {key: sp.vstack([carry[key], v], format="csr") if sp.issparse(v)
                          else np.concatenate([carry[key], v]) for key, v in values.items()}
            n = next(iter(values.values())).shape[0]
            full = n - n % self.batch_size
            for start in range(0, full, self.batch_size):
                yield self._tensors(values, slice(start, start + self.batch_size))
            carry = {key: v[full:] for key, v in values.items()} if full < n else None
        if carry is not None and not self.drop_last:
            yield self._tensors(carry, slice(None))

    def _tensors(self, values, where) -> dict[str, torch.Tensor]:
        out = {}
        for key, (_, dtype) in self.fields.items():
            value = values[key][where]
            value = value.toarray() if sp.issparse(value) else value
            out[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=dtype))
        return out


class ChunkedDataModule(LightningDataModule):
    """Training and validation minibatches of a registered (e.g. backed) AnnData, read in
    chunks of rows; the default ``datamodule`` of :meth:`scvi_mmd.SCVIMMD.train` when backed.

    ``adata_manager``: the model's :class:`~scvi.data.AnnDataManager`. ``train_size``: share
    of the cells to train on, at random (``None``: 0.9); the rest validates. ``chunk_size``
    rows are read together; ``chunks_per_buffer`` chunks are shuffled together (in memory).
    ``seed``: of the split and shuffles (``None``: ``scvi.settings.seed``). ``drop_last``:
    drop the last, incomplete minibatch (``None``: when it would hold one cell).
    """

    def __init__(self, adata_manager, batch_size: int = 128, train_size: float | None = None,
                 chunk_size: int = 64, chunks_per_buffer: int = 256, seed: int | None = None,
                 drop_last: bool | None = None):
        super().__init__()
        for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size),
                            ("chunks_per_buffer", chunks_per_buffer)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
        train_size = 0.9 if train_size is None else train_size
        if isinstance(train_size, bool) or not isinstance(train_size, int | float) \
                or not 0 < train_size <= 1:
            raise ValueError(f"`train_size` must be a number in (0, 1], got {train_size!r}.")
        if seed is None:
            from scvi import settings

            seed = settings.seed or 0
        self.adata_manager, self.batch_size = adata_manager, batch_size
        self.chunk_size, self.chunks_per_buffer, self.seed = chunk_size, chunks_per_buffer, seed
        n_obs = adata_manager.adata.n_obs
        n_train = min(n_obs, math.ceil(train_size * n_obs))  # as scvi-tools' DataSplitter
        order = np.random.default_rng(seed).permutation(n_obs)
        self.train_idx, self.val_idx = np.sort(order[:n_train]), np.sort(order[n_train:])
        self.test_idx = np.array([], dtype=int)
        self.n_train, self.n_val = len(self.train_idx), len(self.val_idx)
        if drop_last is None:  # the model's rule: a last minibatch of one cell is dropped
            from scvi_mmd.model._validation import last_minibatch_has_one_cell

            drop_last = last_minibatch_has_one_cell(self.n_train, batch_size)
        self.drop_last = drop_last
        self._dataset = AnnTorchDataset(adata_manager)
        self._epochs = itertools.count()  # each epoch its own shuffle, whichever loader

    def _loader(self, rows, shuffle: bool, drop_last: bool = False) -> _Rows:
        return _Rows(self._dataset, rows, self.batch_size, shuffle, self.chunk_size,
                     self.chunks_per_buffer, self.seed, drop_last, self._epochs)

    def train_dataloader(self) -> _Rows:
        """Shuffled minibatches of the training cells."""
        return self._loader(self.train_idx, shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> _Rows | list:
        """Minibatches of the validation cells (none with ``train_size=1``)."""
        return self._loader(self.val_idx, shuffle=False) if self.n_val else []


def ordered_loader(adata_manager, indices=None, batch_size: int = 128,
                   buffer_rows: int = 16384):
    """Minibatches of ``indices`` (``None``: all) in order, read in runs of rows (inference)."""
    rows = np.arange(adata_manager.adata.n_obs) if indices is None else np.asarray(indices)
    chunks = max(1, buffer_rows // batch_size)
    return _Rows(AnnTorchDataset(adata_manager), rows, batch_size, False, batch_size, chunks, 0,
                 False)
