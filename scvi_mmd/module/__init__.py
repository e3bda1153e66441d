from ._mmdvae import MMDVAE

__all__ = ["MMDVAE"]
