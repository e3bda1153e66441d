"""``scvi-mmd integrate``: train SCVIMMD (a strength, or a fixed weight) and write the latent."""

from __future__ import annotations

from ._common import (
    DEMO_EPOCHS,
    LATENT_KEY,
    InputError,
    atomic_write_h5ad,
    check_adata,
    check_folder,
    check_output_file,
    demo_data,
    hvg_subset,
    read_input,
)
from .plots import training_and_umap


def integrate(args) -> int:
    import numpy as np

    demo = args.input is None
    if demo:
        batch_key, labels_key = args.batch_key or "batch", args.labels_key or "cell_type"
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
    out = None if args.output is None else check_output_file(
        args.output, args.overwrite, args.input)
    model_dir = None if args.model_dir is None else check_folder(
        args.model_dir, args.overwrite, "model folder")
    plots_dir = None if args.plots is None else check_folder(args.plots, True, "plots folder")

    adata = demo_data(args.seed) if demo else read_input(args.input, args.backed)
    check_adata(adata, batch_key, labels_key, args.layer)

    import scvi

    from scvi_mmd import SCVIMMD

    scvi.settings.seed = args.seed
    work = hvg_subset(adata, args.n_top_genes, batch_key, args.layer)
    try:  # the library's own checks of the data and settings, as one-line errors
        SCVIMMD.setup_anndata(work, batch_key=batch_key, layer=args.layer,
                              labels_key=labels_key if args.label_aware else None,
                              unlabeled_category=args.unlabeled_category)
        model = SCVIMMD(work, mmd_mode=args.mmd_mode, mmd_conditional=args.label_aware,
                        mmd_weight=args.mmd_weight, mmd_strength=args.strength,
                        mmd_kernel_gamma=args.mmd_kernel_gamma,
                        mmd_kernel_scales=args.mmd_kernel_scales, mmd_pairs=args.mmd_pairs,
                        mmd_guard=args.guard)
    except ValueError as error:
        raise InputError(str(error)) from None
    max_epochs = args.max_epochs or (DEMO_EPOCHS if demo else None)
    model.train(max_epochs=max_epochs, batch_size=args.batch_size,
                accelerator=args.accelerator, check_val_every_n_epoch=1)
    latent = model.get_latent_representation()

    written = []
    if model_dir is not None:
        model.save(str(model_dir), overwrite=True)
        written.append(model_dir)
    if plots_dir is not None:
        written += training_and_umap(model, adata, latent, batch_key, labels_key, plots_dir)
    if out is not None:
        result = adata  # a fresh read of INPUT (or the demo data): write a copy with the latent
        result.obsm[LATENT_KEY] = latent.astype(np.float32)
        result.uns["scvi_mmd"] = {
            "mmd_mode": args.mmd_mode,
            "mmd_conditional": bool(args.label_aware),
            "labels_key": str(labels_key) if args.label_aware else "",
            "mmd_weight": "strength" if args.mmd_weight is None else args.mmd_weight,
            "final_mmd_weight": model.mmd_weight,
            "mmd_guard": model.module.mmd_guard_scope,
            "mmd_clusters": model.module.mmd_clusters,
            "clusters_pure_share": float(getattr(model.module.penalty.clusters, "pure_share", 0)),
            "mmd_kernel_gamma": str(args.mmd_kernel_gamma),
            "mmd_kernel_scales": str(args.mmd_kernel_scales),
            "mmd_pairs": model.module.mmd_pairs,
            "batch_key": batch_key,
            "n_genes_used": int(work.n_vars),
            "max_epochs": int(len(model.history["elbo_train"])),
            "seed": args.seed,
        }
        if model.mmd_strength_state is not None:  # what the strength controller did
            result.uns["scvi_mmd"]["strength"] = model.mmd_strength_state
        atomic_write_h5ad(result, out)
        written.insert(0, out)

    print(_summary(model, work, latent, batch_key, labels_key, adata, written))
    return 0


def _summary(model, work, latent, batch_key, labels_key, adata, written) -> str:
    from scvi_mmd.metrics import batch_mixing, label_purity

    history = model.history
    lines = [
        "",
        f"SCVIMMD ({model.module.mmd_mode}, {model.module.mmd_pairs}, "
        f"mmd_weight={_weight_text(model)}) on "
        f"{work.n_obs} cells x {work.n_vars} genes, "
        f"{work.obs[batch_key].nunique()} batches, {len(history['elbo_train'])} epochs",
        f"  final ELBO (train):       {float(history['elbo_train'].iloc[-1, 0]):.2f}",
        f"  final MMD term (train):   {float(history['mmd_loss_train'].iloc[-1, 0]):.4f}",
        f"  batch mixing (kNN, 0-1):  "
        f"{batch_mixing(latent, adata.obs[batch_key].to_numpy()):.3f}  (higher = better mixed)",
    ]
    if labels_key is not None:
        lines.append(f"  cell-type purity (kNN):   "
                     f"{label_purity(latent, adata.obs[labels_key].to_numpy()):.3f}  "
                     "(higher = types better apart)")
    clusters = model.module.penalty.clusters
    lines.append("  batches compared " + ("over the whole latent space" if clusters is None else
                 f"within {clusters.n_clusters} clusters of the latent space" if clusters.is_shared
                 else "as wholes: the latent clusters split them (pure_share "
                 f"{float(clusters.pure_share):.2f}); check each type's purity (docs: atlas)"))
    scope = model.module.mmd_guard_scope
    lines.append("  guard against over-correction: " + (
        "off" if scope == "none" else f"on (mutual nearest neighbours; cells checked: {scope})"))
    state = model.mmd_strength_state
    if state is not None:
        lines.append(f"  strength {state['strength']:g}: " + (
            "no batch discrepancy beyond the minibatch noise in scVI's latent space, weight 0"
            if state["phase"] == "nothing_to_correct" else
            "training too short to leave the warm-up, weight 0" if state["phase"] == "warmup"
            else
            f"discrepancy {state['baseline']:.4g} -> target {state['target']:.4g}, "
            f"final weight {state['weight']:.3g}"))
    lines += [f"  wrote {path}" for path in written]
    return "\n".join(lines)


def _weight_text(model) -> str:
    state = model.mmd_strength_state
    return f"{model.mmd_weight:g}" if state is None else f"set by strength {state['strength']:g}"
