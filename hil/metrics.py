"""The catalogue of measured metrics: name, unit, which direction is better, and what it means.

Budgets, the results database, the gate and the report all name metrics from this one table.
"""

from __future__ import annotations

from dataclasses import dataclass

from hil.errors import HilError


@dataclass(frozen=True)
class Metric:
    """One measured quantity of a variant on a bench."""

    name: str
    unit: str
    better: str  # "lower" or "higher"
    description: str
    budget: bool = True  # whether budgets.yaml may set a limit on it


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("latency_ms", "ms", "lower", "mean inference latency reported by the board (CPU cycle counter)"),
        Metric("latency_p95_ms", "ms", "lower", "95th percentile of the inference latency"),
        Metric("power_mw", "mW", "lower", "average power over the whole capture (scope)"),
        Metric("idle_power_mw", "mW", "lower", "power outside inference windows"),
        Metric("active_power_mw", "mW", "lower", "power inside inference windows"),
        Metric("dynamic_power_mw", "mW", "lower", "active minus idle power"),
        Metric("energy_mj", "mJ", "lower", "energy per inference: integral of power over each marker window"),
        Metric("dynamic_energy_mj", "mJ", "lower", "energy per inference above idle"),
        Metric("pulse_width_ms", "ms", "lower", "marker pulse width on the scope", budget=False),
        Metric("pulse_vs_latency_pct", "%", "lower", "|pulse width - latency| / latency (cross-check)", budget=False),
        Metric("meter_energy_mj", "mJ", "lower", "energy per inference measured by the power meter beside the "
               "scope", budget=False),
        Metric("meter_power_mw", "mW", "lower", "average power measured by the power meter beside the scope",
               budget=False),
        Metric("meter_vs_scope_energy_pct", "%", "lower", "(meter - scope) / scope energy per inference "
               "(cross-check of two instruments on one run)", budget=False),
        Metric("inferences_per_s", "inf/s", "higher", "MLPerf Tiny runner's throughput: inferences over each timed "
               "window, median of windows (ours: over the sum of Invoke() times)", budget=False),
        Metric("energy_uj", "µJ", "lower", "MLPerf Tiny runner's energy per inference: each window's energy over "
               "its inferences, median of windows", budget=False),
        Metric("accuracy", "%", "higher", "top-1 accuracy on the device, test set streamed over the protocol"),
        Metric("accuracy_host", "%", "higher", "top-1 accuracy through tf.lite on the host (factory)", budget=False),
        Metric("output_agreement", "%", "higher", "device vs host TFLM top-1 agreement (cross-check)", budget=False),
        Metric("output_cosine", "", "higher", "mean cosine similarity of device and host TFLM outputs", budget=False),
        Metric("flash_kb", "KB", "lower", "model flatbuffer size in flash"),
        Metric("arena_kb", "KB", "lower", "tensor arena used on the device"),
    )
}


def metric(name: str) -> Metric:
    """Look a metric up by name; an unknown name is a HilError listing the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise HilError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}") from None


def regression(name: str, baseline: float, value: float) -> float:
    """How much worse `value` is than `baseline` in the metric's own direction (negative = better)."""
    return value - baseline if metric(name).better == "lower" else baseline - value
