"""`write_report`: report.md, report.html, results.csv and PNGs of one run, swapped into place whole."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil.errors import HilError
from hil.report import data as report_data
from hil.report import plots
from hil.report.document import (
    Banner,
    Block,
    Bullets,
    Folded,
    Gallery,
    Heading,
    Image,
    Paragraph,
    TableBlock,
    to_html,
    to_markdown,
)
from hil.report.study import study_table
from hil.report.tables import (
    CSV_COLUMNS,
    csv_cell,
    csv_rows,
    gate_failures_table,
    lab_tables,
    layer_change_table,
    main_table,
    meter_table,
    profile_summary_table,
    profile_table,
    ranking_table,
    runner_table,
    text_table,
)
from instruments.errors import InstrumentError

OWN_FILES = ("report.md", "report.html", "results.csv")  # plus every *.png; anything else is kept
SIMULATED_BANNER = ("SIMULATED RUN — latency, power and energy come from the virtual bench's model, "
                    "not from hardware. Accuracy, outputs and arena use are real TFLM figures.")


EMULATED_BANNER = ("EMULATED: the firmware ran in qemu-system-arm. Latencies are emulated instruction time "
                   "(-icount), not silicon time; no power was measured.")
# where the figures come from: (caption suffix, banner or None, one-line kind), chosen once by `_origin`
_ORIGINS = {
    "emulated": (" (emulated)", EMULATED_BANNER, "EMULATED (QEMU: instruction-count latency, no power)"),
    "simulated": (" (simulated)", SIMULATED_BANNER, "SIMULATED (virtual bench)"),
    "hardware": ("", None, "measured on hardware"),
}


def _origin(data: report_data.ReportData) -> tuple[str, str | None, str]:
    """Caption suffix, banner and kind of the run's figures: emulated (QEMU), simulated, or hardware."""
    return _ORIGINS["emulated" if data.meta.get("emulated") else "simulated" if data.simulated else "hardware"]


def _sim(data: report_data.ReportData) -> str:
    return _origin(data)[0]


_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def file_stem(name: str) -> str:
    """`name` as a safe file-name part: models/variants.yaml allows letters, digits, `-`, `_` and `.`, but a
    database may hold any name (an older or foreign run), so others become `_` plus a short hash of the name."""
    safe = _UNSAFE_FILE_CHARS.sub("_", name)[:100]
    if safe == name and not name.startswith((".", "-")) and name:
        return name
    return f"{safe.lstrip('.-')[:80] or 'variant'}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _when(stamp: str | None) -> str:
    """'2026-01-02 03:04:05 UTC' from a stored ISO time."""
    return f"{stamp[:10]} {stamp[11:19]} UTC" if stamp and len(stamp) >= 19 else (stamp or "–")


def run_phases(meta: dict[str, Any]) -> dict[str, float]:
    """Seconds per phase: `phases`, plus every `phases_<worker>` dict summed over workers."""
    total: dict[str, float] = {}
    for key, value in meta.items():
        if (key == "phases" or key.startswith("phases_")) and isinstance(value, dict):
            for phase, seconds in value.items():
                name = str(phase).removesuffix("_s")
                total[name] = total.get(name, 0.0) + float(seconds)
    return total



def _protocol_note(protocol: int | None) -> str:
    """The device protocol version, with a warning where its reply lines carried no CRC (version 1)."""
    from hil.dut.mlperf_tiny import HELLO_PROTOCOL

    if protocol is None:
        return ""
    if protocol == HELLO_PROTOCOL:
        return (", MLPerf Tiny protocol (its lines carry no CRC: the client checks each reply's form and byte "
                "counts; docs/mlperf-tiny.md)")
    if protocol < 2:
        return (f", protocol {protocol}: **reply lines carried no CRC**, so a byte corrupted on the serial link "
                "could pass unseen; flash firmware that speaks protocol 2")
    return f", protocol {protocol} (every line CRC-checked)"


