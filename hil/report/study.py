"""The reference study's six variants: its published figures (Table 1) beside this run's, one row each.

The study ran six variants on an ESP32-WROOM-32 at 240 MHz, 5 V through a 0.05 ohm shunt (SVHN, a ~15 k
parameter CNN). `models/variants.yaml` maps its names onto this matrix (`aliases:`); the run keeps that map
in its factory metadata, so an old report does not change when the file does.
"""

from __future__ import annotations

from dataclasses import dataclass

from hil.report.data import ReportData, VariantResult
from hil.report.tables import MISSING, Table, figure, number

STUDY_VARIANTS = (
    "cnn_not_optimised-no_opt",
    "cnn_not_optimised-default_opt",
    "cnn_not_optimised-int8_quant",
    "cnn_pruned-no_opt",
    "cnn_pruned-default_opt",
    "cnn_pruned-int8_quant",
)
@dataclass(frozen=True)
class Published:
    """One row of the study's Table 1 as this project has it; None where it was not transcribed."""

    size_kb: float | None = None
    gzip_kb: float | None = None
    latency_ms: float | None = None
    power_mw: float | None = None  # average during back-to-back inference


# Sources: the study's Table 1 as quoted in hil/sim/calibration.yaml ([study]: float 59.5 KB, 90.1 ms,
# 1946 mW; int8 62.8 ms, 1384 mW) and in issue 20 (default_opt rows; int8 21 KB).
PUBLISHED = {
    "cnn_not_optimised-no_opt": Published(size_kb=59.5, latency_ms=90.1, power_mw=1946),
    "cnn_not_optimised-default_opt": Published(size_kb=21.3, gzip_kb=15.6, latency_ms=64.7, power_mw=1237),
    "cnn_not_optimised-int8_quant": Published(size_kb=21.0, latency_ms=62.8, power_mw=1384),
    "cnn_pruned-no_opt": Published(),
    "cnn_pruned-default_opt": Published(size_kb=21.3, gzip_kb=8.3, latency_ms=64.0, power_mw=1468),
    "cnn_pruned-int8_quant": Published(),
}

STUDY_COLUMNS = ("study variant", "variant here", "size KB study", "size KB here", "gzip KB study",
                 "gzip KB here", "latency ms study", "latency ms here", "power mW study", "power mW here")  # fmt: skip


def study_aliases(data: ReportData) -> dict[str, str]:
    """The study name -> variant map the run was measured with (its factory metadata), else the shipped
    models/variants.yaml's (runs recorded before the factory stored its map with the run)."""
    stored = data.factory_meta.get("aliases")
    if not (isinstance(stored, dict) and any(name in stored for name in STUDY_VARIANTS)):
        from models.registry import DEFAULT_CONFIG, load_registry

        stored = load_registry(DEFAULT_CONFIG).config.aliases
    return {name: str(stored[name]) for name in STUDY_VARIANTS if name in stored}


def _kb(v: VariantResult, key: str) -> str:
    raw = v.factory.get(key)
    return MISSING if raw is None else number(float(raw) / 1024, "KB")


def _power(v: VariantResult, notes: list[str]) -> str:
    name = "active_power_mw" if "active_power_mw" in v.measurements else "power_mw"
    return figure(v, name, notes)


def study_table(data: ReportData) -> Table | None:
    """Six rows, the study's figures beside this run's; None when the run measured none of the six."""
    aliases = study_aliases(data)
    by_name = {v.name: v for v in data.variants}
    if not any(aliases.get(name) in by_name for name in STUDY_VARIANTS):
        return None
    notes: list[str] = []
    rows = []
    for name in STUDY_VARIANTS:
        pub = PUBLISHED[name]
        target = aliases.get(name)
        v = by_name.get(target) if target else None
        if v is None:
            here = ["not in this run"] * 4
        else:
            size = v.size_bytes
            here = [MISSING if size is None else number(size / 1024, "KB"), _kb(v, "gzip_bytes")]
            if v.skip_reason:
                notes.append(f"{name} ({v.name}) skipped: {v.skip_reason}")
                here += ["skipped", "skipped"]
            else:
                here += [figure(v, "latency_ms", notes), _power(v, notes)]
        rows.append([name, target or MISSING, number(pub.size_kb, "KB"), here[0], number(pub.gzip_kb, "KB"),
                     here[1], number(pub.latency_ms, "ms"), here[2], number(pub.power_mw, "mW"), here[3]])
    notes.append("study: Table 1 (ESP32-WROOM-32, 240 MHz, 5 V, SVHN, a ~15 k-parameter CNN); – where this "
                 "project has not transcribed the figure (hil/report/study.py). Here: this run's variant "
                 "(models/variants.yaml `aliases:`); power is the active power during inference, as the study "
                 "averaged it over back-to-back inferences.")
    sim = " (simulated)" if data.simulated else ""
    return Table(f"The reference study's six variants{sim}", list(STUDY_COLUMNS), rows, notes)

