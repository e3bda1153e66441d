from ._chunked import ChunkedDataModule, ordered_loader
from ._simulate import simulate_batches

__all__ = ["ChunkedDataModule", "ordered_loader", "simulate_batches"]
