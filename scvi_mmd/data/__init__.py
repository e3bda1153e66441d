from ._simulate import simulate_batches

__all__ = ["simulate_batches"]
