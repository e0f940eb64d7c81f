"""The report's tables as plain rows of strings: the main results table, the ranking and results.csv.

Rendering (markdown, HTML, terminal text) lives in `hil.report.document`; these functions only choose
columns and format figures with their units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hil.report.data import ReportData, VariantResult, is_skipped, unit

CSV_COLUMNS = ("variant", "metric", "value", "unit", "valid", "reason", "trials", "spread",
               "budget_min", "budget_max", "verdict", "simulated")  # fmt: skip
FORMATS = {"ms": ".2f", "mW": ".1f", "mJ": ".4g", "µJ": ",.0f", "inf/s": ".3f", "KB": ".1f", "%": ".2f", "": ".4f"}
SPREAD_METRICS = ("latency_ms", "power_mw", "energy_mj", "dynamic_power_mw")
MISSING = "–"


@dataclass
class Table:
    """A titled table of strings with optional footnotes."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def number(value: float | None, unit_name: str) -> str:
    """A figure formatted for its unit, or a dash."""
    if value is None or not math.isfinite(value):
        return MISSING
    return format(value, FORMATS.get(unit_name, ".4g"))


def figure(v: VariantResult, name: str, notes: list[str] | None = None) -> str:
    """A measured figure with its spread over trials; 'invalid' (reason as a note) or a dash when absent."""
    m = v.measurements.get(name)
    if m is None:
        return MISSING
    if is_skipped(m):
        return MISSING  # not measurable by design; the reason is in the budgets column
    if not m.valid or m.value is None:
        if notes is not None:
            notes.append(f"{v.name} {name} invalid: {m.reason or 'no reason given'}")
        return "invalid"
    text = number(m.value, unit(name, m))
    spread = getattr(m, "spread", None)
    if name in SPREAD_METRICS and spread and (getattr(m, "trials", 0) or 0) > 1 and math.isfinite(spread):
        decimals = len(text.partition(".")[2])
        half = f"{spread / 2:.{decimals}f}"  # half the max - min range over trials, to the value's precision
        if float(half) > 0:
            text += f" ±{half}"
    return text


def _factory_kb(v: VariantResult, key: str, measured: str | None = None) -> str:
    raw = v.factory.get(key)
    if raw is not None and not (isinstance(raw, float) and math.isnan(raw)):
        return number(float(raw) / 1024, "KB")
    return figure(v, measured) if measured else MISSING


def _host_accuracy(v: VariantResult) -> str:
    if "accuracy_host" in v.measurements:
        return figure(v, "accuracy_host")
    acc = v.factory.get("accuracy")
    return MISSING if acc is None else number(100 * float(acc), "%")


def failed_budget(v: VariantResult, name: str) -> str:
    """Why a budget failed, as its verdict says it ('energy_mj = 2.410 mJ exceeds budget max 2.000 mJ')."""
    verdict = v.verdicts.get(name)
    if verdict is not None and verdict.message:
        return verdict.message.removeprefix(f"{v.name} ").removeprefix(f"{v.name}: ")
    m = v.measurements.get(name)
    return f"{name} invalid: {m.reason}" if m is not None and not m.valid else f"{name} not measured"


def budget_summary(v: VariantResult, width: int = 0) -> str:
    """'pass 8/8', 'FAIL 1/8: energy_mj 2.41 > max 2 mJ' or 'skipped: <reason>' (cut to `width`)."""
    if v.skip_reason is not None:
        text = f"skipped: {v.skip_reason}"
    elif not v.verdicts and not v.budgets:
        text = "no budgets"
    else:
        failures = v.failures
        total = len(set(v.verdicts) | set(v.budgets))
        if failures:
            text = f"FAIL {len(failures)}/{total}: " + "; ".join(failed_budget(v, k) for k, _ in failures)
        else:
            skipped = sum(1 for x in v.verdicts.values() if x.outcome == "skipped")
            text = f"pass {total - skipped}/{total}" + (f" ({skipped} skipped)" if skipped else "")
    return text if not width or len(text) <= width else text[: width - 1] + "…"


MAIN_COLUMNS = ("variant", "size KB", "gzip KB", "latency ms", "p95 ms", "power mW", "energy/inf mJ",
                "dyn. power mW", "acc. host %", "acc. device %", "arena KB", "budgets")  # fmt: skip


def main_table(data: ReportData, *, verdict_width: int = 90) -> Table:
    """The reference study's table (size, latency, power) extended with energy, accuracy, arena, verdicts."""
    notes: list[str] = []
    rows = []
    for v in data.variants:
        rows.append([
            v.name, _factory_kb(v, "size_bytes", "flash_kb"), _factory_kb(v, "gzip_bytes"),
            figure(v, "latency_ms", notes), figure(v, "latency_p95_ms", notes), figure(v, "power_mw", notes),
            figure(v, "energy_mj", notes), figure(v, "dynamic_power_mw", notes), _host_accuracy(v),
            figure(v, "accuracy", notes), _arena(v, notes), budget_summary(v, verdict_width),
        ])
    if not rows:
        notes.append(f"run {data.run.id} recorded no measurement ({data.run.status})")
    sim = " (simulated)" if data.simulated else ""
    return Table(f"Results per variant{sim}", list(MAIN_COLUMNS), rows, notes)


