from ._auto import AUTO_WEIGHT_RANGE, WeightChoice, choose_mmd_weight
from ._curve import mmd_curve
from ._scvimmd import SCVIMMD

__all__ = ["AUTO_WEIGHT_RANGE", "SCVIMMD", "WeightChoice", "choose_mmd_weight", "mmd_curve"]
