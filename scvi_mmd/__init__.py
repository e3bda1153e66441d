"""scvi-mmd: scVI with a tunable Maximum Mean Discrepancy batch-correction penalty."""

from importlib.metadata import PackageNotFoundError, version

from . import mmd
from ._defaults import DEFAULT_STRENGTH, ORIGINAL_DESIGN
from .model import SCVIMMD
from .module import MMDVAE
from .train import MMDTrainingPlan

try:
    __version__ = version("scvi-mmd")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_STRENGTH", "MMDTrainingPlan", "MMDVAE", "ORIGINAL_DESIGN", "SCVIMMD", "__version__",
    "mmd",
]