def _arena(v: VariantResult, notes: list[str]) -> str:
    return figure(v, "arena_kb", notes) if "arena_kb" in v.measurements else _factory_kb(v, "arena_bytes")


def meter_table(data: ReportData) -> Table | None:
    """Energy per inference from the scope and from the power meter on the same runs, where both measured."""
    rows = [[v.name, figure(v, "energy_mj"), figure(v, "meter_energy_mj"), figure(v, "meter_vs_scope_energy_pct")]
            for v in data.variants if "meter_energy_mj" in v.measurements]
    if not rows:
        return None
    sim = " (simulated)" if data.simulated else ""
    return Table(f"Scope and power meter on the same runs{sim}",
                 ["variant", "scope energy/inf mJ", "meter energy/inf mJ", "meter − scope %"], rows,
                 [f"meter: {data.meta.get('meter_idn') or '–'}; on a real bench the two should agree within the "
                  "meter's stated accuracy plus the scope's current resolution"])


def runner_table(data: ReportData) -> Table | None:
    """The MLPerf Tiny runner's figures (inferences per second, µJ per inference) beside ours, where measured."""
    rows = [[v.name, figure(v, "latency_ms"), figure(v, "inferences_per_s"), figure(v, "energy_mj"),
             figure(v, "energy_uj")] for v in data.variants if "inferences_per_s" in v.measurements]
    if not rows:
        return None
    sim = " (simulated)" if data.simulated else ""
    from hil.dut.mlperf_tiny import HELLO_PROTOCOL

    mlperf = data.meta.get("protocol") == HELLO_PROTOCOL
    on = ("timestamp windows of back-to-back inferences, so the loop between two inferences counts" if mlperf
          else "the board's Invoke() windows, so the idle gaps between inferences do not count")
    return Table(f"MLPerf Tiny figures{sim}", ["variant", "latency ms", "inferences/s", "energy/inf mJ",
                                               "energy/inf µJ"], rows,
                 [f"the runner's definitions: each window's N over its time and its energy over N, then the median "
                  f"of windows; taken here over {on} (docs/mlperf-tiny.md, \"Figures\")"])


def profile_table(name: str, profile: Any, latency_ms: float | None, simulated: bool) -> Table:
    """One variant's per-layer profile: each operator's time and share, then the overhead and the total, which is
    the whole inference; the measured latency in the note beside it."""
    from hil.profiling.layers import HEADERS

    measured = f"; the run's latency: {latency_ms * 1e3:,.1f} µs" if latency_ms is not None else ""
    return Table(f"{name}: per-layer profile{' (simulated)' if simulated else ''}", list(HEADERS), profile.rows(),
                 [f"{profile.source}, one inference{measured}"])


def profile_summary_table(data: ReportData) -> Table | None:
    """Per variant: the costliest layer and its share, and the profile's total against the measured latency."""
    rows = []
    for v in data.variants:
        prof = data.profile(v.name)
        if prof is None or not prof.layers:
            continue
        top = max(prof.layers, key=lambda t: t.us)
        share = 100 * top.us / prof.total_us if prof.total_us else math.nan
        rows.append([v.name, f"{top.index} {top.op}", top.detail, f"{share:.1f}", number(prof.total_us / 1e3, "ms"),
                     figure(v, "latency_ms")])
    if not rows:
        return None
    sim = " (simulated)" if data.simulated else ""
    return Table(f"Where the time goes{sim}", ["variant", "costliest layer", "shape", "% of inference",
                                                "profile total ms", "latency ms"], rows)


def layer_change_table(variant: str, baseline_run: int, changes: list[Any], simulated: bool,
                       limit: int = 12) -> Table:
    """A regressed variant's per-layer change against a baseline run's profile, largest changes first."""
    rows = [[str(c.index) if c.index >= 0 else "", c.op, f"{c.baseline_us:,.1f}", f"{c.value_us:,.1f}",
             f"{c.change_us:+,.1f}", f"{c.change_pct:+.1f}"] for c in changes[:limit]]
    notes = [f"{len(changes) - limit} smaller changes not shown"] if len(changes) > limit else []
    return Table(f"{variant}: per-layer change against run {baseline_run}{' (simulated)' if simulated else ''}",
                 ["#", "op", "baseline µs", "this run µs", "change µs", "change %"], rows, notes)


