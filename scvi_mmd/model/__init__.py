from ._scvimmd import SCVIMMD

__all__ = ["SCVIMMD"]
