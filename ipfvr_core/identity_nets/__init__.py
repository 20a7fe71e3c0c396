"""Differentiable face identity networks (torch), for training against identity."""
