"""`latentlab study`: compare decomposer recipes end to end (see `latentlab.study.run`)."""

from __future__ import annotations

import argparse

from latentlab.commands import options


def cmd_study(args: argparse.Namespace) -> int:
    from latentlab.study.config import load_study
    from latentlab.study.run import headline, run_study

    cfg = load_study(args.config, options.overrides_from(args))
    summary = run_study(cfg, args.out, overwrite=args.overwrite)
    print(f"report:  {args.out}/report.html")
    print(f"summary: {args.out}/summary.json")
    for line in headline(summary):
        print(line)
    return 0


def register(sub) -> None:
    from latentlab.study.config import StudyConfig

    p = sub.add_parser(
        "study", help="compare decomposer recipes end to end, with a report",
        description="Run every recipe x seed end to end (tokenizer, latent cache, the same "
                    "generator, samples, evaluation) at equal budgets; write summary.json and "
                    "a self-contained report.html. Settings: defaults < --config FILE.yaml < "
                    "the dotted options below. Finished runs in --out are reused.")
    p.add_argument("--config", help="study YAML (see configs/study/)")
    p.add_argument("--out", required=True, help="study directory (created, or continued)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the study in --out and start again")
    options.add_arguments(p, StudyConfig)
    p.set_defaults(func=cmd_study)
