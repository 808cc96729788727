"""Metrics: the maths of reconstruction, generation and latent figures, on any tensors. The
networks that embed a dataset's items (the views and their judges, trained once per dataset)
are part of the evaluation protocol, `latentlab.evaluation`.

- `reconstruction`: MSE, PSNR, SSIM per item;
- `generation`: Fréchet distance, FD-infinity, KID, precision/recall, density/coverage, class
  accuracy;
- `latent`: Lipschitz complexity, nearest-neighbour accuracy, cosine histogram, eigenvalue decay.

Modules are imported where they are used: torchmetrics and scikit-learn are slow to import.
"""
