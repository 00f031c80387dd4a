"""Runners of the per-window step (one contract): eager, torch.compile and TensorRT."""
