"""Bench noise of the virtual bench's current-derived figures: drift between sessions, and capture to capture.

A real shunt + scope bench does not give the same energy twice: the scope's vertical gain, the shunt's
temperature and the supply drift between sessions (a gain common to every variant measured in the session,
plus a part of its own per variant), and each capture scatters a little around that. `NoiseModel` draws these
three multiplicative gains from a seed, log-normally, reproducible bit for bit and independent between
variants and trials; the virtual board multiplies the supply current by their product (`hil.sim.device`).
The default CVs are assumptions about a real bench, not measurements.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["NOISE_OFF", "NoiseModel", "session_seed"]


def _key(variant: str) -> int:
    return zlib.crc32(variant.encode("utf-8"))


def _lognormal(sd: float, key: list[int]) -> float:
    """exp(N(0, sd)) drawn from `numpy.random.default_rng(key)`; exactly 1.0 when sd is 0."""
    if sd == 0:
        return 1.0
    return math.exp(float(np.random.default_rng(key).normal(0.0, sd)))


@dataclass(frozen=True)
class NoiseModel:
    """Bench noise of current-derived figures (power, energy): a gain per session, per (session, variant), per trial."""

    # total between-session coefficient of variation (assumption: real shunt+scope benches drift 1-3 % between
    # sessions)
    between_run_cv: float = 0.02
    # share of the between-session VARIANCE common to every variant of a session (scope gain, shunt temperature,
    # supply)
    shared_fraction: float = 0.75
    trial_cv: float = 0.003  # capture-to-capture CV within a session (assumption)

    def __post_init__(self) -> None:
        for name in ("between_run_cv", "trial_cv"):
            value = getattr(self, name)
            if not 0 <= value <= 0.5:
                raise ValueError(f"{name} must be between 0 and 0.5, got {value}")
        if not 0 <= self.shared_fraction <= 1:
            raise ValueError(f"shared_fraction must be between 0 and 1, got {self.shared_fraction}")

    @property
    def enabled(self) -> bool:
        """True when any gain can differ from 1."""
        return self.between_run_cv > 0 or self.trial_cv > 0

    @property
    def shared_sd(self) -> float:
        """SD (log scale) of the session gain common to every variant: sqrt(shared_fraction) x between_run_cv."""
        return math.sqrt(self.shared_fraction) * self.between_run_cv

    @property
    def variant_sd(self) -> float:
        """SD (log scale) of a variant's own session gain: sqrt(1 - shared_fraction) x between_run_cv."""
        return math.sqrt(1.0 - self.shared_fraction) * self.between_run_cv

    def session_gain(self, seed: int) -> float:
        """The gain every variant of session `seed` shares: exp(N(0, shared_sd)) from rng [seed, 11]."""
        return _lognormal(self.shared_sd, [seed, 11])

    def variant_gain(self, seed: int, variant: str) -> float:
        """The variant's own gain in session `seed`: exp(N(0, variant_sd)) from rng [seed, 12, crc32(variant)]."""
        return _lognormal(self.variant_sd, [seed, 12, _key(variant)])

    def trial_gain(self, seed: int, variant: str, trial: int) -> float:
        """Capture `trial`'s gain: exp(N(0, trial_cv)) from rng [seed, 13, crc32(variant), trial]."""
        return _lognormal(self.trial_cv, [seed, 13, _key(variant), trial])

    def gain(self, seed: int, variant: str, trial: int) -> float:
        """The current gain of capture `trial` of `variant` in session `seed`: the product of the three."""
        return self.session_gain(seed) * self.variant_gain(seed, variant) * self.trial_gain(seed, variant, trial)

    def describe(self, seed: int | None = None) -> str:
        """'2 % between sessions (75 % shared), 0.3 % per trial, seed 1234' (for `hil sim` and logs)."""
        text = (f"{self.between_run_cv * 100:g} % between sessions ({self.shared_fraction * 100:g} % shared), "
                f"{self.trial_cv * 100:g} % per trial")
        return text if seed is None else f"{text}, seed {seed}"


NOISE_OFF = NoiseModel(0.0, 0.0, 0.0)


def session_seed(session: str) -> int:
    """A stable 32-bit seed from a session id (its CRC32): every process of one session derives the same."""
    return zlib.crc32(session.encode("utf-8"))
