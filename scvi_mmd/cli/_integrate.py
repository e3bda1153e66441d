"""``scvi-mmd integrate``: train SCVIMMD (one weight, or a range in one training), write the
latent and, for a range, the knob's curve."""

from __future__ import annotations

from pathlib import Path

from scvi_mmd.model import AUTO_WEIGHT_RANGE

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
from ._plots import knob_curve, training_and_umap, umap_grid


def integrate(args) -> int:
    import numpy as np

    demo = args.input is None
    if demo:
        batch_key = args.batch_key or "batch"
        labels_key = args.labels_key or "cell_type"
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
    if args.strength is not None and args.mmd_weight is not None:
        raise InputError("give --strength or --mmd-weight, not both")
    auto = args.mmd_weight == "auto"
    conditional = auto or isinstance(args.mmd_weight, tuple)
    if args.latent_weight is not None:
        if not conditional:
            raise InputError("--latent-weight applies only with --mmd-weight LOW:HIGH or auto")
        low, high = AUTO_WEIGHT_RANGE if auto else args.mmd_weight
        if not low <= args.latent_weight <= high:
            raise InputError(f"--latent-weight {args.latent_weight:g} is outside --mmd-weight "
                             f"{low:g}:{high:g}")
    out = None if args.output is None else check_output_file(
        args.output, args.overwrite, args.input
    )
    model_dir = None if args.model_dir is None else check_folder(
        args.model_dir, args.overwrite, "model folder"
    )
    plots_dir = None if args.plots is None else check_folder(args.plots, True, "plots folder")

    adata = demo_data(args.seed) if demo else read_input(args.input)
    check_adata(adata, batch_key, labels_key, args.layer)

    import scvi

    from scvi_mmd import SCVIMMD

    scvi.settings.seed = args.seed
    work = hvg_subset(adata, args.n_top_genes, batch_key, args.layer)
    try:  # the library's own checks of the data and settings, as one-line errors
        SCVIMMD.setup_anndata(work, batch_key=batch_key, layer=args.layer,
                              labels_key=labels_key if args.label_aware else None,
                              unlabeled_category=args.unlabeled_category)
        model = SCVIMMD(
            work,
            mmd_mode=args.mmd_mode,
            mmd_conditional=args.label_aware,
            # auto: the library's range; the weight is chosen below, with the labels (if any)
            # in the same curve, so that the curve is computed once
            mmd_weight=AUTO_WEIGHT_RANGE if auto else args.mmd_weight,
            mmd_strength=args.strength,
            mmd_kernel_gamma=args.mmd_kernel_gamma,
            mmd_kernel_scales=args.mmd_kernel_scales,
            mmd_pairs=args.mmd_pairs,
            mmd_guard=args.guard,
        )
    except ValueError as error:
        raise InputError(str(error)) from None
    max_epochs = args.max_epochs or (DEMO_EPOCHS if demo else None)
    model.train(
        max_epochs=max_epochs,
        batch_size=args.batch_size,
        accelerator=args.accelerator,
        check_val_every_n_epoch=1,
    )
    labels = labels_key if labels_key is not None and labels_key in work.obs else None
    # the label-free choice of SCVIMMD(mmd_weight="auto"); label purity only rides along
    choice = model.choose_mmd_weight(labels_key=labels) if auto else None
    chosen = model.mmd_weight_default if args.latent_weight is None else args.latent_weight
    latent = model.get_latent_representation(mmd_weight=chosen if conditional else None)
    curve = knob_curve_table(model, chosen, labels, choice) if conditional else None

    written = []
    if model_dir is not None:
        model.save(str(model_dir), overwrite=True)
        written.append(model_dir)
    if plots_dir is not None:
        written += training_and_umap(model, adata, latent, batch_key, labels_key, plots_dir)
    if plots_dir is not None and conditional:
        written += knob_plots(model, adata, curve, chosen, batch_key, labels_key, plots_dir,
                              choice)
    if out is not None:
        result = adata  # a fresh read of INPUT (or the demo data): write a copy with the latent
        result.obsm[LATENT_KEY] = latent.astype(np.float32)
        result.uns["scvi_mmd"] = {
            "mmd_mode": args.mmd_mode,
            "mmd_conditional": bool(args.label_aware),
            "labels_key": str(labels_key) if args.label_aware else "",
            "mmd_weight": "auto" if auto else (
                list(args.mmd_weight) if conditional else
                "strength" if args.mmd_weight is None else args.mmd_weight),
            "mmd_weight_range": list(model.mmd_weight_range),
            "latent_mmd_weight": float(chosen),
            "mmd_guard": model.module.mmd_guard is not None,
            "mmd_kernel_gamma": str(args.mmd_kernel_gamma),
            "mmd_kernel_scales": str(args.mmd_kernel_scales),
            "mmd_pairs": args.mmd_pairs,
            "batch_key": batch_key,
            "n_genes_used": int(work.n_vars),
            "max_epochs": int(len(model.history["elbo_train"])),
            "seed": args.seed,
        }
        if curve is not None:  # the knob's curve from the one training, column by column
            result.uns["scvi_mmd"]["curve"] = {c: curve[c].to_numpy() for c in curve.columns}
        if model.mmd_strength_state is not None:  # what the strength controller did
            result.uns["scvi_mmd"]["strength"] = model.mmd_strength_state
        if choice is not None:  # the automatic weight, with its rule and reason
            result.uns["scvi_mmd"]["auto"] = choice.as_dict()
        atomic_write_h5ad(result, out)
        written.insert(0, out)

    print(_summary(model, work, latent, batch_key, labels_key, adata, written, chosen, curve,
                   choice))
    return 0