def _header(data: report_data.ReportData, has_junit: bool) -> list[Block]:
    run, meta = data.run, data.meta
    suffix, banner, kind = _origin(data)
    blocks: list[Block] = [Heading(1, f"HIL run report — run {run.id}{suffix}")]
    if banner is not None:
        blocks.append(Banner(banner))
    phases = run_phases(meta)
    items = [
        f"**Run** {run.id}, {run.status}: started {_when(run.started_at)}, finished {_when(run.finished_at)}",
        f"**Commit** `{run.git_commit or '–'}` on branch `{run.git_branch or '–'}`",
        f"**Bench** {meta.get('bench_name') or run.bench}: board `{meta.get('board_id') or '–'}`, "
        f"scope `{meta.get('scope_idn') or '–'}`" + (f", meter `{meta['meter_idn']}`" if meta.get("meter_idn") else ""),
        f"**Firmware** `{meta.get('firmware') or '–'}`" + _protocol_note(meta.get("protocol")),
        f"**Figures** {kind}",
    ]
    if meta.get("faults"):
        items.append("**Faults injected** (virtual.faults, a recovery rehearsal) " + "; ".join(meta["faults"]))
    options = {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in (run.flags or {}).items()
               if k != "session" and v is not None}
    if options:
        items.append("**Options** " + ", ".join(f"`{k}={v}`" for k, v in sorted(options.items())))
    if phases:
        spent = ", ".join(f"{k} {s:.1f} s" for k, s in phases.items())
        items.append(f"**Time per phase** (summed over workers) {spent} (total {sum(phases.values()):.1f} s)")
    links = ["[results.csv](results.csv)"] + (["[junit.xml](junit.xml)"] if has_junit else [])
    items.append("**Files** " + ", ".join(links))
    return [*blocks, Bullets(items)]


def _results(data: report_data.ReportData) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"Results{_sim(data)}"), Paragraph(
        "The reference study's table (model size, average latency, average power) extended with energy per "
        "inference, dynamic power (inside minus outside the inference windows), accuracy on the host "
        "(tf.lite, factory) and on the device (test set streamed over the protocol), tensor arena and "
        "budget verdicts. Figures are medians over trials; ±x is half their range (max − min) across "
        "trials.")]
    blocks.append(TableBlock(main_table(data)))
    for extra in (meter_table(data), runner_table(data), *lab_tables(data)):
        if extra is not None:
            blocks.append(TableBlock(extra))
    details = []
    for v in data.variants:
        if v.skip_reason:
            details.append(f"**{v.name}** skipped: {v.skip_reason}")
        details += [f"**{v.name}** `{k}` failed: {msg or 'no message'}" for k, msg in v.failures]
    if details:
        blocks += [Heading(3, "Budget failures and skipped variants"), Bullets(details)]
    return blocks


def _profiles(data: report_data.ReportData) -> list[Block]:
    """Which layers cost what: a summary, then each variant's per-layer table folded (none profiled: nothing)."""
    summary = profile_summary_table(data)
    if summary is None:
        return []
    blocks: list[Block] = [Heading(2, f"Per-layer profile{_sim(data)}"), Paragraph(
        "One inference per variant through the board's `profile` command (TFLM's MicroProfiler on the firmware, "
        "the cost model on the virtual board), taken after the timed trials. Each table's rows add up to the "
        "whole inference: its operators, then the interpreter's overhead."), TableBlock(summary)]
    for v in data.variants:
        prof = data.profile(v.name)
        if prof is not None:
            table = profile_table(v.name, prof, v.value("latency_ms"), data.simulated)
            blocks.append(Folded(f"{v.name}: {len(prof.layers)} layers, {prof.total_us / 1e3:,.2f} ms",
                                 text_table(table) + "\n" + "\n".join(table.notes)))
    return blocks


def _study(data: report_data.ReportData) -> list[Block]:
    """The reference study's six variants, its published figures beside this run's (none: no section)."""
    table = study_table(data)
    if table is None:
        return []
    return [Heading(2, f"The reference study's six variants{_sim(data)}"), Paragraph(
        "Each of the study's variant names, the variant of this matrix it maps to, and the study's published "
        "size, latency and power beside this run's."), TableBlock(table)]


