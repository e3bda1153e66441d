"""``scvi-mmd sweep``: scib-metrics over a grid of weights (the benchmark extra)."""

from __future__ import annotations

from ._common import InputError, check_adata, check_folder, read_input


def sweep(args) -> int:
    try:
        from scvi_mmd.cli import benchmark
    except ImportError as error:
        raise InputError("sweep needs the benchmark extra: pip install "
                         f"'scvi-mmd[benchmark]' ({error})") from None
    out_dir = check_folder(args.output_dir, args.overwrite, "output folder")
    adata = read_input(args.input)
    check_adata(adata, args.batch_key, args.labels_key, args.layer)
    from scvi_mmd.module._penalty import MMD_MODES

    modes = [m.strip() for m in args.mmd_modes.split(",") if m.strip()]
    if not modes or any(m not in MMD_MODES for m in modes):
        raise InputError(f"--mmd-modes must list some of {', '.join(MMD_MODES)}, "
                         f"got {args.mmd_modes!r}")
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = set(baselines) - set(benchmark.BASELINES)
    if unknown:
        raise InputError(f"unknown baselines: {', '.join(sorted(unknown))}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    for name, values in (("--weights", args.weights), ("--strengths", args.strengths)):
        try:  # the library's own checks, once, before hours of fitting
            from scvi_mmd.module import FixedWeight, StrengthController

            for value in values:
                (FixedWeight if name == "--weights" else StrengthController)(value)
        except ValueError as error:
            raise InputError(f"{name}: {error}") from None
    results = benchmark.run_sweep(
        adata, batch_key=args.batch_key, labels_key=args.labels_key, layer=args.layer,
        weights=args.weights, strengths=args.strengths, modes=modes, seeds=seeds,
        baselines=baselines, n_top_genes=args.n_top_genes, max_epochs=args.max_epochs,
        accelerator=args.accelerator, output_dir=out_dir,
    )
    print(results.to_string(index=False, float_format="%.3f"))
    print(f"wrote {out_dir / 'results.csv'} and plots in {out_dir}")
    return 0


