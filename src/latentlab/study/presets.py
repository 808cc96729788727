"""Study presets: the digits study and the demo, which is the same study at a smaller budget.

`configs/study/NAME.yaml` holds the same study as commented YAML (a test keeps the two equal),
so `latentlab study --config configs/study/digits.yaml` and `study_preset("digits")` agree.
"""

from __future__ import annotations

from latentlab import config as C
from latentlab.recipes.config import RECIPES
from latentlab.study.config import StudyConfig, study_from_dict

DIGITS: dict = {
    "data": {"spec": "digits"},
    "recipes": list(RECIPES),
    "seeds": [0, 1, 2],
    "tokenizer_preset": "digits-kl",
    # the DiT flow of configs/generators/digits-flow-dit.yaml; held-out loss only at the end
    "generator": {"train": {"batch_size": 128, "lr": 1e-3, "warmup": 100, "log_every": 100,
                            "eval_every": 0, "checkpoint_every": 1000}},
    "budget": {"tokenizer_steps": 1500, "generator_steps": 3000, "samples": 2000},
}

# `latentlab demo`: the coupled recipe against the baseline, 3 seeds (the fewest that can make
# a difference significant: see evaluation.verdicts), within 10 minutes on 2 CPU cores (README)
# (measured on an AVX2-only EPYC, the slowest machine seen here: 800/600 steps took 13 minutes)
DEMO: dict = C.merge(DIGITS, {
    "recipes": ["baseline", "coupled"],
    "seeds": [0, 1, 2],
    "generator": {"generator": {"steps": 25}},
    "budget": {"tokenizer_steps": 500, "generator_steps": 400, "samples": 2000},
    "evaluation": {"probe_steps": 200},
})

STUDY_PRESETS: dict[str, dict] = {"digits": DIGITS, "demo": DEMO}


def study_preset(name: str) -> StudyConfig:
    """The study preset `name` (see STUDY_PRESETS) as a config."""
    return study_from_dict(STUDY_PRESETS[name])
