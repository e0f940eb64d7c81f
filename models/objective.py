"""The multi-criteria objective for choosing a model variant: the reference study's and a corrected one.

The reference study minimizes L = ΔS/S0 + ΔT/T0 + ΔA/A0 (file size S, time per image T, accuracy A, each
relative to the unoptimized model, ΔX = X − X0). Its accuracy term has the wrong sign: losing accuracy
LOWERS L, so a less accurate variant looks better. `corrected_objective` penalizes the loss instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from models.errors import ModelError

REQUIRED_COLUMNS = ("variant", "size_bytes", "latency_ms", "accuracy")
ENERGY_COLUMN = "energy_mj"


@dataclass(frozen=True)
class ObjectiveWeights:
    """Weights of the corrected objective's terms; the energy term counts only when energies are given."""

    size: float = 1.0
    time: float = 1.0
    accuracy: float = 1.0
    energy: float = 1.0

    def __post_init__(self) -> None:
        for name in ("size", "time", "accuracy", "energy"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ModelError(f"objective weight {name!r} must be a finite number, got {value!r}")
            if value < 0:
                raise ModelError(f"objective weight {name!r} must be >= 0, got {value!r}")


def _number(what: str, value: Any, *, reference: bool) -> float:
    """`value` as a float; references must be > 0 (they divide), measured values >= 0."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ModelError(f"{what} must be finite, got {value!r}")
    if reference and x <= 0:
        raise ModelError(f"{what} is the reference and must be > 0, got {value!r}")
    if not reference and x < 0:
        raise ModelError(f"{what} must be >= 0, got {value!r}")
    return x


def _relative_changes(
    size: Any, time: Any, accuracy: Any, size0: Any, time0: Any, accuracy0: Any
) -> tuple[float, float, float]:
    """(ΔS/S0, ΔT/T0, ΔA/A0) with ΔX = X − X0, after checking every value."""
    s0 = _number("size0", size0, reference=True)
    t0 = _number("time0", time0, reference=True)
    a0 = _number("accuracy0", accuracy0, reference=True)
    s = _number("size", size, reference=False)
    t = _number("time", time, reference=False)
    a = _number("accuracy", accuracy, reference=False)
    return (s - s0) / s0, (t - t0) / t0, (a - a0) / a0


def reference_objective(
    size: float, time: float, accuracy: float, *, size0: float, time0: float, accuracy0: float
) -> float:
    """The study's L = ΔS/S0 + ΔT/T0 + ΔA/A0, exactly as published (minimized).

    Beware: ΔA/A0 is negative when accuracy drops, so this objective REWARDS accuracy loss.
    """
    ds, dt, da = _relative_changes(size, time, accuracy, size0, time0, accuracy0)
    return ds + dt + da


def corrected_objective(
    size: float,
    time: float,
    accuracy: float,
    energy: float | None = None,
    *,
    size0: float,
    time0: float,
    accuracy0: float,
    energy0: float | None = None,
    weights: ObjectiveWeights = ObjectiveWeights(),
) -> float:
    """L = ws·ΔS/S0 + wt·ΔT/T0 + wa·(A0 − A)/A0 [+ we·ΔE/E0]; minimized, accuracy LOSS is penalized.

    The energy term is used only when both `energy` and `energy0` are given (giving one alone is an error).
    """
    ds, dt, da = _relative_changes(size, time, accuracy, size0, time0, accuracy0)
    total = weights.size * ds + weights.time * dt - weights.accuracy * da
    if (energy is None) != (energy0 is None):
        given = "energy" if energy is not None else "energy0"
        raise ModelError(f"corrected_objective: {given} given without its counterpart; pass both or neither")
    if energy is not None:
        e0 = _number("energy0", energy0, reference=True)
        e = _number("energy", energy, reference=False)
        total += weights.energy * (e - e0) / e0
    return total


def rank(
    rows: list[dict[str, Any]] | pd.DataFrame,
    reference: str,
    *,
    weights: ObjectiveWeights = ObjectiveWeights(),
) -> pd.DataFrame:
    """Score each variant against `reference` and sort by the corrected objective (stable on ties).

    Rows need `variant`, `size_bytes`, `latency_ms`, `accuracy`; an `energy_mj` column adds the energy term,
    in which case every row must have a value. Adds columns `objective_reference` and `objective`.
    """
    df = pd.DataFrame(rows).copy() if not isinstance(rows, pd.DataFrame) else rows.copy()
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ModelError(f"rank: rows lack column(s) {missing}; each row needs {list(REQUIRED_COLUMNS)}")
    if df["variant"].duplicated().any():
        dupes = sorted(set(df.loc[df["variant"].duplicated(), "variant"].astype(str)))
        raise ModelError(f"rank: variant(s) {dupes} appear more than once; give each row a unique variant")
    matches = df.index[df["variant"] == reference]
    if len(matches) == 0:
        raise ModelError(
            f"rank: reference variant {reference!r} not among {df['variant'].astype(str).tolist()}"
        )
    ref = df.loc[matches[0]]
    use_energy = ENERGY_COLUMN in df.columns
    if use_energy and df[ENERGY_COLUMN].isna().any():
        lacking = df.loc[df[ENERGY_COLUMN].isna(), "variant"].astype(str).tolist()
        raise ModelError(
            f"rank: {ENERGY_COLUMN} missing for {lacking}; measure every variant or drop the column"
        )
    base = {"size0": ref["size_bytes"], "time0": ref["latency_ms"], "accuracy0": ref["accuracy"]}
    reference_scores, scores = [], []
    for r in df.to_dict("records"):
        label = f"variant {r['variant']!r}"
        try:
            reference_scores.append(
                reference_objective(r["size_bytes"], r["latency_ms"], r["accuracy"], **base)
            )
            energy = (r[ENERGY_COLUMN], ref[ENERGY_COLUMN]) if use_energy else (None, None)
            scores.append(
                corrected_objective(
                    r["size_bytes"],
                    r["latency_ms"],
                    r["accuracy"],
                    energy[0],
                    **base,
                    energy0=energy[1],
                    weights=weights,
                )
            )
        except ModelError as exc:
            raise ModelError(f"rank: {label}: {exc}") from None
    df["objective_reference"] = reference_scores
    df["objective"] = scores
    return df.sort_values("objective", kind="stable").reset_index(drop=True)
