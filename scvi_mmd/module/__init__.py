from ._conditioning import WeightConditioning
from ._guard import MutualNeighbourGuard
from ._mmdvae import MMDVAE

__all__ = ["MMDVAE", "MutualNeighbourGuard", "WeightConditioning"]
