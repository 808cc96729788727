"""Metrics: reconstruction, generation, latent and rate.

- `reconstruction`: MSE, PSNR, SSIM per item;
- `features`: the domain feature network of a dataset (trained once, cached);
- `generation`: Fréchet distance, KID, precision/recall, class accuracy, Inception FID from a
  user-supplied extractor;
- `latent`: Lipschitz complexity, nearest-neighbour accuracy, cosine histogram, eigenvalue decay.

Modules are imported where they are used: torchmetrics and scikit-learn are slow to import.
"""