def _ranking(data: report_data.ReportData) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"Variant ranking{_sim(data)}")]
    table = ranking_table(data)
    r = data.ranking
    if table is None or r is None:
        return [*blocks, Paragraph(data.ranking_note or "No variant could be ranked.")]
    blocks.append(Paragraph(
        f"Corrected objective L = ΔS/S0 + ΔT/T0 + (A0 − A)/A0 + ΔE/E0 (size, latency on the board, "
        f"accuracy on the device, energy per inference; relative to `{r.reference}`, lower is better). "
        "The chosen variant is the best one that passes all its budgets."))
    blocks.append(TableBlock(table))
    chosen = f"**Chosen variant: {r.chosen}**" if r.chosen else "**No variant passes all its budgets.**"
    blocks.append(Paragraph(chosen))
    blocks.append(Paragraph(
        "For comparison, the reference study's objective L = ΔS/S0 + ΔT/T0 + ΔA/A0 adds the relative "
        "accuracy change with the wrong sign, so it rewards accuracy loss; it would pick "
        f"`{r.reference_choice}`."))
    return blocks


def _pareto(data: report_data.ReportData, folder: Path) -> list[Block]:
    rows = [(v.name, v.value("energy_mj"), v.value("accuracy")) for v in data.variants]
    rows = [r for r in rows if r[1] is not None and r[2] is not None]
    if not rows:
        return []
    chosen = data.ranking.chosen if data.ranking else None
    plots.pareto(rows, folder / "pareto.png", chosen=chosen, simulated=data.simulated)
    return [Heading(2, f"Accuracy vs energy per inference{_sim(data)}"),
            Image("pareto.png", f"Accuracy on the device against energy per inference{_sim(data)}; "
                                "the red line is the Pareto front.")]


def _baseline(data: report_data.ReportData) -> list[Block]:
    if data.gate is None:
        return []
    gate = data.gate
    w = gate.window
    blocks: list[Block] = [Heading(2, f"Merge gate against {len(w)} baseline run(s){_sim(data)}"),
                           Paragraph(f"**{gate.summary()}** (as `hil gate` reports it). Baseline: runs "
                                     f"{w[0].id}–{w[-1].id} of branch `{w[-1].git_branch}`. Each change is shown "
                                     "with its interval (percent for relative tolerances); a variant's change is "
                                     "net of the shift its session shared with every variant, which has its own "
                                     "row. Verdicts and their meaning: docs/results-and-gate.md.")]
    if any(r.verdict not in ("ok", "skipped") for r in gate.rows):
        blocks.append(TableBlock(gate_failures_table(gate, data.simulated)))
    for variant, (baseline_run, changes) in data.layer_changes.items():
        if changes is None:
            blocks.append(Paragraph(f"**{variant}** regressed; its profile and run {baseline_run}'s are of different "
                                    "operators, so no per-layer change can be shown."))
        else:
            blocks.append(TableBlock(layer_change_table(variant, baseline_run, changes, data.simulated)))
    blocks.append(Folded(f"every figure of run {data.run.id} against the baseline window ({len(gate.rows)} rows)",
                         gate.table()))
    return blocks


def trend_metrics(tolerances: Any) -> list[str]:
    """The gated metrics (tolerances as {metric: Tolerance} or tokens), else energy_mj and latency_ms."""
    if isinstance(tolerances, dict) and tolerances:
        return list(tolerances)
    if isinstance(tolerances, list | tuple) and tolerances:
        from hil.gate import parse_tolerances

        return list(parse_tolerances(list(tolerances)))
    return list(report_data.TREND_METRICS)


