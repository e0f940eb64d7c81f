"""The variant registry: `models/variants.yaml` validated into recipes, modes and variant names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.config_file import read_yaml_mapping
from models.convert import MODES
from models.errors import ModelError

DEFAULT_CONFIG = Path(__file__).with_name("variants.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Architecture(_Strict):
    """Widths of the reference CNN."""

    input_shape: tuple[int, int, int] = (32, 32, 1)
    filters: tuple[Annotated[int, Field(ge=1)], ...] = Field((16, 32, 64), min_length=1)
    dense_units: tuple[Annotated[int, Field(ge=1)], ...] = Field((128, 64), min_length=1)
    num_classes: int = Field(10, ge=2)
    bn_momentum: float = Field(0.9, gt=0, lt=1)


class Student(_Strict):
    """Widths of a distilled student (the rest comes from the baseline architecture)."""

    filters: tuple[Annotated[int, Field(ge=1)], ...] = Field(min_length=1)
    dense_units: tuple[Annotated[int, Field(ge=1)], ...] = Field(min_length=1)


class Training(_Strict):
    """Epochs, batch size and learning rate of a training run."""

    epochs: int = Field(15, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(3e-4, gt=0)


class BaselineRecipe(_Strict):
    kind: Literal["baseline"]


class PrunedRecipe(_Strict):
    kind: Literal["pruned"]
    target_sparsity: float = Field(0.5, gt=0, lt=1)
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    frequency: int = Field(10, ge=1)
    schedule_fraction: float = Field(0.7, gt=0, le=1)


class QatRecipe(_Strict):
    kind: Literal["qat"]
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-4, gt=0)


class ClusteredRecipe(_Strict):
    kind: Literal["clustered"]
    clusters: int = Field(16, ge=2, le=256)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-4, gt=0)


class DistilledRecipe(_Strict):
    kind: Literal["distilled"]
    student: Student
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.1, ge=0, le=1)
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)


Recipe = Annotated[
    BaselineRecipe | PrunedRecipe | QatRecipe | ClusteredRecipe | DistilledRecipe, Field(discriminator="kind")
]


_RECIPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
#: Characters a variant or alias name may hold: it names files (`roc-<variant>.png`, `<variant>.tflite`)
#: and spreadsheet cells, so letters, digits, `-`, `_` and `.` only, starting with a letter or digit.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class VariantConfig(_Strict):
    """The whole variants.yaml file."""

    version: Literal[1] = 1
    seed: int = 0
    model: Architecture = Architecture()
    training: Training = Training()
    representative_samples: int = Field(200, ge=1)
    recipes: dict[str, Recipe]
    variants: dict[str, list[Literal[MODES]]]  # type: ignore[valid-type]
    aliases: dict[str, str] = {}

    @model_validator(mode="after")
    def _consistent(self) -> VariantConfig:
        for name in self.recipes:
            if not _RECIPE_NAME.fullmatch(name):
                raise ValueError(f"recipes: {name!r} is not a valid recipe name (letters, digits and _ only, "
                                 "starting with a letter: it names files and variants)")
        baselines = [name for name, r in self.recipes.items() if r.kind == "baseline"]
        if len(baselines) != 1:
            raise ValueError(f"exactly one recipe must have kind 'baseline', found {len(baselines)}")
        for recipe in self.variants:
            if recipe not in self.recipes:
                raise ValueError(
                    f"variants: unknown recipe {recipe!r}; defined recipes: {', '.join(self.recipes)}"
                )
        names = {f"{r}-{m}" for r, modes in self.variants.items() for m in modes}
        for alias, target in self.aliases.items():
            if not SAFE_NAME.fullmatch(alias):
                raise ValueError(f"aliases: {alias!r} is not a valid name (letters, digits, '-', '_' and '.' "
                                 "only, starting with a letter or digit, at most 100: it names files)")
            if target not in names:
                raise ValueError(f"aliases: {alias!r} points to {target!r}, which is not a variant")
        return self


@dataclass(frozen=True)
class Variant:
    """One entry of the matrix: a recipe plus a conversion mode."""

    recipe: str
    mode: str

    @property
    def name(self) -> str:
        """The variant's name, `<recipe>-<mode>`."""
        return f"{self.recipe}-{self.mode}"


@dataclass(frozen=True)
class Registry:
    """A validated variant configuration and where it came from."""

    path: Path
    config: VariantConfig

    @property
    def baseline(self) -> str:
        """Name of the baseline recipe."""
        return next(n for n, r in self.config.recipes.items() if r.kind == "baseline")

    @property
    def reference(self) -> Variant:
        """The unoptimized float32 baseline every variant is compared with."""
        return Variant(self.baseline, "no_opt")

    def variants(self) -> list[Variant]:
        """Every variant of the matrix, in config order."""
        return [Variant(r, m) for r, modes in self.config.variants.items() for m in dict.fromkeys(modes)]

    def select(self, names: list[str] | None) -> list[Variant]:
        """The variants named (variant names, reference-study aliases or recipe names); all if None."""
        every = self.variants()
        if not names:
            return every
        by_name = {v.name: v for v in every}
        chosen: dict[str, Variant] = {}
        for raw in names:
            name = self.config.aliases.get(raw, raw)
            if name in by_name:
                chosen[name] = by_name[name]
            elif name in self.config.variants:
                chosen.update({v.name: v for v in every if v.recipe == name})
            else:
                raise ModelError(
                    f"unknown variant {raw!r} in {self.path}; known: {', '.join(by_name)} "
                    f"(or a recipe name, or an alias: {', '.join(self.config.aliases) or 'none'})"
                )
        return list(chosen.values())


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def load_registry(path: str | Path = DEFAULT_CONFIG) -> Registry:
    """Read and validate a variants file; every problem is a ModelError naming the file and the key."""
    p = Path(path)
    hint = f"pass --config PATH (default {DEFAULT_CONFIG})"
    raw = read_yaml_mapping(p, what="variant config", hint=hint, error=ModelError)
    try:
        return Registry(p, VariantConfig.model_validate(raw))
    except ValidationError as exc:
        raise ModelError(f"{p}: {_describe(exc)}") from None
