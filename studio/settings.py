"""The tuning settings: what each one means, its default and the values it may take, written once.

``TuneConfig`` is the recipe of a tuning job; ``config_fields`` reads its help, choices and ranges from the fields'
metadata, so the CLI's flags, the Tune tab's controls, sweep specs, the agents' tool and the few-shot study are
generated from it and check the same rules. Pure Python: reading settings needs no model (``studio --help``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from studio import StudioError
from studio.limits import MAX_SEED, MAX_STEPS, whole_number


# ---- the models' recipes: the budget at which TPVs transfer (backbones.recipe_for picks one per model) ------
@dataclass(frozen=True)
class Recipe:
    """A backbone's default prompt-tuning recipe: the budget at which its TPVs transfer across origins.

    Every entry point (Tune tab, ``studio tune``, ``build-library``, the few-shot experiment) starts from it.
    """

    lr: float
    steps: int
    batch_size: int
    n_tokens: int
    why: str = ""

    def filled(self, **given: float | int | None) -> dict[str, float | int]:
        """Every recipe setting: the ``given`` value where there is one, this recipe's where it is None or absent."""
        return {name: getattr(self, name) if given.get(name) is None else given[name] for name in RECIPE_SETTINGS}


# the settings a recipe fixes; every entry point (Tune tab, CLI, sweeps, agents) fills these from it when unset
RECIPE_SETTINGS = tuple(setting.name for setting in dataclasses.fields(Recipe) if setting.name != "why")


# measured on SmolLM2-135M (docs/findings.md, "When does a TPV transfer?"): at 80 x 8, lr 0.03 a TPV moved to
# another origin lost up to 30 points; at 150 x 8, lr 0.2 it keeps its accuracy within about a point
SMALL_DECODER_RECIPE = Recipe(lr=0.2, steps=150, batch_size=8, n_tokens=20,
                              why="150 steps x 8 at lr 0.2: TPVs transfer across origins on SmolLM2-135M")
# the paper's T5-base setting (lr 0.3, batch 32, 50 encoder tokens); steps are a single-GPU budget
T5_RECIPE = Recipe(lr=0.3, steps=1000, batch_size=32, n_tokens=50, why="the paper's T5-base recipe (lr 0.3)")


# ---- a tuning job's settings -----------------------------------------------------------------------------------
class Schedule(str, Enum):
    """How the learning rate decays after warm-up."""

    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


class SelectBy(str, Enum):
    """Which validation metric picks each prompt's best step."""

    LOSS = "loss"
    ACCURACY = "accuracy"


class Range(NamedTuple):
    """The values a numeric setting may take: ``low`` to ``high`` inclusive, or both ends excluded (``open``)."""

    low: float
    high: float
    open: bool = False

    def holds(self, value: float) -> bool:
        return self.low < value < self.high if self.open else self.low <= value <= self.high  # NaN holds nowhere

    def __str__(self) -> str:
        low, high = _plain(self.low), _plain(self.high)
        return f"in ({low}, {high})" if self.open else f"between {low} and {high}"


def _plain(number: float) -> str:
    """1e6 -> 1000000, 0.5 -> 0.5: how a bound reads in a message."""
    return str(int(number)) if float(number).is_integer() else str(number)