def _trends(data: report_data.ReportData, store: Any, folder: Path, metrics: list[str], last: int) -> list[Block]:
    """A plot per gated metric over the last runs of the branch and bench kind, change points marked."""
    run = data.run
    trend = report_data.load_trend(store, run, metrics, last)
    kind = "simulated" if data.simulated else "real-hardware"
    blocks: list[Block] = [Heading(2, f"Trends over the last {len(trend.run_ids)} runs{_sim(data)}")]
    if len(trend.run_ids) < 2 or not trend.metrics:
        return [*blocks, Paragraph(f"No trend: {len(trend.run_ids)} {kind} run(s) of branch "
                                   f"`{run.git_branch or '–'}` with {', '.join(metrics)} up to run {run.id}.")]
    blocks.append(Paragraph(
        f"Runs {trend.run_ids[0]}–{trend.run_ids[-1]}: the {kind} runs of branch `{run.git_branch or '–'}` up to "
        f"this run (highlighted). Each variant is drawn in percent of its own median over these runs. Change "
        "points come from `hil changes` (binary segmentation, the drift shared by all variants of a night "
        "cancelled): a solid line is a confirmed change, a dotted one a change in the newest run awaiting the "
        "next."))
    if trend.note:
        blocks.append(Paragraph(trend.note))
    for name in trend.metrics:
        file = f"trend-{name}.png"
        plots.trend(name, report_data.unit(name), trend.history, trend.run_ids, trend.changes, folder / file,
                    current_run=run.id, branch=run.git_branch, simulated=data.simulated)
        blocks.append(Image(file, f"{name} over runs {trend.run_ids[0]}–{trend.run_ids[-1]}, one line per "
                                  f"variant, change points marked{_sim(data)}."))
    if trend.changes:
        blocks.append(Bullets([f"`{c.describe()}`" for c in trend.changes]))
    elif not trend.note:
        blocks.append(Paragraph(f"No change point in {', '.join(trend.metrics)} over these runs."))
    return blocks


def _traces(data: report_data.ReportData, folder: Path) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"Power traces{_sim(data)}")]
    for v in data.variants:
        files = data.artifacts.get(v.name, {})
        if "trace_shunt" not in files:
            reason = v.skip_reason or "no saved capture"
            blocks.append(Paragraph(f"`{v.name}`: no power trace ({reason})."))
            continue
        name = f"trace-{file_stem(v.name)}.png"
        try:
            plots.power_trace(v.name, files["trace_shunt"], files.get("trace_marker"), files.get("power"),
                              folder / name, simulated=data.simulated)
        except (OSError, ValueError, KeyError, InstrumentError, HilError) as exc:
            blocks.append(Paragraph(f"`{v.name}`: power trace unreadable ({exc})."))
            continue
        blocks.append(Image(name, f"{v.name}: shunt power of one trial, inference windows shaded, "
                                  f"marker on the right axis{_sim(data)}."))
    return blocks


def _factory(data: report_data.ReportData, folder: Path) -> list[Block]:
    """The factory's ROC curves and weight histograms, as the run stored them when it measured each variant."""
    rocs: list[Image] = []
    hists: dict[str, Image] = {}
    for v in data.variants:
        files = data.artifacts.get(v.name, {})
        if "roc" in files:
            roc = f"roc-{file_stem(v.name)}.png"
            shutil.copyfile(files["roc"], folder / roc)
            rocs.append(Image(roc, f"{v.name}: per-class ROC curves (host)."))
        recipe = str(v.factory.get("recipe") or v.name.split("-")[0])
        if "weights" in files and recipe not in hists:
            weights = f"weights-{file_stem(recipe)}.png"
            shutil.copyfile(files["weights"], folder / weights)
            hists[recipe] = Image(weights, f"{recipe}: weight histograms before/after the recipe.")
    return [Heading(2, "Model factory figures (host, tf.lite on the test set)"),
            Heading(3, "Per-class ROC curves"), Gallery(rocs) if rocs else Paragraph("No ROC curves stored."),
            Heading(3, "Weight histograms"), *(list(hists.values()) or [Paragraph("No weight histograms stored.")])]


def _write_csv(data: report_data.ReportData, path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in csv_rows(data))


