"""Open Problems batch integration: the scvi-mmd default on the task's dataset."""

import anndata as ad
import numpy as np

## VIASH START
par = {
    "input": "resources_test/task_batch_integration/cxg_immune_cell_atlas/dataset.h5ad",
    "output": "output.h5ad",
    "n_hvg": 2000,
    "strength": 0.9,
    "n_latent": 30,
    "max_epochs": None,
}
meta = {"name": "scvi_mmd"}
## VIASH END


def main(par: dict, meta: dict) -> None:
    import scvi

    from scvi_mmd import SCVIMMD

    print("Read input", flush=True)
    dataset = ad.read_h5ad(par["input"])
    genes = np.arange(dataset.n_vars)
    if par.get("n_hvg") and par["n_hvg"] < dataset.n_vars:
        genes = np.argsort(-dataset.var["hvg_score"].to_numpy())[: par["n_hvg"]]
    adata = ad.AnnData(X=dataset.layers["counts"][:, np.sort(genes)],
                       obs=dataset.obs[["batch"]].copy())

    print("Train scvi-mmd", flush=True)
    scvi.settings.seed = 0
    SCVIMMD.setup_anndata(adata, batch_key="batch")
    model = SCVIMMD(adata, mmd_strength=par.get("strength", 0.9),
                    n_latent=par.get("n_latent") or 30)
    model.train(max_epochs=par.get("max_epochs"))
    print("Controller:", model.mmd_strength_state, flush=True)

    print("Write output", flush=True)
    output = ad.AnnData(
        obs=dataset.obs[[]],
        var=dataset.var[[]],
        obsm={"X_emb": model.get_latent_representation()},
        uns={"dataset_id": dataset.uns["dataset_id"],
             "normalization_id": dataset.uns["normalization_id"],
             "method_id": meta["name"]},
    )
    output.write_h5ad(par["output"], compression="gzip")


if __name__ == "__main__":
    main(par, meta)
