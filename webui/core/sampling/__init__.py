"""Sampling: the sampler registry, seeds and noise, the CFG loop."""
