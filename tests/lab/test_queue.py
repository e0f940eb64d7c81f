"""The dispatcher on real threads with items that sleep: work goes to free places, replicas to different places,
a lost place's item is measured again elsewhere and nothing of the cut attempt is kept, failing places leave the
rotation with their reason."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from hil.lab.queue import Dispatcher, PlaceLost, Where, Work


@dataclass(frozen=True)
class P:
    name: str
    host: str = "h"
    board_id: str = ""


def sleeper(seconds: dict[str, float], log: list | None = None):
    """measure(payload, place): sleep the item's time, return who measured it."""
    lock = threading.Lock()

    def measure(key, place):
        t0 = time.monotonic()
        time.sleep(seconds[key])
        if log is not None:
            with lock:
                log.append((place.name, key, t0, time.monotonic()))
        return place.name

    return measure


def test_a_slow_item_does_not_hold_the_others_back():
    seconds = {"slow": 1.2, **{f"fast{i}": 0.2 for i in range(6)}}
    log: list = []
    report = Dispatcher(sleeper(seconds, log)).run([Work(k, k) for k in seconds], [P("a"), P("b")])
    assert not report.unfinished and not report.cut
    assert len(report.outcomes) == 7
    # a split in advance (a: slow + 3 fast, b: 3 fast) would take 1.8 s; the queue hands the fast ones to b
    assert report.wall_s < 1.6, report.wall_s
    by_place = {n: [k for p, k, *_ in log if p == n] for n in "ab"}
    assert by_place["a"] == ["slow"] and len(by_place["b"]) == 6
    for stats in report.places.values():
        assert stats.busy_fraction > 0.85, (stats.where.place, stats.busy_s, stats.active_s)
    assert report.dispatch_overhead_s < 0.05


def test_every_outcome_records_its_place_host_and_board():
    places = [P("a", "exp-0", "mac-a"), P("b", "exp-1", "mac-b")]
    report = Dispatcher(sleeper({"x": 0.05, "y": 0.05})).run([Work("x", "x"), Work("y", "y")], places)
    wheres = {o.where for o in report.outcomes}
    assert wheres <= {Where("a", "exp-0", "mac-a"), Where("b", "exp-1", "mac-b")}
    for o in report.outcomes:
        assert o.result == o.where.place and o.error is None


def test_replicas_go_to_different_places():
    seconds = {f"v{i}": 0.1 for i in range(4)}
    report = Dispatcher(sleeper(seconds)).run([Work(k, k, replicas=2) for k in seconds],
                                               [P("a"), P("b"), P("c")])
    groups = report.by_key()
    assert set(groups) == set(seconds)
    for key, outs in groups.items():
        assert [o.replica for o in outs] == [0, 1]
        assert len({o.where.place for o in outs}) == 2, key


def test_more_replicas_than_places_are_reported_unfinished():
    report = Dispatcher(sleeper({"v": 0.05})).run([Work("v", "v", replicas=3)], [P("a"), P("b")])
    assert len(report.outcomes) == 2
    assert list(report.unfinished) == [("v", 2)]
    assert "needs a place other than" in report.unfinished[("v", 2)]


def test_a_lost_place_item_is_measured_again_elsewhere_and_the_cut_attempt_is_not_kept():
    lost_at: dict[str, float] = {}

    def measure(key, place):
        time.sleep(0.15)
        if place.name == "bad" and key == "v1":
            lost_at["bad"] = time.monotonic()
            raise PlaceLost("exporter exp-9 went away")
        return f"{key}@{place.name}"

    gone = []
    report = Dispatcher(measure, on_place_lost=lambda p, why: gone.append((p.name, why))).run(
        [Work(f"v{i}", f"v{i}") for i in range(6)], [P("good"), P("bad")])
    assert not report.unfinished
    assert sorted(o.key for o in report.outcomes) == [f"v{i}" for i in range(6)]  # each once, all valid
    v1 = [o for o in report.outcomes if o.key == "v1"]
    assert len(v1) == 1 and v1[0].where.place == "good" and v1[0].result == "v1@good"
    assert [(c.key, c.where.place, c.reason) for c in report.cut] == [("v1", "bad", "exporter exp-9 went away")]
    assert report.lost == {"bad": "exporter exp-9 went away"} and gone == [("bad", "exporter exp-9 went away")]
    assert all(o.started + o.seconds <= lost_at["bad"] for o in report.outcomes if o.where.place == "bad")


def test_a_place_failing_n_times_in_a_row_leaves_the_rotation():
    calls = {"flaky": 0}

    def measure(key, place):
        time.sleep(0.05)
        if place.name == "flaky":
            calls["flaky"] += 1
            raise PlaceLost(f"board did not answer ({key})", permanent=False)
        return key

    report = Dispatcher(measure, max_failures=3).run([Work(f"v{i}", f"v{i}") for i in range(8)],
                                                     [P("ok"), P("flaky")])
    assert calls["flaky"] == 3 and len(report.cut) == 3
    assert report.lost["flaky"].startswith("3 failures in a row, the last: board did not answer")
    assert sorted(o.key for o in report.outcomes) == sorted(f"v{i}" for i in range(8))
    assert {o.where.place for o in report.outcomes} == {"ok"}


def test_a_success_resets_the_failure_count():
    seen = {"n": 0}

    def measure(key, place):
        time.sleep(0.02)
        if place.name == "a":
            seen["n"] += 1
            if seen["n"] % 2:  # every other measurement on a fails
                raise PlaceLost("hiccup", permanent=False)
        return key

    report = Dispatcher(measure, max_failures=2).run([Work(f"v{i}", f"v{i}") for i in range(10)], [P("a"), P("b")])
    assert "a" not in report.lost
    assert len(report.outcomes) == 10


def test_an_item_error_is_its_outcome_not_a_retry():
    def measure(key, place):
        if key == "broken":
            raise ValueError("the board refused the model")
        return key

    report = Dispatcher(measure).run([Work("broken", "broken"), Work("ok", "ok")], [P("a")])
    errors = {o.key: o.error for o in report.outcomes}
    assert errors == {"broken": "ValueError: the board refused the model", "ok": None}
    assert not report.cut and not report.lost


def test_every_place_lost_leaves_the_rest_unfinished():
    def measure(key, place):
        raise PlaceLost(f"{place.name} unplugged")

    report = Dispatcher(measure).run([Work("v0", "v0"), Work("v1", "v1")], [P("a"), P("b")])
    assert not report.outcomes
    assert set(report.lost) == {"a", "b"}
    assert set(report.unfinished.values()) == {"no place left in the rotation"}


def test_places_that_join_later_take_queued_work():
    late = [P("late")]

    def more():
        return [late.pop()] if late and time.monotonic() - t0 > 0.3 else []

    t0 = time.monotonic()
    report = Dispatcher(sleeper({f"v{i}": 0.2 for i in range(8)}), more_places=more).run(
        [Work(f"v{i}", f"v{i}") for i in range(8)], [P("early")])
    assert {o.where.place for o in report.outcomes} == {"early", "late"}
    assert len(report.outcomes) == 8


def test_done_places_are_handed_back():
    done = []
    Dispatcher(sleeper({"v": 0.05}), on_place_done=lambda p: done.append(p.name)).run([Work("v", "v")],
                                                                                      [P("a"), P("b")])
    assert sorted(done) == ["a", "b"]


def test_bad_replicas():
    with pytest.raises(ValueError, match="replicas"):
        Dispatcher(lambda k, p: k).run([Work("v", replicas=0)], [P("a")])
