from ._conditioning import WeightConditioning
from ._guard import MutualNeighbourGuard
from ._mmdvae import MMDVAE
from ._strength import StrengthController

__all__ = ["MMDVAE", "MutualNeighbourGuard", "StrengthController", "WeightConditioning"]
