"""Configuration of a study: which recipes, on which data, with which seeds and budgets.

A study trains, for every recipe x seed, the same tokenizer architecture by that recipe, then the
same generator on its latent, then samples and evaluates it. Everything that is not the recipe
or the seed is shared, so the recipes are compared at equal budgets:

    data          one dataset for every stage (replaces tokenizer.data and generator.data)
    tokenizer     the decomposer: a preset (`tokenizer_preset`) with the `tokenizer` section of
                  the YAML merged on top; `recipe` and `train.seed` are set per run, and a
                  coupled recipe aims at the study's generator (N_big) unless
                  `tokenizer.coupled` names another
    generator     the generator run trained on every latent (its `tokenizer` is set per run)
    budget        optimizer steps of each stage and the number of samples scored; they replace
                  `tokenizer.train.steps` and `generator.train.steps`
    variants      named recipes with their own tokenizer settings (an ablation: coupled with
                  another distortion, on another bottleneck, ...); `recipes` may list them

With `budget.equal_flops`, every tokenizer trains for the FLOPs of the most expensive one (the
coupled recipes, with their tiny generators): a cheaper recipe gets proportionally more steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentlab import config as C
from latentlab.data import load_dataset
from latentlab.data.config import DataConfig
from latentlab.data.spec import parse_spec
from latentlab.errors import ConfigError, UserError
from latentlab.generation.config import GeneratorRunConfig
from latentlab.generation.prompts import resolve_condition
from latentlab.recipes.config import RECIPES
from latentlab.recipes.presets import TOKENIZER_PRESETS
from latentlab.recipes.train import TokenizerRunConfig
from latentlab.study.curves import CurveConfig

SHARED_RECIPE = "coupled+dae"
"""The recipe of a study's shared tokenizer config: the one that uses every recipe's sections
(dae, coupled), so the config carries them all; each run then sets its own recipe, which leaves
out what it does not use."""


def _default_tokenizer() -> TokenizerRunConfig:
    return dataclasses.replace(TOKENIZER_PRESETS["digits-kl"], recipe=SHARED_RECIPE)


@dataclass
class BudgetConfig:
    tokenizer_steps: int = 1500
    """Optimizer steps of every tokenizer (whatever its recipe); with `equal_flops`, of the most
    expensive one."""
    equal_flops: bool = True
    """Give every tokenizer the training FLOPs of the most expensive recipe (more steps for the
    cheaper ones, measured by `training.flops`); false gives every one `tokenizer_steps`."""
    generator_steps: int = 1500
    """Optimizer steps of every generator."""
    samples: int = 2000
    """Samples drawn from every generator and scored (kept as samples.npz); Fréchet distances
    and k-NN figures of fewer are dominated by their small-sample bias."""

    def __post_init__(self):
        for name in ("tokenizer_steps", "generator_steps", "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")


@dataclass
class EvaluationConfig:
    cache_dir: str = ""
    """Where the domain feature networks are cached; '' means $LATENTLAB_CACHE, else
    ~/.cache/latentlab."""
    probe_steps: int = 500
    """Training steps of the predictability probe (a small flow or next-token model fitted
    on each latent)."""

    def __post_init__(self):
        if self.probe_steps < 1:
            raise ValueError(f"probe_steps: must be >= 1, got {self.probe_steps}")


@dataclass
class VariantConfig:
    """A named recipe: a recipe with its own tokenizer settings, for ablations."""

    name: str = ""
    """How `recipes` and the report name it (letters, digits, - and _)."""
    recipe: str = "coupled"
    """The recipe it runs (baseline, dae, coupled, coupled+dae)."""
    tokenizer: Any = field(default_factory=dict)
    """Settings merged onto the study's tokenizer, e.g. {coupled: {distortion: gaussian}}."""

    def __post_init__(self):
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ValueError(f"name: need letters, digits, - or _, got {self.name!r}")
        if self.name in RECIPES:
            raise ValueError(f"name: '{self.name}' is a recipe; a variant needs its own name")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe: unknown recipe '{self.recipe}' (known: "
                             f"{', '.join(RECIPES)})")
        if not isinstance(self.tokenizer, dict):
            raise ValueError(f"tokenizer: must be a mapping, got {self.tokenizer!r}")


