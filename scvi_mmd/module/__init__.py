from ._clusters import OnlineKMeans
from ._guard import MutualNeighbourGuard
from ._mmdvae import MMDVAE
from ._penalty import MMDPenalty
from ._strength import StrengthController
from ._weight_rules import FixedWeight, WeightRule

__all__ = [
    "FixedWeight", "MMDPenalty", "MMDVAE", "MutualNeighbourGuard", "OnlineKMeans",
    "StrengthController", "WeightRule",
]
