"""`hil measure` on a shared lab: the bench's `lab:` places reserved through labgrid, the selected variants handed
to them as they become free (hil.lab.queue), one campaign per place recording into the same run.

A variant whose place is lost mid-measurement is measured again on another place, and every figure of the cut
attempt is marked invalid first. Each variant's place, exporter host and board identity go into the run's meta
(`lab.variants`), the lost places and the queue's figures into `lab`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from hil.budgets import Verdict
from hil.campaign import Campaign, CampaignOptions, Finish, Skipped
from hil.errors import USER_ERRORS, HilError
from hil.lab.places import Lab, LabPlace
from hil.lab.queue import Dispatcher, PlaceLost, QueueReport, Work
from hil.lab.station import LabStation, place_spec

LOST_WAIT_S = 3.0  # after a failure, how long the coordinator is watched for the place's exporter going away


def run_on_lab(options: CampaignOptions, *, progress: Callable[[str], None] = print
               ) -> tuple[Finish, dict[str, dict[str, Verdict]], QueueReport]:
    """Measure every selected variant on the lab's places, judge, record, report: what `hil measure` does on a
    bench with `lab:`."""
    main = Campaign(options, progress=progress)
    selected, budgets = main.plan()
    bench = main.bench
    if bench.lab is None:
        raise HilError(f"{options.bench} has no lab: section; add one (README, 'Share a lab')")
    options.check_outputs()
    main.artifacts()  # one factory build, before any place's thread starts
    run_id = main.recorder.run_id  # the run exists before the places' campaigns join it
    verdicts: dict[str, dict[str, Verdict]] = {}
    campaigns: dict[str, Campaign] = {}
    lock = threading.Lock()
    status = "passed"
    lab: Lab

    def campaign_for(place: LabPlace) -> Campaign:
        with lock:
            c = campaigns.get(place.name)
            if c is None:
                station = LabStation(place_spec(bench, place), place).start()
                c = Campaign(options, session=main.session, worker=len(campaigns) + 1, station=station,
                             progress=lambda s, p=place.name: progress(f"{p}: {s}"))
                c.adopt(main)
                campaigns[place.name] = c
            return c

    def measure(variant: str, place: LabPlace) -> dict[str, Verdict]:
        c = campaign_for(place)
        try:
            figures = c.measure(variant)
        except Skipped as exc:
            return {m: Verdict("skipped", str(exc)) for m in budgets.for_variant(variant)}
        except USER_ERRORS as exc:
            reason = lab.lost(place, wait_s=LOST_WAIT_S)
            if reason is not None:  # the place went away, not the variant: nothing of this attempt stands
                c.invalidate(variant, f"measurement cut: {reason}")
                raise PlaceLost(reason) from None
            return {m: Verdict("failed", str(exc)) for m in budgets.for_variant(variant)}
        return c.verdicts(variant, figures)

    try:
        with Lab(bench.lab, progress=progress) as lab:
            places = lab.reserve()
            progress(f"lab: {len(places)} place(s) to start with: {', '.join(p.name for p in places)}")
            dispatcher = Dispatcher(measure, max_failures=bench.lab.max_failures, more_places=lab.more,
                                    on_place_done=lambda p: lab.release_place(p.name),
                                    on_place_lost=lambda p, why: progress(f"lab: {p.name} leaves the run: {why}"),
                                    wait_for_places_s=bench.lab.wait_s, progress=progress)
            report = dispatcher.run([Work(v, v) for v in longest_first(main, selected)], places)
    except BaseException as exc:  # what was measured stays recorded; the run is no pass
        for c in campaigns.values():
            c.close()
        main.close()
        main.finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        raise
    for c in campaigns.values():
        c.close()
    for outcome in sorted(report.outcomes, key=lambda o: o.replica):
        if outcome.replica == 0 or outcome.key not in verdicts:
            verdicts[outcome.key] = outcome.result or {
                m: Verdict("failed", outcome.error or "no result") for m in budgets.for_variant(outcome.key)}
    for (variant, _replica), why in report.unfinished.items():
        if variant not in verdicts:
            verdicts[variant] = {m: Verdict("failed", f"not measured: {why}") for m in budgets.for_variant(variant)}
            main.recorder.record_missing(variant, list(budgets.for_variant(variant)), f"not measured: {why}",
                                         skipped=False)
    for variant, by_metric in verdicts.items():
        for metric, verdict in by_metric.items():
            main.recorder.record_outcome(variant, metric, verdict, test="hil measure")
        if any(v.failed for v in by_metric.values()):
            status = "failed"
    main.recorder.store.update_meta(run_id, lab=lab_meta(report, bench.lab.coordinator))
    main.close()
    return main.finish(status), verdicts, report


def longest_first(campaign: Campaign, variants: list[str]) -> list[str]:
    """The variants in the order the queue should start them: the slowest first (its latency on the virtual
    board's cost model for the bench's chip, a measure of how long its accuracy stream and captures take), so
    that no place is left with a long one at the end while the others wait; those TFLM cannot run last."""
    from hil.profiling import estimate

    board = campaign.bench.boards[0]
    arts = campaign.artifacts()

    def cost(variant: str) -> float:
        art = arts[variant]
        if not art.tflm_ok:
            return -1.0
        try:
            return estimate(art.model_bytes(), chip=board.chip, kernels=board.kernels).total_us
        except USER_ERRORS:  # a chip the cost model does not know: no order among those
            return 0.0

    costs = {v: cost(v) for v in variants}
    return sorted(variants, key=lambda v: -costs[v])


def lab_meta(report: QueueReport, coordinator: str) -> dict[str, Any]:
    """What the run's meta keeps of the lab: where each variant was measured, each place's busy fraction, the
    places lost and why, the attempts cut, the dispatch overhead."""
    return {
        "coordinator": coordinator,
        "variants": {f"{o.key}#{o.replica}" if o.replica else o.key:
                     {"place": o.where.place, "host": o.where.host, "board_id": o.where.board_id,
                      "seconds": round(o.seconds, 3), "error": o.error} for o in report.outcomes},
        "places": {n: {"busy_fraction": round(s.busy_fraction, 4), "items": s.items, "lost": s.lost}
                   for n, s in report.places.items()},
        "cut": [{"variant": c.key, "place": c.where.place, "reason": c.reason} for c in report.cut],
        "dispatch_overhead_s": round(report.dispatch_overhead_s, 4),
        "wall_s": round(report.wall_s, 3),
    }
