import logging
import warnings
from pathlib import Path

import pytest

KANG_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kang_pbmc_ifnb.h5ad"

# Lightning's banner and tips are noise in a test log
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")


@pytest.fixture(scope="session")
def scvi_module():
    import scvi

    return scvi


@pytest.fixture
def synthetic(scvi_module):
    """400 cells x 100 genes, 2 batches, 3 labels (fresh copy per test)."""
    scvi_module.settings.seed = 0
    return scvi_module.data.synthetic_iid(batch_size=200, n_genes=100, n_batches=2)


TRAIN_KWARGS = {
    "max_epochs": 2,
    "train_size": 0.8,
    "check_val_every_n_epoch": 1,
    "enable_progress_bar": False,
}
