"""Networks that implement `latentlab.generators.process.Denoiser`."""