def _setting(default, help: str, label: str, range: Range | None = None, choices: type[Enum] | None = None):
    """A ``TuneConfig`` field with what every entry point reads from it: help, a label for messages, the range."""
    metadata = {"help": help, "label": label, "range": range}
    if choices is not None:
        metadata["choices"] = choices
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TuneConfig:
    """The recipe, and the one place its settings are described: ``config_fields`` reads the help, choices and
    ranges, so the CLI's flags, the Tune tab, sweeps and the few-shot study check the same rules.

    Defaults are the embedded model's recipe (``SMALL_DECODER_RECIPE``; the CLI, the Tune tab and sweeps fill steps,
    batch size and lr from the chosen model's, ``backbones.recipe_for``). ``schedule`` and ``select_by`` accept a ``Schedule``/``SelectBy`` or
    its string and are stored as the plain string, so ``asdict`` and ``repr`` (job signatures, checkpoint folders,
    content ids) stay what they were."""

    steps: int = _setting(SMALL_DECODER_RECIPE.steps, "training steps (optimizer updates)", "steps",
                          Range(1, MAX_STEPS))
    batch_size: int = _setting(SMALL_DECODER_RECIPE.batch_size, "examples per prompt per step (paper: 32 for T5, 4 "
                               "for 8B decoders)", "batch size", Range(1, 512))
    lr: float = _setting(SMALL_DECODER_RECIPE.lr, "peak learning rate (paper: 0.3 for T5)", "learning rate",
                         Range(0, 10, open=True))
    weight_decay: float = _setting(1e-5, "AdamW weight decay", "weight decay", Range(0, 1))
    warmup_ratio: float = _setting(0.03, "share of the steps that warm the learning rate up linearly (the decoder "
                                   "reference's 0.03)", "warm-up ratio", Range(0, 1))
    schedule: str = _setting(Schedule.COSINE.value, "learning-rate decay after warm-up: cosine (decoder reference), "
                             "linear (T5 reference) or constant", "schedule", choices=Schedule)
    eval_every: int = _setting(50, "validate, keep the best and checkpoint every N steps", "validate every",
                               Range(1, MAX_STEPS))
    val_limit: int = _setting(100, "validation examples per task", "validation examples", Range(1, 100_000))
    select_by: str = _setting(SelectBy.LOSS.value, "keep each prompt's best step by validation loss (reference) or "
                              "accuracy", "select_by", choices=SelectBy)
    max_grad_norm: float = _setting(1.0, "gradient-norm clip, per prompt", "gradient clip", Range(0, 1e6, open=True))
    micro_batch: int | None = _setting(None, "max rows per forward pass (None: the backbone's token budget decides)",
                                       "micro-batch", Range(1, 100_000))
    seed: int = _setting(0, "seed of the data order", "data seed", Range(0, MAX_SEED))

    def __post_init__(self) -> None:
        problems = []
        for setting in config_fields(type(self)):
            value = getattr(self, setting.name)
            if setting.choices is not None:
                chosen = _choice(setting.enum, value)
                if chosen is None:
                    problems.append(f"{setting.label} must be {_either(setting.choices)}")
                else:  # frozen: the plain string, whatever was given
                    object.__setattr__(self, setting.name, chosen.value)
            elif value is not None or setting.default is not None:
                problem = _range_problem(setting, value)
                if problem:
                    problems.append(problem)
                elif setting.type is int:  # 2.0 from a form is 2; ids and checkpoints see the same int
                    object.__setattr__(self, setting.name, int(value))
        if problems:
            raise StudioError("bad tuning settings: " + "; ".join(problems))

    @classmethod
    def parse(cls, **values) -> TuneConfig:
        """A config from values as typed into a form (text, floats, None for an empty field): each is read as its
        setting's type with a message that names the setting, then checked as any config is."""
        fields = {setting.name: setting for setting in config_fields(cls)}
        unknown = [name for name in values if name not in fields]
        if unknown:
            raise StudioError(f"unknown tuning setting {unknown[0]!r}")
        return cls(**{name: read_setting(fields[name], value) for name, value in values.items()})

    def lr_at(self, step: int) -> float:
        warmup = max(1, round(self.warmup_ratio * self.steps))
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)
        if self.schedule == Schedule.COSINE:
            return self.lr * 0.5 * (1 + math.cos(math.pi * progress))
        if self.schedule == Schedule.LINEAR:
            return self.lr * (1 - progress)
        return self.lr


def _choice(kind: type[Enum], value: object) -> Enum | None:
    try:
        return kind(value)
    except (ValueError, TypeError):
        return None


class ConfigField(NamedTuple):
    name: str
    type: type  # what parses a value: int, float, str (an optional setting's type without its None)
    default: object
    help: str
    choices: list[str] | None  # the allowed strings, for settings backed by an Enum
    range: Range | None = None  # the allowed values of a numeric setting
    label: str = ""  # how messages name it
    enum: type[Enum] | None = None


def config_fields(cls: type = TuneConfig) -> list[ConfigField]:
    """Every setting of a config dataclass, so command-line flags and UI controls are generated, not retyped."""
    return list(_fields(cls))


@functools.cache
def _fields(cls: type) -> tuple[ConfigField, ...]:  # every TuneConfig checks itself with them: read the class once
    hints = typing.get_type_hints(cls)
    out = []
    for spec in dataclasses.fields(cls):
        kind = next((a for a in typing.get_args(hints[spec.name]) if a is not type(None)), hints[spec.name])
        choices = spec.metadata.get("choices")
        out.append(ConfigField(spec.name, kind, spec.default, spec.metadata.get("help", ""),
                               [c.value for c in choices] if choices else None, spec.metadata.get("range"),
                               spec.metadata.get("label") or spec.name, choices))
    return tuple(out)


def _either(choices: list[str]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]


def _range_problem(setting: ConfigField, value: object) -> str | None:
    """What is wrong with a value of a numeric setting (its type, then its range), or None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"{setting.label} must be a number (got {value!r})"
    if setting.type is int and not float(value).is_integer():
        return f"{setting.label} must be a whole number (got {value})"
    if setting.range is not None and not setting.range.holds(value):
        return f"{setting.label} must be {setting.range} (got {value})"
    return None


def read_setting(setting: ConfigField, value: object):
    """One setting's value as typed into a form: empty is the default where that is None, else an error."""
    if setting.choices is not None:
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        if setting.default is None:
            return None
        raise StudioError(f"{setting.label} is empty: enter a number"
                          + (f" such as {setting.default}" if setting.type is float else ""))
    if setting.type is int:
        return whole_number(value, setting.label)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise StudioError(f"{setting.label} must be a number (got {value!r})") from None
