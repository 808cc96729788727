"""`latentlab evaluate RUN`: score a tokenizer or generator run with every metric that applies.

The evaluation goes into RUN/metrics.json under the key "evaluation" (the figures training wrote
there are kept) and into its own file, RUN/evaluation.json unless --out says otherwise; both
are written atomically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from latentlab.errors import UserError
from latentlab.evaluation.generator import DEFAULT_N, MIN_REFERENCE, REFERENCES
from latentlab.evaluation.likelihood import NLL_ITEMS
from latentlab.evaluation.probe import PROBE_STEPS
from latentlab.io import write_json

SUMMARY_KEYS = ("mse", "psnr", "ssim", "rfd", "lipschitz_encoder_mean", "lipschitz_decoder_mean",
                "nn_accuracy", "predictability", "usage", "perplexity", "class_accuracy",
                "bits_per_dim")


def run_kind(run: Path) -> str:
    """"tokenizer" or "generator", from what the run directory holds (a diffusers autoencoder
    folder is a tokenizer)."""
    from latentlab.tokenizers.diffusers_ae import is_diffusers_folder

    if is_diffusers_folder(run):
        return "tokenizer"
    if (run / "generator" / "modelled.json").is_file():
        return "generator"
    if (run / "tokenizer" / "tokenizer.yaml").is_file():
        return "tokenizer"
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    raise UserError(f"{run}: not a trained tokenizer or generator run (no tokenizer/ or "
                    "generator/ inside)")


def record(run: Path, evaluation: dict, out: Path, key: str = "evaluation") -> None:
    """Write `evaluation` to `out` and under `key` in RUN/metrics.json."""
    metrics_path = run / "metrics.json"
    metrics: dict = {}
    if metrics_path.exists():
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{metrics_path}: cannot be read ({e}); not overwriting it") from None
        if not isinstance(metrics, dict):
            raise UserError(f"{metrics_path}: not a JSON object; not overwriting it")
    write_json(out, evaluation)
    write_json(metrics_path, metrics | {key: evaluation})


def summary(evaluation: dict) -> str:
    """One line: the main figures, FD-infinity per view with its real-vs-real floor."""
    parts = [f"{k} {evaluation[k]:.4g}" for k in SUMMARY_KEYS if k in evaluation]
    parts += [f"fd_inf/{v} {evaluation[f'fd_inf/{v}']:.4g} (floor "
              f"{evaluation[f'fd_inf_floor/{v}']:.2g})" for v in evaluation.get("views", [])]
    return f"{evaluation['kind']} on {evaluation['data']}: " + ", ".join(parts)


def check_extractor(path: str) -> None:
    """Fail before any work if the --inception file cannot be loaded."""
    from latentlab.evaluation.views import load_extractor

    if not Path(path).is_file():
        raise UserError(f"--inception: {path}: no such file")
    try:
        load_extractor(path)
    except ValueError as e:
        raise UserError(f"--inception: {e}") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = Path(args.run)
    kind = run_kind(run)
    if args.n < 2:
        raise UserError(f"--n must be >= 2, got {args.n}")
    if args.nll < 0:
        raise UserError(f"--nll must be >= 0, got {args.nll}")
    if args.probe_steps < 1:
        raise UserError(f"--probe-steps must be >= 1, got {args.probe_steps}")
    if args.inception:
        check_extractor(args.inception)
    if args.prior:
        return evaluate_prior(run, kind, args)
    if kind == "tokenizer":
        from latentlab.evaluation.tokenizer import evaluate_tokenizer_run

        if args.samples:
            raise UserError("--samples: only a generator run has samples to score")
        if args.nll:
            raise UserError("--nll: only a flow or vpsde generator has a likelihood to report")
        evaluation = evaluate_tokenizer_run(run, cache_dir=args.cache_dir, seed=args.seed,
                                            probe_steps=args.probe_steps,
                                            inception=args.inception, spec=args.data)
    else:
        if args.data:
            raise UserError("--data: only for a diffusers folder; a generator run is scored on "
                            "its own dataset")
        from latentlab.evaluation.generator import evaluate_generator_run

        evaluation = evaluate_generator_run(run, n=args.n, cache_dir=args.cache_dir,
                                            seed=args.seed, samples=args.samples,
                                            steps=args.steps, inception=args.inception,
                                            reference=args.reference, nll_items=args.nll)
    out = Path(args.out) if args.out else run / "evaluation.json"
    record(run, evaluation, out)
    print(summary(evaluation))
    print(f"wrote {out} and the 'evaluation' entry of {run / 'metrics.json'}")
    return 0


def evaluate_prior(run: Path, kind: str, args: argparse.Namespace) -> int:
    """`evaluate RUN --prior`: a VAE tokenizer's decoded N(0, I) draws, scored in every view,
    written to RUN/prior_evaluation.json and under "prior_evaluation" in RUN/metrics.json."""
    from latentlab.evaluation.generator import evaluate_vae_prior

    if kind != "tokenizer":
        raise UserError(f"--prior: {run} is a generator run; the prior is a VAE tokenizer's")
    if args.samples or args.nll:
        raise UserError("--prior draws its own samples and has no likelihood to report: "
                        "no --samples, no --nll")
    evaluation = evaluate_vae_prior(run, args.n, args.cache_dir, args.seed, args.data,
                                    args.reference)
    out = Path(args.out) if args.out else run / "prior_evaluation.json"
    record(run, evaluation, out, "prior_evaluation")
    print(summary(evaluation))
    print(f"wrote {out} and the 'prior_evaluation' entry of {run / 'metrics.json'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score a trained tokenizer or generator run",
        description="Score a run: a tokenizer on reconstruction, reconstruction Fréchet "
                    "distance and latent metrics; a generator's fresh samples on raw and "
                    "bias-corrected Fréchet distance with its real-vs-real floor, KID, "
                    "precision/recall, density/coverage in several views (pixels, a "
                    "classifier, its probabilities, a self-supervised encoder) and class "
                    "accuracy (and bits per dimension for an autoregressive prior). The "
                    "networks are trained once per dataset and cached. See docs/metrics.md.")
    p.add_argument("run", help="run directory of train-tokenizer or train-generator, or a "
                               "diffusers AutoencoderKL/VQModel folder (with --data)")
    p.add_argument("--n", type=int, default=DEFAULT_N,
                   help=f"samples to draw from a generator (default: {DEFAULT_N})")
    p.add_argument("--steps", type=int, help="sampling steps (default: the run's)")
    p.add_argument("--prior", action="store_true",
                   help="a VAE (kl) tokenizer run: score --n decoded N(0, I) draws, its own "
                        "sampler, as a generator's samples are")
    p.add_argument("--samples", help="score this samples file (latentlab's samples.npz or "
                                     "ADM's arr_0/arr_1 layout) instead of drawing new samples")
    p.add_argument("--reference", default="auto", choices=REFERENCES,
                   help="real items samples are scored against: auto (the test split, or the "
                        f"training split when the test split has under {MIN_REFERENCE} "
                        "items), test or train (default: auto)")
    p.add_argument("--nll", type=int, nargs="?", const=NLL_ITEMS, default=0, metavar="N",
                   help="also the exact likelihood of a flow or vpsde generator on N held-out "
                        f"items (default N: {NLL_ITEMS}), in bits per dimension of what it "
                        "models (minutes on a CPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, pair draws and the "
                                                       "probe (default: 0)")
    p.add_argument("--probe-steps", type=int, default=PROBE_STEPS,
                   help="training steps of a tokenizer's predictability probe; figures "
                        f"compare only at equal steps (default: {PROBE_STEPS})")
    p.add_argument("--data", help="the dataset to evaluate a diffusers autoencoder folder on "
                                  "(a run uses its own)")
    p.add_argument("--out", help="evaluation file to write (default: RUN/evaluation.json)")
    p.add_argument("--cache-dir", help="feature-network cache (default: $LATENTLAB_CACHE or "
                                       "~/.cache/latentlab)")
    p.add_argument("--inception", help="Inception feature extractor saved with "
                                       "torch.export.save (.pt2), (B, 3, 299, 299) in [0, 1] "
                                       "-> (B, F): adds an Inception FID")
    p.set_defaults(func=cmd_evaluate)