def knob_curve_table(model, chosen, labels, choice=None):
    """The label-free curve (the automatic choice's, or 6 log-spaced weights), plus the row of
    the chosen weight when it is not on it."""
    import numpy as np
    import pandas as pd

    if choice is None:
        low, high = model.mmd_weight_range
        weights = sorted(set(np.geomspace(low, high, 6).tolist()) | {float(chosen)})
        return model.get_mmd_curve(weights=weights, labels_key=labels)
    done = model.mmd_curve_
    if np.isclose(done["mmd_weight"], chosen).any():
        return done
    extra = model.get_mmd_curve(weights=[done["mmd_weight"].iloc[0], float(chosen)],
                                labels_key=labels).iloc[1:]
    return pd.concat([done, extra]).sort_values("mmd_weight").reset_index(drop=True)


def knob_plots(model, adata, curve, chosen, batch_key, labels_key, folder: Path,
               choice=None) -> list[Path]:
    """Curve CSV, trade-off plot and a UMAP grid over 5 weights, all from the one model."""
    import numpy as np

    curve.to_csv(folder / "knob_curve.csv", index=False)
    written = [folder / "knob_curve.csv",
               knob_curve(curve, chosen, folder / "knob_curve.png", choice)]
    low, high = model.mmd_weight_range
    latents = {float(w): model.get_latent_representation(mmd_weight=float(w))
               for w in np.geomspace(low, high, 5)}
    for key in [k for k in (batch_key, labels_key) if k]:
        written.append(umap_grid(adata, latents, key, folder / f"umap_grid_{key}.png"))
    return written


def _summary(model, work, latent, batch_key, labels_key, adata, written, chosen,
             curve, choice=None) -> str:
    from scvi_mmd.metrics import batch_mixing, label_purity

    history = model.history
    lines = [
        "",
        f"SCVIMMD ({model.module.mmd_mode}, mmd_weight={_weight_text(model, chosen)}) on "
        f"{work.n_obs} cells x {work.n_vars} genes, "
        f"{work.obs[batch_key].nunique()} batches, {len(history['elbo_train'])} epochs",
        f"  final ELBO (train):       {float(history['elbo_train'].iloc[-1, 0]):.2f}",
        f"  final MMD term (train):   {float(history['mmd_loss_train'].iloc[-1, 0]):.4f}",
        f"  batch mixing (kNN, 0-1):  "
        f"{batch_mixing(latent, adata.obs[batch_key].to_numpy()):.3f}  (higher = better mixed)",
    ]
    if labels_key is not None:
        lines.append(
            f"  cell-type purity (kNN):   "
            f"{label_purity(latent, adata.obs[labels_key].to_numpy()):.3f}  "
            "(higher = types better apart)"
        )
    lines.append("  guard against over-correction: "
                 + ("on (mutual nearest neighbours)" if model.module.mmd_guard is not None
                    else "off"))
    state = model.mmd_strength_state
    if state is not None:
        lines.append(f"  strength {state['strength']:g}: " + (
            "no batch discrepancy beyond the minibatch noise in scVI's latent space, weight 0"
            if state["phase"] == "nothing_to_correct" else
            "training too short to leave the warm-up, weight 0" if state["phase"] == "warmup"
            else
            f"discrepancy {state['baseline']:.4g} -> target {state['target']:.4g}, "
            f"final weight {state['weight']:.3g}"))
    if choice is not None:
        lines.append(f"  automatic weight: {choice.weight:.3g} ({choice.reason})")
    if curve is not None:
        lines.append("  the knob, from this one training (label-free):")
        lines += ["    " + line for line in curve.round(3).to_string(index=False).splitlines()]
    lines += [f"  wrote {path}" for path in written]
    return "\n".join(lines)




def _weight_text(model, chosen) -> str:
    if model.mmd_strength_state is not None:
        return f"set by strength {model.mmd_strength_state['strength']:g}"
    if not model.is_loss_conditional:
        return f"{chosen:g}"
    low, high = model.mmd_weight_range
    return f"{low:g}:{high:g}, latent at {chosen:.3g}"
