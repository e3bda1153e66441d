"""Methods of :class:`~scvi_mmd.SCVIMMD` about the MMD term, the reference sample and the
strength controller's measurements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scvi import REGISTRY_KEYS, settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData


class MMDTermMixin:
    """``get_mmd_loss``, ``set_reference_sample``, ``mmd_weight`` and ``mmd_strength_state``."""

    @property
    def mmd_weight(self) -> float:
        """The weight at the end of training (its path: ``history["mmd_weight_train"]``)."""
        return float(self.module.weight_rule.current_weight)

    @torch.inference_mode()
    def set_reference_sample(self, adata: AnnData | None = None,
                             indices: Sequence[int] | None = None,
                             batch_size: int | None = None) -> None:
        """Store the posterior means of a random sample of cells as the reference sample.

        Call it on a trained reference model built with ``mmd_reference_size > 0``, before
        saving it; after :meth:`~scvi.model.base.ArchesMixin.load_query_data`, the MMD term
        pulls the cells of the query batches towards it. ``indices``: the cells to sample
        from (default all; drawn with ``scvi.settings.seed``).
        """
        size = self.module.mmd_reference_size
        if size == 0:
            raise ValueError("This model keeps no reference sample: create it with "
                             "`mmd_reference_size > 0`.")
        adata = self._validate_anndata(adata)
        indices = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        rng = np.random.default_rng(settings.seed)
        chosen = rng.choice(indices, size=size, replace=indices.size < size)
        latent = self.get_latent_representation(adata, indices=chosen, batch_size=batch_size)
        buffer = self.module.mmd_reference_z
        buffer.copy_(torch.as_tensor(latent, dtype=buffer.dtype, device=buffer.device))
        self.module.mmd_reference_n_batch.fill_(self.summary_stats.n_batch)

    @torch.inference_mode()
    def get_mmd_loss(self, adata: AnnData | None = None, indices: Sequence[int] | None = None,
                     batch_size: int | None = None,
                     data_loader_kwargs: dict | None = None) -> float:
        """The MMD term ``L_mmd`` on the data, as in training (lower: better mixed).

        Cells are shuffled with ``scvi.settings.seed`` (the global random state untouched),
        and the term of each minibatch is averaged weighted by its cells, as
        ``history["mmd_loss_validation"]``. Arguments as in
        :meth:`~scvi.model.SCVI.get_latent_representation`.
        """
        adata = self._validate_anndata(adata)
        indices = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        if indices.size == 0:
            raise ValueError("`indices` selects no cells.")
        devices = [self.device] if torch.device(self.device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(settings.seed if settings.seed is not None else 0)
            order = torch.randperm(indices.size).numpy()
            dataloader = self._make_data_loader(adata=adata, indices=indices[order],
                                                batch_size=batch_size, shuffle=False,
                                                **(data_loader_kwargs or {}))
            total, n_cells = 0.0, 0
            for tensors in dataloader:
                inference_outputs = self.module.inference(**self.module._get_inference_input(
                    tensors))
                z = self.module.mmd_codes(inference_outputs)
                batch_index = tensors[REGISTRY_KEYS.BATCH_KEY].to(z.device)
                n = batch_index.shape[0]
                labels = tensors.get(REGISTRY_KEYS.LABELS_KEY)
                labels = None if labels is None else labels.to(z.device)
                total += float(self.module.mmd_loss(z, batch_index, labels)) * n
                n_cells += n
        return total / n_cells

    @property
    def mmd_strength_state(self) -> dict | None:
        """What the strength controller measured and did (``None`` for a fixed weight).

        ``strength``; ``phase`` (``"control"``, ``"nothing_to_correct"`` or ``"warmup"``);
        ``baseline`` ``D0`` and ``baseline_se``; ``null_noise`` ``nu``; ``target``; ``weight``
        at the end of training.
        """
        strength = self.module.strength
        if strength is None:
            return None
        state = {"strength": strength.strength, "phase": strength.phase_name}
        for name in ("baseline", "baseline_se", "null_noise", "target", "weight"):
            state[name] = float(getattr(strength, name))
        return state

    def _check_conditional(self, adata, registry, mmd_conditional: bool) -> int | None:
        """The unlabeled code; labels must be registered for the conditional MMD."""
        if mmd_conditional is not True:
            return None
        if adata is not None:
            registry = self._get_most_recent_anndata_manager(adata, required=True).registry
        if registry["setup_args"].get("labels_key") is None:
            raise ValueError("`mmd_conditional=True` needs cell-type labels: call `SCVIMMD."
                             "setup_anndata(adata, batch_key=..., labels_key=...)` first.")
        unlabeled = registry["setup_args"].get("unlabeled_category")
        if unlabeled is None:
            return None
        state = registry["field_registries"][REGISTRY_KEYS.LABELS_KEY]["state_registry"]
        return int(list(state["categorical_mapping"]).index(unlabeled))
