"""The user-facing SCVIMMD model."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

from scvi import REGISTRY_KEYS, settings
from scvi.model import SCVI

from scvi_mmd._compat import adata_minify_type, n_train_cells
from scvi_mmd._defaults import DEFAULT_KERNEL_GAMMA, DEFAULT_MODE
from scvi_mmd.model._backed import BackedDataMixin
from scvi_mmd.model._term import MMDTermMixin
from scvi_mmd.model._validation import (
    CheckedLoadMixin,
    check_batch_size,
    check_counts,
    check_not_empty,
    check_obs_column,
    last_minibatch_has_one_cell,
)
from scvi_mmd.module import MMDVAE
from scvi_mmd.train import MMDTrainingPlan

if TYPE_CHECKING:
    from typing import Literal

    from anndata import AnnData

logger = logging.getLogger(__name__)


class SCVIMMD(MMDTermMixin, CheckedLoadMixin, BackedDataMixin, SCVI):
    """scVI with a Maximum Mean Discrepancy (MMD) penalty between batches in latent space.

    The loss of a minibatch is scVI's negative ELBO plus ``w * L_mmd``, ``L_mmd`` the MMD^2
    (Gretton et al., 2012) between the latent codes of its batches (by default every pair of
    batches, pooled, within clusters of the latent space). ``w`` is set during training from
    a *strength* ``mmd_strength`` in ``[0, 1]`` with the same meaning on every data set
    (:class:`~scvi_mmd.module.StrengthController`), or fixed with ``mmd_weight``.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`; ``None``: the module is built at
        training time (see :class:`~scvi.model.SCVI`).
    registry
        Registry of the data module, when ``adata`` is ``None``.
    mmd_strength
        The correction strength ``s`` in ``[0, 1]``: the batches' latent discrepancy goes from
        scVI's level (``s = 0``) towards the minibatch noise (``s = 1``), on a log scale; the
        weight stays 0 when scVI shows none beyond that noise (:attr:`mmd_strength_state`,
        ``history["mmd_weight_train"]``). Default: :data:`~scvi_mmd.DEFAULT_STRENGTH`.
    mmd_weight
        A fixed weight ``>= 0`` instead (``0`` is :class:`~scvi.model.SCVI` exactly).
    mmd_mode
        ``"unbiased"`` (default): the U-statistic (``O(n^2)`` per minibatch of ``n``);
        ``"normal"``: the V-statistic (biased upwards by ``O(1/n)``; the original design);
        ``"fast"``: the linear-time estimate (``O(n)``, noisier).
    mmd_pairs
        ``"pooled"`` (default with the exact estimators): every pair of batches weighted by its
        cell pairs (:func:`~scvi_mmd.mmd.pooled_weights`), well estimated with many batches.
        As in the original design (default with ``"fast"`` or ``mmd_conditional``):
        ``"sequential"`` (k, k+1), ``"random"`` (in a random order) or ``"all"`` pairs.
    mmd_clusters
        With the pooled MMD, compare batches within this many latent clusters learnt in
        training (:class:`~scvi_mmd.module.OnlineKMeans`): different cell-type mixes are not
        pulled onto each other. If early on most cells are in clusters one batch alone has,
        they are dropped and the training restarts from its initial parameters (scVI's split
        of the batches is not undone later). ``None``: 16 when pooled; ``0``: none.
    mmd_kernel_gamma
        Inverse bandwidth ``> 0`` of the Gaussian kernel ``exp(-gamma ||x - y||^2)``, or
        ``"median"`` (default): ``1 / (2 median ||z_i - z_j||^2)`` per minibatch (within the
        clusters, or within labels with ``mmd_conditional``).
    mmd_guard
        The label-free guard (:class:`~scvi_mmd.module.MutualNeighbourGuard`): only cells with
        a mutual nearest neighbour in another batch are compared, so a type some batches lack
        is not pulled onto others. ``None``: on with the exact estimators (with clusters, for
        the cells of unshared clusters), off with ``"fast"`` or ``mmd_conditional``. ``True``:
        all cells. ``False``: off (the original design).
    mmd_conditional
        Compare batches within each cell type (``labels_key`` of :meth:`setup_anndata`,
        unlabeled cells ignored) and average over types.
    n_hidden, n_latent, n_layers, dropout_rate, dispersion, gene_likelihood, \
use_observed_lib_size, latent_distribution
        As in :class:`~scvi.model.SCVI`.
    **kwargs
        Keyword arguments for :class:`~scvi_mmd.module.MMDVAE` (``mmd_kernel_scales``,
        ``mmd_pair_reduction``, ``mmd_latent``, ``mmd_guard_neighbors``, ``mmd_ddp_gather``,
        ``mmd_reference_size``) and :class:`~scvi.module.VAE`.

    Examples
    --------
    >>> scvi_mmd.SCVIMMD.setup_anndata(adata, batch_key="batch")
    >>> model = scvi_mmd.SCVIMMD(adata)  # the default strength
    >>> model.train()
    >>> adata.obsm["X_scvi_mmd"] = model.get_latent_representation()
    >>> model.mmd_strength_state["weight"], model.history["mmd_weight_train"].plot()
    >>> fixed = scvi_mmd.SCVIMMD(adata, mmd_weight=10.0)  # a fixed weight instead
    """

    _module_cls = MMDVAE
    _training_plan_cls = MMDTrainingPlan

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        mmd_strength: float | None = None,
        mmd_weight: float | None = None,
        mmd_mode: Literal["normal", "unbiased", "fast"] = DEFAULT_MODE,
        mmd_pairs: Literal["pooled", "sequential", "random", "all"] | None = None,
        mmd_clusters: int | None = None,
        mmd_kernel_gamma: float | Literal["median"] = DEFAULT_KERNEL_GAMMA,
        mmd_guard: bool | None = None,
        mmd_conditional: bool = False,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dispersion: Literal["gene", "gene-batch", "gene-label", "gene-cell"] = "gene",
        gene_likelihood: Literal["zinb", "nb", "poisson", "normal"] = "zinb",
        use_observed_lib_size: bool = True,
        latent_distribution: Literal["normal", "ln"] = "normal",
        **kwargs,
    ):
        unlabeled_code = self._check_conditional(adata, registry, mmd_conditional)
        super().__init__(
            adata, registry,
            n_hidden=n_hidden, n_latent=n_latent, n_layers=n_layers, dropout_rate=dropout_rate,
            dispersion=dispersion, gene_likelihood=gene_likelihood,
            use_observed_lib_size=use_observed_lib_size, latent_distribution=latent_distribution,
            mmd_strength=mmd_strength, mmd_weight=mmd_weight, mmd_mode=mmd_mode,
            mmd_pairs=mmd_pairs, mmd_clusters=mmd_clusters, mmd_kernel_gamma=mmd_kernel_gamma,
            mmd_guard=mmd_guard, mmd_conditional=mmd_conditional,
            mmd_unlabeled_code=unlabeled_code, **kwargs,
        )
        n_batch = self.summary_stats.n_batch
        if n_batch < 2:
            warnings.warn(f"Only {n_batch} batch is registered: the MMD term is always 0 and "
                          "SCVIMMD trains as SCVI. Pass `batch_key` to `SCVIMMD.setup_anndata`.",
                          UserWarning, stacklevel=settings.warnings_stacklevel)
        module = self.module  # the settings as resolved (the arguments, before the module)
        self._model_summary_string = (
            self._model_summary_string.replace("SCVI model", "SCVIMMD model").rstrip(".")
            + (f", mmd_weight: {mmd_weight}" if mmd_weight is not None
               else f", mmd_strength: {mmd_strength if mmd_strength is not None else 'default'}")
            + f", mmd_mode: {mmd_mode}, mmd_pairs: {module.mmd_pairs if module else mmd_pairs}, "
            f"mmd_clusters: {module.mmd_clusters if module else mmd_clusters}, "
            f"mmd_kernel_gamma: {mmd_kernel_gamma}, mmd_conditional: {mmd_conditional}, "
            f"mmd_guard: {module.mmd_guard_scope if module else mmd_guard}."
        )
        # SCVI.__init__ recorded its own locals: record ours for save/load.
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(cls, adata: AnnData, layer: str | None = None,
                      batch_key: str | None = None, labels_key: str | None = None,
                      unlabeled_category: str | None = None, size_factor_key: str | None = None,
                      categorical_covariate_keys: list[str] | None = None,
                      continuous_covariate_keys: list[str] | None = None, **kwargs):
        """Set up :class:`~anndata.AnnData` for SCVIMMD, as :meth:`scvi.model.SCVI.setup_anndata`.

        Raises a :class:`ValueError` for an AnnData with no cell or gene, a missing layer or
        ``obs`` value, or counts with NaN, infinite or negative values (naming a few cells and
        genes); non-integer counts warn. Every entry is checked, not a sample.

        Parameters
        ----------
        batch_key
            obs column with the batch: the groups the MMD pulls together.
        labels_key, unlabeled_category
            obs column with cell types (for ``mmd_conditional=True``) and its value for
            unlabeled cells, as in scANVI.
        adata, layer, size_factor_key, categorical_covariate_keys, \
continuous_covariate_keys, **kwargs
            As in :meth:`scvi.model.SCVI.setup_anndata`.
        """
        from scvi.data import AnnDataManager
        from scvi.data.fields import (
            CategoricalJointObsField,
            CategoricalObsField,
            LabelsWithUnlabeledObsField,
            LayerField,
            NumericalJointObsField,
            NumericalObsField,
        )

        if unlabeled_category is not None and labels_key is None:
            raise ValueError("`unlabeled_category` needs `labels_key`.")
        check_not_empty(adata)
        if layer is not None and layer not in adata.layers:
            names = [k for k in adata.layers.keys() if k is not None]  # anndata 0.13 lists None
            raise ValueError(f"Layer {layer!r} is not in adata.layers ({names}).")
        for key in (batch_key, labels_key):
            check_obs_column(adata, key)
        check_counts(adata, layer)
        setup_method_args = cls._get_setup_method_args(**locals())
        labels_field = (CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key)
                        if unlabeled_category is None else LabelsWithUnlabeledObsField(
                            REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category))
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            labels_field,
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, required=False),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
        ]
        minify_type = adata_minify_type(adata)
        if minify_type is not None:
            anndata_fields += cls._get_fields_for_adata_minification(minify_type)
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        with warnings.catch_warnings():
            # check_counts has checked every entry; scvi-tools' sampled check would repeat it
            warnings.filterwarnings("ignore", message=".*does not contain unnormalized count")
            adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    def train(self, max_epochs: int | None = None, *, batch_size: int = 128,
              train_size: float | None = None, validation_size: float | None = None,
              datasplitter_kwargs: dict | None = None, datamodule=None, **kwargs):
        """Train the model, as :meth:`scvi.model.SCVI.train`.

        ``batch_size < 2`` is a :class:`ValueError`; a last minibatch of one cell is dropped
        each epoch instead of failing in torch. A backed AnnData trains from a
        :class:`~scvi_mmd.data.ChunkedDataModule` (``datasplitter_kwargs`` go to it).
        ``plan_kwargs`` take :class:`~scvi_mmd.train.MMDTrainingPlan`'s arguments.
        """
        check_batch_size(batch_size)
        if datamodule is None:  # a backed AnnData: minibatches read in chunks of rows
            datamodule = self._backed_datamodule(batch_size, train_size, validation_size,
                                                 datasplitter_kwargs)
        datasplitter_kwargs = dict(datasplitter_kwargs or {})
        drop_last = datasplitter_kwargs.get("drop_last", False)
        if (datamodule is None and self.adata is not None and not drop_last
                and "external_indexing" not in datasplitter_kwargs):
            n_train = n_train_cells(self.adata.n_obs, train_size, validation_size, batch_size)
            if last_minibatch_has_one_cell(n_train, batch_size):
                logger.info("The last training minibatch would hold one cell: it is dropped.")
                datasplitter_kwargs["drop_last"] = True
        return super().train(max_epochs=max_epochs, batch_size=batch_size,
                             train_size=train_size, validation_size=validation_size,
                             datasplitter_kwargs=datasplitter_kwargs, datamodule=datamodule,
                             **kwargs)