def _swap_in(final: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary sibling, move over what the report does not own (junit.xml, captures), then swap."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        if final.exists():
            for entry in final.iterdir():
                if entry.name not in OWN_FILES and entry.suffix != ".png" and not (tmp / entry.name).exists():
                    entry.rename(tmp / entry.name)
            final.rename(old)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def load_with_gate(store: Any, run: int | str, baseline: int | str | None, tolerances: Any) -> \
        report_data.ReportData:
    """The run's report data, plus the gate comparison with `baseline` when one is given.

    `tolerances`: {metric: hil.gate.Tolerance}, or tokens such as ["energy_mj=5%"], or None (none)."""
    data = report_data.load(store, run)
    if baseline is not None:
        from hil.gate import compare, parse_tolerances

        if tolerances is None or isinstance(tolerances, list | tuple):
            tolerances = parse_tolerances(list(tolerances or []))
        data.gate = compare(store, data.run.id, baseline, tolerances)
        data.baseline = data.gate.baseline.id
        data.layer_changes = _layer_changes(store, data)
    return data


def _layer_changes(store: Any, data: report_data.ReportData) -> dict[str, tuple[int, Any]]:
    """Per regressed variant with a profile: its per-layer change against the newest baseline run that profiled
    it (hil.profiling.layer_changes)."""
    from hil.profiling import LayerProfile, layer_changes

    regressed = dict.fromkeys(r.variant for r in data.gate.rows if r.verdict == "REGRESSION" and r.variant != "*")
    db_dir = Path(store.path).resolve().parent if getattr(store, "path", None) else None
    out = {}
    for variant in regressed:
        now = data.profile(variant)
        if now is None:
            continue
        for run in sorted(data.gate.window, key=lambda r: r.id, reverse=True):
            found = [report_data.resolve_path(a.path, db_dir) for a in store.artifacts(run.id, variant, "profile")]
            found = [p for p in found if p is not None]
            if found:
                out[variant] = (run.id, layer_changes(LayerProfile.read(found[0]), now))
                break
    return out


def write_report(store: Any, run: int | str = "latest", out_dir: str | Path = "reports/latest", *,
                 baseline: int | str | None = None, tolerances: Any = None,
                 trend_runs: int = report_data.TREND_RUNS) -> Path:
    """Write report.md, report.html, results.csv and the PNGs of `run` into `out_dir`; return its path.

    `trend_runs`: how many runs of the branch the trend plots show (0: no trends)."""
    data = load_with_gate(store, run, baseline, tolerances)
    gated = trend_metrics(tolerances)
    final = Path(out_dir)
    if final.exists() and not final.is_dir():
        raise HilError(f"{final}: exists and is not a folder; choose another --out")

    def fill(folder: Path) -> None:
        blocks = [*_header(data, (final / "junit.xml").is_file()), *_results(data), *_profiles(data), *_study(data),
                  *_ranking(data),
                  *_pareto(data, folder), *_baseline(data),
                  *(_trends(data, store, folder, gated, trend_runs) if trend_runs else []),
                  *_traces(data, folder), *_factory(data, folder)]
        (folder / "report.md").write_text(to_markdown(blocks))
        title = f"HIL run {data.run.id}{_sim(data)}"
        (folder / "report.html").write_text(to_html(blocks, folder, title))
        _write_csv(data, folder / "results.csv")

    _swap_in(final, fill)
    return final


def summary_table(store: Any, run: int | str = "latest") -> str:
    """The plain-text results table of the pytest terminal summary, with the chosen variant."""
    data = report_data.load(store, run)
    table = main_table(data, verdict_width=60)
    table.title = f"HIL run {data.run.id}: {table.title[0].lower()}{table.title[1:]}"
    lines = [text_table(table), *(f"  note: {n}" for n in table.notes)]
    if data.ranking is not None:
        chosen = data.ranking.chosen or "none passes all budgets"
        lines.append(f"chosen variant (best corrected objective among those passing all budgets): {chosen}")
    return "\n".join(lines)
