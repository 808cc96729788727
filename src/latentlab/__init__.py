"""latentlab: train a decomposer and the generator that models its latent as one system."""

__version__ = "0.1.0"
