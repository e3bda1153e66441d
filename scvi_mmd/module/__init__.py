from ._conditioning import WeightConditioning
from ._mmdvae import MMDVAE

__all__ = ["MMDVAE", "WeightConditioning"]
