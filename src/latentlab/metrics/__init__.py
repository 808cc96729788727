"""Metrics: reconstruction, generation, latent and rate."""
