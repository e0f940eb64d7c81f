"""The report's PNG figures: a power trace per variant (inference windows shaded) and the Pareto plot.

matplotlib runs with the Agg backend and is imported only when a figure is drawn.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hil.errors import HilError
from instruments.waveform import Waveform

TRACE_POINTS = 2000  # envelope bins across a panel: enough for a 1200-pixel-wide figure
ZOOM_WINDOWS = 3
POWER_COLOR, MARKER_COLOR, WINDOW_COLOR = "#1f5fa8", "#d9822b", "#f2c14e"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def shunt_power_mw(shunt: Waveform, parameters: dict[str, Any]) -> np.ndarray:
    """Board power in mW from the shunt voltage, with the parameters the analysis recorded (no defaults).

    A trace whose analysis lacks its shunt or supply cannot be converted and is an error, not a guess.
    """
    from hil.power import power_series

    try:
        ohms, supply = float(parameters["shunt_ohms"]), float(parameters["supply_volts"])
    except (KeyError, TypeError, ValueError):
        raise HilError("power trace: its analysis does not record shunt_ohms and supply_volts") from None
    gain = float(parameters.get("amplifier_gain") or 1.0) if parameters.get("wiring") == "amplifier" else 1.0
    burden = bool(parameters.get("burden_correction", True))
    return power_series(shunt.volts, shunt_ohms=ohms, supply_volts=supply, gain=gain, burden_correction=burden) * 1e3


def envelope(t: np.ndarray, y: np.ndarray, points: int = TRACE_POINTS) -> tuple[np.ndarray, ...]:
    """(t, min, max, mean) per bin so a long capture plots fast without hiding its peaks."""
    if y.size <= 2 * points:
        return t, y, y, y
    bins = -(-y.size // points)  # ceil: at most `points` bins, and less than one bin of samples left over
    points = y.size // bins
    n = bins * points
    shaped = y[:n].reshape(points, bins)
    centres = t[:n].reshape(points, bins).mean(axis=1)
    return centres, shaped.min(axis=1), shaped.max(axis=1), shaped.mean(axis=1)


def _panel(ax, t_ms: np.ndarray, power: np.ndarray, marker: np.ndarray | None,
           windows: list[tuple[float, float]], title: str, legend: bool) -> None:
    """One panel: power envelope, windows shaded, marker on a second y axis."""
    tt, lo, hi, mean = envelope(t_ms, power)
    shown = np.array([(s, e) for s, e in windows if e >= t_ms[0] and s <= t_ms[-1]]).reshape(-1, 2)
    if shown.size:  # every window as one polygon in (data x, axes y): one artist however many windows
        xs = np.repeat(shown, 2, axis=1).ravel()
        ys = np.tile([0.0, 1.0, 1.0, 0.0], len(shown))
        ax.fill_between(xs, 0, ys, color=WINDOW_COLOR, alpha=0.35, lw=0, transform=ax.get_xaxis_transform())
    ax.fill_between(tt, lo, hi, color=POWER_COLOR, alpha=0.3, lw=0)
    ax.plot(tt, mean, color=POWER_COLOR, lw=0.8, label="power (mW)")
    ax.set_xlim(t_ms[0], t_ms[-1])
    ax.set_ylim(0, float(np.max(hi)) * 1.12)
    ax.set_xlabel("time from trigger (ms)")
    ax.set_ylabel("board power (mW)", color=POWER_COLOR)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if marker is not None:
        twin = ax.twinx()
        mt, _, mhi, _ = envelope(t_ms, marker)
        twin.plot(mt, mhi, color=MARKER_COLOR, lw=0.7, drawstyle="steps-mid", label="marker (V)")
        twin.set_ylabel("marker GPIO (V)", color=MARKER_COLOR)
        twin.set_ylim(-0.3, max(3.3, float(np.max(marker))) * 1.9)  # marker mid-height, clear of the power
    if legend:
        from matplotlib.patches import Patch

        handles = [ax.lines[0], Patch(color=WINDOW_COLOR, alpha=0.35, label="inference window (marker)")]
        if marker is not None:
            handles.append(twin.lines[0])
        ax.figure.legend(handles=handles, fontsize=8, loc="lower center", ncol=3, frameon=False)


def power_trace(variant: str, shunt_path: Path, marker_path: Path | None, power_path: Path | None,
                out: Path, *, simulated: bool) -> Path:
    """Whole capture on the left, a zoom on the first inference windows on the right."""
    shunt = Waveform.load(shunt_path)
    marker = Waveform.load(marker_path) if marker_path is not None else None
    analysis = json.loads(power_path.read_text()) if power_path is not None else {}
    power = shunt_power_mw(shunt, analysis.get("parameters") or {})
    t_ms = shunt.time * 1e3
    windows = [(w["start_s"] * 1e3, w["end_s"] * 1e3) for w in analysis.get("windows") or []]
    mv = marker.volts if marker is not None and len(marker) == len(shunt) else None

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    energy = (analysis.get("energy_per_inference_mj") or {}).get("mean")
    figures = f"{analysis.get('n_inferences', len(windows))} windows"
    if energy is not None:
        figures += f", {energy:.4g} mJ/inference, average {analysis.get('avg_power_mw', math.nan):.1f} mW"
    _panel(axes[0], t_ms, power, mv, windows, f"whole capture: {figures}", legend=True)
    if windows:
        first = windows[: ZOOM_WINDOWS]
        pad = max(0.25 * (first[0][1] - first[0][0]), 5 * shunt.dt * 1e3)
        lo_ms, hi_ms = first[0][0] - pad, first[-1][1] + pad
        keep = (t_ms >= lo_ms) & (t_ms <= hi_ms)
        if keep.sum() > 2:
            _panel(axes[1], t_ms[keep], power[keep], None if mv is None else mv[keep], windows,
                   "zoom: first inference window" + ("s" if len(first) > 1 else ""), legend=False)
    else:
        axes[1].text(0.5, 0.5, "no inference window found", ha="center", va="center")
        axes[1].set_axis_off()
    sim = " — SIMULATED" if simulated else ""
    fig.suptitle(f"{variant}: power trace{sim}", fontsize=11, color="#b00020" if simulated else "black")
    fig.subplots_adjust(left=0.06, right=0.94, bottom=0.22, top=0.86, wspace=0.32)  # fixed: no tight_layout cost
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower energy, higher accuracy), by rising energy."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


LABEL_OFFSETS = ((6, 4, "left", "bottom"), (6, -4, "left", "top"), (-6, 4, "right", "bottom"),
                 (-6, -4, "right", "top"), (0, 9, "center", "bottom"), (0, -9, "center", "top"))


def _place_labels(ax, groups: dict[tuple[float, float], list[str]]) -> None:
    """Name each point, trying a few offsets so that labels do not overlap (greedy, left to right)."""
    renderer = ax.figure.canvas.get_renderer()
    placed = []
    for (px, py), members in sorted(groups.items()):
        for dx, dy, ha, va in LABEL_OFFSETS:
            label = ax.annotate("\n".join(members), (px, py), xytext=(dx, dy), textcoords="offset points",
                                fontsize=7, ha=ha, va=va)
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(other) for other in placed):
                break
            if (dx, dy) != LABEL_OFFSETS[-1][:2]:
                label.remove()  # keep the last try even if it overlaps: a name is never dropped
        placed.append(box)


def pareto(rows: list[tuple[str, float, float]], out: Path, *, chosen: str | None, simulated: bool) -> Path:
    """Accuracy on the device against energy per inference, the Pareto front drawn and every point named."""
    plt = _pyplot()
    names = [r[0] for r in rows]
    pts = [(r[1], r[2]) for r in rows]
    front = pareto_front(pts)
    fig, ax = plt.subplots(figsize=(8, 5))
    x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    ax.scatter(x, y, s=28, color="#888888", zorder=2, label="variant")
    fx, fy = x[front], y[front]
    ax.step(fx, fy, where="post", color="#b00020", lw=1.2, zorder=1)
    if chosen in names:
        i = names.index(chosen)
        ax.scatter([x[i]], [y[i]], s=320, marker="*", color="#2e7d32", zorder=3, label=f"chosen: {chosen}")
    ax.scatter(fx, fy, s=40, color="#b00020", zorder=4, label="Pareto front")
    groups: dict[tuple[float, float], list[str]] = {}  # variants with the same figures share one label
    for i, name in enumerate(names):
        groups.setdefault((float(x[i]), float(y[i])), []).append(name)
    if x.size and x.min() > 0 and x.max() / x.min() > 8:
        ax.set_xscale("log")
    ax.margins(x=0.18, y=0.12)
    _place_labels(ax, groups)
    ax.set_xlabel("energy per inference (mJ)  — lower is better")
    ax.set_ylabel("accuracy on the device (%)  — higher is better")
    sim = " — SIMULATED energy" if simulated else ""
    ax.set_title(f"Accuracy vs energy per inference{sim}", fontsize=11,
                 color="#b00020" if simulated else "black")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def trend(metric: str, unit: str, history: Any, run_ids: list[int], changes: list[Any], out: Path, *,
          current_run: int, branch: str | None, simulated: bool) -> Path:
    """One metric over the last runs: each variant in % of its own median, change points and this run marked.

    Relative values put a 1 mJ and a 30 mJ variant on one scale, so a 5 % step shows whatever the variant;
    the drift shared by all variants of a night is drawn once and taken out of the variants' lines, as
    `hil.gate.changepoints` takes it out before testing."""
    from hil.gate.changepoints import shared_drift

    plt = _pyplot()
    frame = history[history["metric"] == metric]
    table = frame.pivot_table(index="run_id", columns="variant", values="value", aggfunc="last")
    table = table.reindex(run_ids)
    x = np.arange(len(run_ids))
    fig, ax = plt.subplots(figsize=(12, 4.6))
    values = table.to_numpy(float)
    relative = bool(np.nanmin(values) > 0)
    if relative:  # percent of each variant's median, the night drift shared by all variants taken out
        logs = np.log(values)
        drift = shared_drift(logs) if table.shape[1] >= 3 else np.zeros(len(run_ids))
        shown = 100 * np.expm1(logs - drift[:, None] - np.nanmedian(logs, axis=0))
        if drift.any():
            ax.plot(x, 100 * np.expm1(drift), color="#555555", lw=2.2, ls="--", alpha=0.6, zorder=1,
                    label="night drift (median of variants)")
    else:
        shown = values
    colors = plt.get_cmap("tab20" if table.shape[1] > 10 else "tab10")
    color_of = {}
    for i, variant in enumerate(table.columns):
        color_of[variant] = colors(i % colors.N)
        ax.plot(x, shown[:, i], marker="o", ms=3, lw=1.1, color=color_of[variant], label=variant, zorder=2)
    if current_run in run_ids:
        here = run_ids.index(current_run)
        ax.axvspan(here - 0.4, here + 0.4, color=WINDOW_COLOR, alpha=0.45, lw=0, zorder=0,
                   label=f"this run ({current_run})")
    for c in (c for c in changes if c.metric == metric and c.variant in color_of):
        at = run_ids.index(c.run_id_after)
        y = shown[at, list(table.columns).index(c.variant)]
        style = "-" if c.confirmed else ":"
        ax.axvline(at - 0.5, color=color_of[c.variant], lw=1.4, ls=style, zorder=1)
        change = c.size_pct if math.isfinite(c.size_pct) else c.after - c.before
        ax.plot([at], [y], marker="v" if change < 0 else "^", ms=11, color=color_of[c.variant],
                markeredgecolor="black", zorder=4)
        size = f"{c.size_pct:+.1f} %" if math.isfinite(c.size_pct) else f"{change:+.4g} {unit}".rstrip()
        text = f"{c.variant} {size}" + ("" if c.confirmed else " (suspected)")
        ax.annotate(text, (at - 0.5, 1.0), xycoords=("data", "axes fraction"), xytext=(-3, -3),
                    textcoords="offset points", rotation=90, fontsize=7, ha="right", va="top")
    step = max(1, len(run_ids) // 20)
    ax.set_xticks(x[::step], [str(r) for r in run_ids[::step]], fontsize=8)
    ax.set_xlim(-0.6, len(run_ids) - 0.4)
    ax.set_xlabel(f"run (branch {branch or '–'}, oldest left)")
    if relative:
        ax.set_ylabel("% from the variant's median\n(night drift removed)")
        ax.axhline(0, color="#888888", lw=0.6)
    else:
        ax.set_ylabel(f"{metric}{' (' + unit + ')' if unit else ''}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    sim = " — SIMULATED" if simulated else ""
    ax.set_title(f"{metric}{' (' + unit + ')' if unit else ''} over the last {len(run_ids)} runs{sim}; "
                 "change points marked (solid: confirmed, dotted: suspected)", fontsize=10,
                 color="#b00020" if simulated else "black")
    fig.subplots_adjust(left=0.09, right=0.80, bottom=0.13, top=0.90)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
