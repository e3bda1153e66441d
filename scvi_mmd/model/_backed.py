"""Training and inference on an AnnData whose matrix stays on disk (``backed="r"``)."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class BackedDataMixin:
    """Reads a backed AnnData in contiguous runs of rows (:mod:`scvi_mmd.data._chunked`)
    instead of scvi-tools' fancy index per minibatch (about a second per minibatch).
    """

    def _backed_datamodule(self, batch_size, train_size, validation_size, datasplitter_kwargs):
        """A :class:`~scvi_mmd.data.ChunkedDataModule` when the model's AnnData is backed."""
        if self.adata is None or not self.adata.isbacked:
            return None
        from scvi_mmd.data import ChunkedDataModule

        if train_size is None and validation_size is not None:
            train_size = 1 - validation_size
        kwargs = dict(datasplitter_kwargs or {})
        unknown = set(kwargs) - {"drop_last", "chunk_size", "chunks_per_buffer"}
        if unknown:
            raise ValueError(f"A backed AnnData trains from ChunkedDataModule, which takes "
                             f"`drop_last`, `chunk_size` and `chunks_per_buffer` as "
                             f"`datasplitter_kwargs`, not {sorted(unknown)}.")
        logger.info("Backed AnnData: minibatches read in chunks of rows (ChunkedDataModule).")
        return ChunkedDataModule(self.adata_manager, batch_size=batch_size,
                                 train_size=train_size, drop_last=kwargs.pop("drop_last", None),
                                 **kwargs)

    def _make_data_loader(self, adata, indices=None, batch_size=None, shuffle=False,
                          data_loader_class=None, **data_loader_kwargs):
        """As scvi-tools, except for a backed AnnData read in order: runs of rows."""
        manager = self.get_anndata_manager(adata)
        if (manager is not None and manager.adata.isbacked and not shuffle
                and data_loader_class is None
                and not data_loader_kwargs.get("distributed_sampler")):
            from scvi import settings

            from scvi_mmd.data import ordered_loader

            return ordered_loader(manager, indices, batch_size or settings.batch_size)
        return super()._make_data_loader(adata, indices, batch_size, shuffle, data_loader_class,
                                         **data_loader_kwargs)