def lab_tables(data: ReportData) -> list[Table]:
    """A shared-lab run: where each variant was measured (place, exporter host, board), and each place's share,
    with the places lost and why, and the measurements cut short (run meta `lab`)."""
    lab = data.meta.get("lab")
    if not lab:
        return []
    where = lab.get("variants") or {}
    rows = [[v, w.get("place", ""), w.get("host", ""), w.get("board_id", ""), f"{w.get('seconds', 0):.1f}"]
            for v, w in sorted(where.items())]
    places = [[n, str(p.get("items", 0)), f"{100 * p.get('busy_fraction', 0):.1f}", p.get("lost") or "–"]
              for n, p in sorted((lab.get("places") or {}).items())]
    notes = [f"cut: {c['variant']} on {c['place']} ({c['reason']}); measured again on another place, nothing of the "
             "cut attempt kept" for c in lab.get("cut") or []]
    overhead_ms = 1e3 * lab.get("dispatch_overhead_s", 0)
    notes.append(f"coordinator {lab.get('coordinator')}; dispatch overhead {overhead_ms:.0f} ms per variant; "
                 f"wall {lab.get('wall_s', 0):.1f} s")
    return [Table("Where each variant was measured", ["variant", "place", "exporter host", "board", "seconds"], rows),
            Table("Lab places", ["place", "variants", "busy %", "lost (why)"], places, notes)]


def ranking_table(data: ReportData) -> Table | None:
    """Variants by the corrected objective, with the reference study's objective and the chosen variant."""
    r = data.ranking
    if r is None:
        return None
    ref_order = {n: i + 1 for i, n in enumerate(r.table.sort_values("objective_reference", kind="stable")
                                                ["variant"])}
    rows = []
    for i, row in enumerate(r.table.to_dict("records"), 1):
        mark = "**chosen**" if row["variant"] == r.chosen else ""
        rows.append([
            str(i), row["variant"], number(row["size_bytes"] / 1024, "KB"), number(row["latency_ms"], "ms"),
            number(row["accuracy"], "%"), number(row["energy_mj"], "mJ"), f"{row['objective']:+.3f}",
            f"{row['objective_reference']:+.3f} (#{ref_order[row['variant']]})",
            "yes" if row["passes_budgets"] else "no", mark,
        ])
    sim = " (simulated)" if data.simulated else ""
    headers = ["#", "variant", "size KB", "latency ms", "acc. device %", "energy/inf mJ", "corrected L",
               "study's L (rank)", "passes budgets", ""]
    return Table(f"Ranking by the corrected objective{sim}", headers, rows, [r.note] if r.note else [])


def csv_rows(data: ReportData) -> list[dict[str, Any]]:
    """One row per variant × metric, with budget limits and verdicts (results.csv)."""
    out = []
    for v in data.variants:
        names = list(v.measurements) + [k for k in (*v.budgets, *v.verdicts) if k not in v.measurements]
        for name in dict.fromkeys(names):
            m = v.measurements.get(name)
            limits = v.budgets.get(name, {})
            verdict = v.verdicts.get(name)
            out.append({
                "variant": v.name, "metric": name,
                "value": "" if m is None or m.value is None else m.value,
                "unit": unit(name, m), "valid": bool(m is not None and m.valid),
                "reason": (m.reason if m is not None else (verdict.message if verdict else "")) or "",
                "trials": "" if m is None else getattr(m, "trials", ""),
                "spread": "" if m is None or getattr(m, "spread", None) is None else m.spread,
                "budget_min": "" if limits.get("min") is None else limits["min"],
                "budget_max": "" if limits.get("max") is None else limits["max"],
                "verdict": verdict.outcome if verdict else "", "simulated": data.simulated,
            })
        if not names and v.skip_reason:
            out.append({**dict.fromkeys(CSV_COLUMNS, ""), "variant": v.name, "valid": False,
                        "reason": v.skip_reason, "verdict": "skipped", "simulated": data.simulated})
    return out


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run as a formula: text starting with =, +, -, @, tab or CR gets a
    leading single quote (OWASP, CSV injection); numbers stay numbers."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def text_table(table: Table) -> str:
    """A table as aligned plain text (the pytest terminal summary)."""
    cells = [table.headers, *table.rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(table.headers))]
    numeric = [all(_looks_numeric(r[i]) for r in table.rows) for i in range(len(table.headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric,
                                                                               strict=True)).rstrip()

    rule = "-" * len(line(table.headers))
    return "\n".join([table.title, rule, line(table.headers), rule, *map(line, table.rows), rule])


def _looks_numeric(text: str) -> bool:
    head = text.split(" ")[0].replace(",", "").lstrip("+-")
    return head in (MISSING, "invalid", "") or head.replace(".", "", 1).isdigit()


def gate_failures_table(gate: Any, simulated: bool) -> Table:
    """The gate's rows that are not plainly ok: failing, INCONCLUSIVE, improved, or the shared shift unresolved,
    each with its change and interval (hil.gate.GateResult)."""
    rows = [[r.variant if r.variant != "*" else "all (shared shift)", r.metric, number(r.baseline, r.unit),
             number(r.value, r.unit), r.change_text(), r.tolerance or MISSING, r.verdict, r.reason or ""]
            for r in gate.rows if r.verdict not in ("ok", "skipped")]
    headers = ["variant", "metric", "baseline", "this run", "change [interval]", "tolerance", "verdict", "reason"]
    return Table(f"Gate: figures not plainly ok{' (simulated)' if simulated else ''}", headers, rows)
