"""`Waveform`: one fetched channel with its vertical settings and the provenance to recompute it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instruments.conversion import volts_from_preamble
from instruments.errors import InstrumentError


@dataclass
class Waveform:
    """Samples of one channel: t = t0 + i*dt (seconds, 0 = trigger), volts at the probe tip (float64).

    `offset` is the voltage at the centre of the ADC range, whatever the vendor's sign convention.
    `raw_codes` + `preamble` (with its `formula`) reproduce `volts`; `idn` and `settings` say how.
    """

    t0: float
    dt: float
    volts: np.ndarray
    channel: str | int
    volts_per_div: float
    offset: float = 0.0
    probe: float = 1.0
    adc_bits: int = 8
    clipped: bool = False
    raw_codes: np.ndarray | None = None
    preamble: dict[str, Any] = field(default_factory=dict)
    idn: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    adc_step_v: float | None = None

    def __post_init__(self) -> None:
        self.volts = np.asarray(self.volts, dtype=np.float64)
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise InstrumentError(f"waveform {self.channel}: sample interval dt must be positive, "
                                  f"got {self.dt!r}")

    def __len__(self) -> int:
        return int(self.volts.size)

    @property
    def time(self) -> np.ndarray:
        """Sample times in seconds relative to the trigger."""
        return self.t0 + self.dt * np.arange(self.volts.size, dtype=np.float64)

    @property
    def step_v(self) -> float:
        """One ADC step in volts (from the preamble if known, else volts/div over 25 codes/div at 8 bits)."""
        if self.adc_step_v is not None:
            return float(self.adc_step_v)
        return float(self.volts_per_div) / (25.0 * 2 ** (self.adc_bits - 8))

    def recompute(self) -> np.ndarray:
        """Volts recomputed from the stored raw codes and preamble; proves the provenance is complete."""
        if self.raw_codes is None:
            raise InstrumentError(f"waveform {self.channel} has no raw codes to recompute from")
        return volts_from_preamble(self.raw_codes, self.preamble)

    def provenance(self) -> dict[str, Any]:
        """JSON-ready metadata: everything except the sample arrays."""
        return {
            "channel": self.channel, "t0": self.t0, "dt": self.dt, "n": len(self),
            "volts_per_div": self.volts_per_div, "offset": self.offset, "probe": self.probe,
            "adc_bits": self.adc_bits, "adc_step_v": self.step_v, "clipped": self.clipped,
            "idn": self.idn, "preamble": self.preamble, "settings": self.settings,
        }

    def save(self, path: str | Path) -> Path:
        """Write volts, raw codes and provenance to one `.npz` file."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {"volts": self.volts}
        if self.raw_codes is not None:
            arrays["raw_codes"] = self.raw_codes
        np.savez_compressed(path, provenance=np.array(json.dumps(self.provenance())), **arrays)
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | Path) -> Waveform:
        """Read a file written by `save`."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["provenance"]))
            raw = data["raw_codes"] if "raw_codes" in data else None
            return cls(
                t0=meta["t0"], dt=meta["dt"], volts=data["volts"], channel=meta["channel"],
                volts_per_div=meta["volts_per_div"], offset=meta["offset"], probe=meta["probe"],
                adc_bits=meta["adc_bits"], clipped=meta["clipped"], raw_codes=raw, preamble=meta["preamble"],
                idn=meta["idn"], settings=meta["settings"], adc_step_v=meta["adc_step_v"],
            )


def clipped_codes(codes: np.ndarray, low_rail: int, high_rail: int) -> bool:
    """True if any sample sits at (or beyond) an ADC rail."""
    if codes.size == 0:
        return False
    return bool(codes.min() <= low_rail or codes.max() >= high_rail)
