"""The user-facing SCVIMMD model."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

from scvi import REGISTRY_KEYS, settings
from scvi.model import SCVI

from scvi_mmd._compat import adata_minify_type, n_train_cells
from scvi_mmd._defaults import (
    DEFAULT_KERNEL_GAMMA,
    DEFAULT_MODE,
)
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

    The training loss of a minibatch is scVI's negative ELBO plus ``w * L_mmd``, with ``L_mmd`` the
    MMD^2 between the latent codes of the batches in the minibatch (Gretton et al., 2012; by
    default every pair of batches, pooled, within clusters of the latent space). By default the
    weight ``w`` is set during training from a *strength* ``mmd_strength`` in ``[0, 1]`` with the
    same meaning on every data set (:class:`~scvi_mmd.module.StrengthController`); or it is fixed
    with ``mmd_weight`` (``0`` is :class:`~scvi.model.SCVI` exactly).

    Parameters
    ----------
    adata
        AnnData object registered with :meth:`~scvi_mmd.SCVIMMD.setup_anndata`. If ``None``, the
        module is initialised at training time (see :class:`~scvi.model.SCVI`).
    registry
        Registry of the data module, when ``adata`` is ``None``.
    mmd_mode
        ``"unbiased"`` (default): exact quadratic-time U-statistic (unbiased, ``O(n^2)`` per
        minibatch of ``n`` cells); ``"normal"``: exact quadratic-time V-statistic (biased
        upwards by ``O(1/n)``; the original design); ``"fast"``: linear-time unbiased estimate
        (``O(n)``, noisier).
    mmd_weight
        A fixed weight, finite and ``>= 0`` (``0`` is :class:`~scvi.model.SCVI` exactly),
        instead of ``mmd_strength``. ``None`` (default): the weight comes from the strength.
    mmd_strength
        The correction strength ``s`` in ``[0, 1]``: training removes the batches' latent
        discrepancy from its level in scVI's own latent space (``s = 0``) towards the noise of
        the minibatch statistic when batches do not differ (``s = 1``: matched cells
        indistinguishable), on a log scale, with the weight set during training by a
        controller (:class:`~scvi_mmd.module.StrengthController`; what it measured is in
        :attr:`mmd_strength_state`, the weight's path in ``history["mmd_weight_train"]``).
        When scVI's latent space shows no batch discrepancy beyond that noise, the weight
        stays 0. ``None`` with ``mmd_weight`` ``None`` (default):
        :data:`~scvi_mmd.DEFAULT_STRENGTH`.
    mmd_kernel_gamma
        Inverse bandwidth ``gamma`` of the Gaussian kernel ``exp(-gamma ||x - y||^2)``, ``> 0``,
        or ``"median"`` (default): ``1 / (2 median ||z_i - z_j||^2)`` per minibatch (follows the
        scale of the latent space; with ``mmd_conditional``, over pairs of cells with the same
        label).
    mmd_pairs
        Which batches are compared. ``None`` (default): ``"pooled"`` with the exact
        estimators, ``"sequential"`` with ``"fast"`` or ``mmd_conditional``. ``"pooled"``:
        every pair of batches, each weighted by its cell pairs, pooled over the minibatch
        (:func:`~scvi_mmd.mmd.pooled_weights`): with many batches (samples, donors) a
        minibatch holds a few cells of each, and the pooled term is still well estimated, at
        a cost that does not grow with the number of batches. Pairs of batches, as in the
        original design: ``"sequential"`` (k, k+1) in code order, ``"random"`` (sequential in
        a random order per step) or ``"all"``.
    mmd_clusters
        With the pooled MMD: compare batches within each of this many clusters of the latent
        space, learnt during training (:class:`~scvi_mmd.module.OnlineKMeans`), at the scale
        of the clusters (the median bandwidth within them). Like is compared with like: a
        batch effect left inside cell types is seen with many batches, and batches whose
        cell-type mixes differ are not pulled onto each other. Cells of clusters that one
        batch alone has are compared across clusters; if early in training most cells are in
        such clusters (a batch effect larger than the differences between types), the
        clusters are not used for that training. ``None`` (default): 16 with the pooled MMD,
        none otherwise; ``0``: no clusters.
    mmd_conditional
        If ``True``, compare batches within each cell type (label) and average over labels,
        ignoring unlabeled cells: needs ``labels_key`` in :meth:`setup_anndata` (optionally with
        ``unlabeled_category``). Keeps batches of different compositions from being merged.
    mmd_guard
        The label-free guard against over-correction: the MMD compares only the cells that
        have a mutual nearest neighbour in another batch within the minibatch (the other
        batches pooled, with the pooled MMD; the other batch of the pair, with pairs)
        (Haghverdi et al., 2018, Nature Biotechnology), so a cell type that some batches lack
        is not pulled onto other types, while shared types are aligned as with the plain MMD
        (:class:`~scvi_mmd.module.MutualNeighbourGuard`). ``None`` (default): on with the
        exact estimators (``"normal"``, ``"unbiased"``); with clusters (the default), only for
        the cells of clusters one batch alone has in the minibatch (there a type other
        batches lack and a type the batch effect split look alike, and only the second has
        mutual neighbours; on all cells, the guard hid a 64-batch effect from the
        controller); off with ``"fast"`` (it needs the ``n x n`` distances) and with
        ``mmd_conditional`` (labels win). ``True``: on all cells. ``False``: the plain MMD
        over all cells (the original design).
    n_hidden
        Number of nodes per hidden layer.
    n_latent
        Dimensionality of the latent space.
    n_layers
        Number of hidden layers used for encoder and decoder NNs.
    dropout_rate
        Dropout rate for neural networks.
    dispersion
        One of ``"gene"``, ``"gene-batch"``, ``"gene-label"``, ``"gene-cell"``
        (see :class:`~scvi.model.SCVI`).
    gene_likelihood
        One of ``"zinb"``, ``"nb"``, ``"poisson"``, ``"normal"``.
    use_observed_lib_size
        If ``True``, use the observed library size as the scaling factor of the mean.
    latent_distribution
        One of ``"normal"`` or ``"ln"``.
    **kwargs
        Keyword arguments for :class:`~scvi_mmd.module.MMDVAE`: the advanced settings
        ``mmd_kernel_scales`` (default ``(0.25, 0.5, 1, 2, 4)``), ``mmd_pair_reduction``,
        ``mmd_latent``, ``mmd_guard_neighbors``, ``mmd_ddp_gather`` (with ``devices > 1``,
        gather all processes' codes before the MMD), ``mmd_reference_size`` (room for a
        reference sample, :meth:`set_reference_sample`); and :class:`~scvi.module.VAE`'s.

    Examples
    --------
    >>> adata = anndata.read_h5ad(path_to_anndata)
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
            adata,
            registry,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            gene_likelihood=gene_likelihood,
            use_observed_lib_size=use_observed_lib_size,
            latent_distribution=latent_distribution,
            mmd_strength=mmd_strength,
            mmd_weight=mmd_weight,
            mmd_mode=mmd_mode,
            mmd_pairs=mmd_pairs,
            mmd_clusters=mmd_clusters,
            mmd_kernel_gamma=mmd_kernel_gamma,
            mmd_guard=mmd_guard,
            mmd_conditional=mmd_conditional,
            mmd_unlabeled_code=unlabeled_code,
            **kwargs,
        )
        n_batch = self.summary_stats.n_batch
        if n_batch < 2:
            warnings.warn(
                f"Only {n_batch} batch is registered: the MMD term is always 0 and SCVIMMD "
                "trains as SCVI. Pass `batch_key` to `SCVIMMD.setup_anndata`.",
                UserWarning,
                stacklevel=settings.warnings_stacklevel,
            )
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
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        unlabeled_category: str | None = None,
        size_factor_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        **kwargs,
    ):
        """Set up :class:`~anndata.AnnData` for SCVIMMD, as :meth:`scvi.model.SCVI.setup_anndata`.

        Parameters
        ----------
        adata
            AnnData object with raw counts in ``X`` or ``layer``.
        layer
            Layer with the raw counts; ``None``: ``X``.
        batch_key
            obs column with the batch: the groups the MMD pulls together.
        labels_key
            obs column with cell-type labels (used by ``mmd_conditional=True``).
        unlabeled_category
            Value of ``labels_key`` that marks unlabeled cells (ignored by the conditional MMD),
            registered as in scANVI.
        size_factor_key, categorical_covariate_keys, continuous_covariate_keys
            As in :meth:`scvi.model.SCVI.setup_anndata`.
        **kwargs
            Keyword arguments for :meth:`~scvi.data.AnnDataManager.register_fields`.

        Raises
        ------
        ValueError
            If the AnnData has no cell or no gene, or the counts hold NaN, infinite or negative
            values (the message names a few offending cells and genes). Non-integer counts
            warn, as in scvi-tools (which checks a sample of entries; this checks all).
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

    def train(
        self,
        max_epochs: int | None = None,
        *,
        batch_size: int = 128,
        train_size: float | None = None,
        validation_size: float | None = None,
        datasplitter_kwargs: dict | None = None,
        datamodule=None,
        **kwargs,
    ):
        """Train the model, as :meth:`scvi.model.SCVI.train`.

        Before training, ``batch_size`` is checked: an integer ``< 2`` is a
        :class:`ValueError` (batch normalisation needs two cells); if the training set would
        leave a single cell in its last minibatch, that minibatch is dropped each epoch (a
        different cell each time) instead of failing in torch. A backed AnnData (matrix on
        disk) trains from a :class:`~scvi_mmd.data.ChunkedDataModule` (``datasplitter_kwargs``
        go to it), which reads contiguous runs of rows.

        Parameters
        ----------
        max_epochs, batch_size, train_size, validation_size, datasplitter_kwargs, datamodule
            As in :meth:`scvi.model.SCVI.train`.
        **kwargs
            Other keyword arguments of :meth:`scvi.model.SCVI.train` (``plan_kwargs`` takes
            ``n_epochs_mmd_warmup`` / ``n_steps_mmd_warmup`` of
            :class:`~scvi_mmd.train.MMDTrainingPlan`).
        """
        check_batch_size(batch_size)
        if datamodule is None:  # a backed AnnData: minibatches read in chunks of rows
            datamodule = self._backed_datamodule(batch_size, train_size, validation_size,
                                                 datasplitter_kwargs)
        datasplitter_kwargs = dict(datasplitter_kwargs or {})
        drop_last = datasplitter_kwargs.get("drop_last", False)
        if (datamodule is None and self.adata is not None and not drop_last
                and "external_indexing" not in datasplitter_kwargs):
            n_train = self._n_train_cells(train_size, validation_size, batch_size)
            if last_minibatch_has_one_cell(n_train, batch_size):
                logger.info("The last training minibatch would hold one cell: it is dropped.")
                datasplitter_kwargs["drop_last"] = True
        return super().train(max_epochs=max_epochs, batch_size=batch_size,
                             train_size=train_size, validation_size=validation_size,
                             datasplitter_kwargs=datasplitter_kwargs, datamodule=datamodule,
                             **kwargs)

    def _n_train_cells(self, train_size, validation_size, batch_size) -> int:
        """Size of the training set, as scvi-tools' data splitter will compute it."""
        return n_train_cells(self.adata.n_obs, train_size, validation_size, batch_size)