@dataclass
class StudyConfig:
    """Everything `latentlab study` needs."""

    data: DataConfig = field(default_factory=DataConfig)
    """The dataset of every stage: tokenizer, latent cache, generator and evaluation."""
    recipes: list[str] = field(default_factory=lambda: ["baseline", "coupled"])
    """Recipes to compare (baseline, dae, coupled, coupled+dae, or a variant's name); the first
    is the reference."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds: each recipe is trained once per seed, tokenizer and generator alike."""
    tokenizer_preset: str = "digits-kl"
    """Preset the tokenizer section starts from when the study is read from YAML."""
    tokenizer: TokenizerRunConfig = field(default_factory=_default_tokenizer)
    """The decomposer shared by every recipe, with every recipe's sections (its recipe is
    coupled+dae); recipe, seed, data and steps are set per run."""
    generator: GeneratorRunConfig = field(default_factory=GeneratorRunConfig)
    """The generator trained on every latent; tokenizer, seed, data and steps set per run."""
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    """Steps and samples per run, equal for every recipe."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """How runs are scored."""
    variants: list[VariantConfig] = field(default_factory=list)
    """Named recipes with their own tokenizer settings, which `recipes` may list."""
    curves: CurveConfig = field(default_factory=CurveConfig)
    """Extra generator budgets and widths trained on every tokenizer (`study.curves`)."""

    def __post_init__(self):
        if not self.recipes:
            raise ValueError("recipes: must name at least one recipe")
        known = [*RECIPES, *(v.name for v in self.variants)]
        if len(set(known)) != len(known):
            raise ValueError("variants: two variants share a name")
        for recipe in self.recipes:
            if recipe not in known:
                raise ValueError(f"recipes: unknown recipe '{recipe}' (known: "
                                 f"{', '.join(known)})")
        if len(set(self.recipes)) != len(self.recipes):
            raise ValueError(f"recipes: listed twice in {self.recipes}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: need distinct seeds, got {self.seeds}")
        if self.tokenizer_preset not in TOKENIZER_PRESETS:
            raise ValueError(f"tokenizer_preset: unknown preset '{self.tokenizer_preset}' "
                             f"(known: {', '.join(TOKENIZER_PRESETS)})")
        try:
            parse_spec(self.data.spec)
        except UserError as e:
            raise ValueError(f"data.spec: {e}") from None


def study_from_dict(data: dict, where: str = "") -> StudyConfig:
    """A study from plain data: the `tokenizer` section is merged onto the preset named by
    `tokenizer_preset`, so a config lists only what differs from it. `where` prefixes errors."""
    data = dict(data)
    preset = data.get("tokenizer_preset", StudyConfig.tokenizer_preset)
    if preset not in TOKENIZER_PRESETS:
        raise ConfigError(f"{where}tokenizer_preset: unknown preset '{preset}' (known: "
                          f"{', '.join(TOKENIZER_PRESETS)})")
    section = data.get("tokenizer", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{where}tokenizer: must be a mapping, got {section!r}")
    shared = dataclasses.replace(TOKENIZER_PRESETS[preset], recipe=SHARED_RECIPE)
    data["tokenizer"] = C.merge(C.to_dict(shared), section)
    try:
        cfg = C.from_dict(StudyConfig, data)
        for variant in cfg.variants:  # a bad variant fails here, before any training
            tokenizer_run(cfg, variant.name, cfg.seeds[0], Path())
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None
    return cfg


def load_study(path: str | Path | None = None,
               overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Defaults < YAML file at `path` < dotted `overrides` ({'budget.samples': 500})."""
    data = C.apply_overrides(C.read_yaml(path) if path else {}, overrides or {})
    return study_from_dict(data, f"{path}: " if path else "")


def tokenizer_run(cfg: StudyConfig, recipe: str, seed: int, big_generator: Path,
                  steps: int = 0) -> TokenizerRunConfig:
    """The tokenizer config of one run: the shared one (with a variant's settings merged on)
    with this recipe, seed, data and budget (`steps`, 0: `budget.tokenizer_steps`).

    A coupled recipe extrapolates its tiny generators to the generator trained next; unless the
    config names another, that is the study's own, whose config is the file `big_generator`.
    """
    t = cfg.tokenizer
    variant = next((v for v in cfg.variants if v.name == recipe), None)
    if variant is not None:
        recipe = variant.recipe
        t = C.from_dict(TokenizerRunConfig, C.merge(C.to_dict(t), variant.tokenizer),
                        prefix=f"variants.{variant.name}.tokenizer.")
    coupled = t.coupled
    if recipe.startswith("coupled") and not (coupled.big_parameters or coupled.big_generator):
        coupled = dataclasses.replace(coupled, big_generator=str(big_generator))
    return dataclasses.replace(
        t, recipe=recipe, data=cfg.data, coupled=coupled,
        train=dataclasses.replace(t.train, seed=seed,
                                  steps=steps or cfg.budget.tokenizer_steps))


def generator_run(cfg: StudyConfig, tokenizer: Path | None, seed: int) -> GeneratorRunConfig:
    """The generator config of one run: the shared one on this tokenizer, seed and budget
    (tokenizer None: the shared one as the big generator the coupled recipes aim at)."""
    g = cfg.generator
    # what the run will record it is conditioned on (auto resolved), so a finished run compares
    generator = resolve_condition(g.generator, load_dataset(cfg.data.spec, "train"))
    return dataclasses.replace(
        g, tokenizer=str(tokenizer) if tokenizer else "", data=cfg.data, generator=generator,
        train=dataclasses.replace(g.train, seed=seed, steps=cfg.budget.generator_steps))
