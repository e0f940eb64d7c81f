"""A queue, not a split: work items go to places as places become free (one thread per place), so a slow item
does not hold the others back and a lost place costs only the item it was measuring.

`Dispatcher.run(items, places)` calls `measure(item, place)` for every replica of every item, each replica on
another place. A `PlaceLost` raised by `measure` means the place (its exporter, its board) went away: nothing of
that attempt is kept, the replica goes back to the front of the queue for another place, and the place leaves
the rotation (`permanent`) or counts one failure; `max_failures` failures in a row take it out too. Any other
exception is the item's own failure on a working place: it is reported as the outcome, not retried. The
scheduler knows nothing of campaigns or labgrid: places are opaque, described by `describe(place)`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

POLL_S = 0.2


class PlaceLost(Exception):
    """Raised by `measure`: the place cannot measure any more (exporter or board gone, link dead). `permanent`
    False: a failure the place may recover from (it leaves after `max_failures` in a row)."""

    def __init__(self, reason: str, *, permanent: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Work:
    """One item to measure on `replicas` different places."""

    key: str
    payload: Any = None
    replicas: int = 1


@dataclass(frozen=True)
class Where:
    """Where a measurement ran: the place, its exporter host and the board's identity."""

    place: str
    host: str = ""
    board_id: str = ""


@dataclass
class Outcome:
    """One replica of one item, measured to the end on a live place: its result or its own error."""

    key: str
    replica: int
    where: Where
    result: Any = None
    error: str | None = None
    started: float = 0.0  # time.monotonic()
    seconds: float = 0.0


@dataclass
class CutAttempt:
    """A measurement cut by its place going away: nothing of it is valid."""

    key: str
    replica: int
    where: Where
    reason: str
    seconds: float


@dataclass
class PlaceStats:
    """One place's share of a run."""

    where: Where
    busy_s: float = 0.0  # inside measure(), cut attempts included
    active_s: float = 0.0  # from the place's start to its last measurement's end (or its loss)
    items: int = 0
    failures_in_a_row: int = 0
    lost: str | None = None  # why the place left the rotation, None while it served to the end

    @property
    def busy_fraction(self) -> float:
        """Busy time over the time the place was in the run."""
        return self.busy_s / self.active_s if self.active_s > 0 else 0.0


@dataclass
class QueueReport:
    """Everything a run of the queue did: outcomes, cut attempts, places (busy time, losses), overhead."""

    outcomes: list[Outcome] = field(default_factory=list)
    cut: list[CutAttempt] = field(default_factory=list)
    places: dict[str, PlaceStats] = field(default_factory=dict)
    unfinished: dict[tuple[str, int], str] = field(default_factory=dict)  # (key, replica) -> why not measured
    wall_s: float = 0.0
    dispatch_s: float = 0.0  # summed time between a place becoming free and starting its next item

    @property
    def lost(self) -> dict[str, str]:
        """Place -> why it left the rotation."""
        return {n: s.lost for n, s in self.places.items() if s.lost is not None}

    @property
    def dispatch_overhead_s(self) -> float:
        """Mean dispatch time per started measurement."""
        started = len(self.outcomes) + len(self.cut)
        return self.dispatch_s / started if started else 0.0

    def by_key(self) -> dict[str, list[Outcome]]:
        """Outcomes grouped by item key, replicas in order."""
        out: dict[str, list[Outcome]] = {}
        for o in sorted(self.outcomes, key=lambda o: (o.key, o.replica)):
            out.setdefault(o.key, []).append(o)
        return out


@dataclass
class _Task:
    key: str
    payload: Any
    replica: int
    avoid: set[str] = field(default_factory=set)  # places that measured another replica, or lost this one


class Dispatcher:
    """Hands work to places as they become free; see the module docstring for the rules."""

    def __init__(self, measure: Callable[[Any, Any], Any], *, max_failures: int = 3,
                 describe: Callable[[Any], Where] | None = None,
                 more_places: Callable[[], Iterable[Any]] | None = None,
                 on_place_done: Callable[[Any], None] | None = None,
                 on_place_lost: Callable[[Any, str], None] | None = None,
                 wait_for_places_s: float = 0.0, progress: Callable[[str], None] | None = None):
        """`measure(payload, place) -> result`; `describe(place) -> Where` (default: reads `name`, `host`,
        `board_id` attributes); `more_places()` is polled for places that join during the run (reservations
        allocated later); `on_place_done` gets a place that has no more work (release it for others),
        `on_place_lost` a place that left the rotation and why. When the places left cannot take the queued work
        (gone, or replicas need other places), the run waits `wait_for_places_s` for `more_places` to bring one."""
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self.measure = measure
        self.max_failures = max_failures
        self.describe = describe or _describe
        self.more_places = more_places
        self.on_place_done = on_place_done
        self.on_place_lost = on_place_lost
        self.wait_for_places_s = wait_for_places_s
        self.progress = progress or (lambda _m: None)
        self._cond = threading.Condition()
        self._queue: list[_Task] = []
        self._in_flight = 0
        self._idle = 0  # workers waiting for a task they may take
        self._live = 0
        self._report = QueueReport()
        self._done_with: dict[str, set[str]] = {}  # key -> places that measured or are measuring a replica

    def run(self, items: Iterable[Work], places: Iterable[Any]) -> QueueReport:
        """Measure every replica of every item on the places; returns when all are done or cannot be."""
        t0 = time.monotonic()
        for w in items:
            if w.replicas < 1:
                raise ValueError(f"{w.key}: replicas must be at least 1")
            for r in range(w.replicas):
                self._queue.append(_Task(w.key, w.payload, r))
        threads: list[threading.Thread] = []

        def add(place: Any) -> None:
            where = self.describe(place)
            if where.place in self._report.places:
                return
            with self._cond:
                self._report.places[where.place] = PlaceStats(where)
                self._live += 1
            t = threading.Thread(target=self._worker, args=(place, where), name=f"place-{where.place}", daemon=True)
            threads.append(t)
            t.start()

        for p in places:
            add(p)
        stuck_since: float | None = None
        while True:
            with self._cond:
                if not self._queue and self._in_flight == 0:
                    break  # everything measured
                stuck = self._in_flight == 0 and self._idle == self._live  # queued work no live place may take
                if not stuck:
                    stuck_since = None
                    self._cond.wait(POLL_S)
            if stuck:
                stuck_since = stuck_since or time.monotonic()
                if self.more_places is None or time.monotonic() - stuck_since > self.wait_for_places_s:
                    break
                time.sleep(POLL_S)
            if self.more_places is not None:
                for p in self.more_places():
                    add(p)
        with self._cond:
            for task in self._queue:
                live = [n for n, s in self._report.places.items() if s.lost is None]
                why = ("no place left in the rotation" if not live else
                       f"replica {task.replica + 1} needs a place other than {', '.join(sorted(task.avoid))}")
                self._report.unfinished[(task.key, task.replica)] = why
            self._queue.clear()
            self._cond.notify_all()
        for t in threads:
            t.join()
        self._report.wall_s = time.monotonic() - t0
        return self._report

    def _take(self, name: str) -> _Task | None:
        """The first queued task this place may measure (called with the lock held)."""
        for i, task in enumerate(self._queue):
            if name not in task.avoid and name not in self._done_with.get(task.key, set()):
                return self._queue.pop(i)
        return None

    def _worker(self, place: Any, where: Where) -> None:
        stats = self._report.places[where.place]
        start = free_since = time.monotonic()
        while True:
            with self._cond:
                task = self._take(where.place)
                while task is None:
                    if not self._queue and self._in_flight == 0:
                        break
                    self._idle += 1
                    self._cond.notify_all()
                    self._cond.wait(POLL_S)
                    self._idle -= 1
                    if (not self._queue and self._in_flight == 0) or self._stopped():
                        break
                    task = self._take(where.place)
                if task is None:
                    self._live -= 1
                    self._cond.notify_all()
                    break
                self._in_flight += 1
                self._done_with.setdefault(task.key, set()).add(where.place)
                began = time.monotonic()
                self._report.dispatch_s += began - free_since
            lost = self._attempt(place, where, task, stats, began)
            free_since = time.monotonic()
            stats.active_s = free_since - start
            if lost:
                break
        if stats.lost is None and self.on_place_done is not None:
            self.on_place_done(place)

    def _stopped(self) -> bool:
        return not self._queue and self._in_flight == 0

    def _attempt(self, place: Any, where: Where, task: _Task, stats: PlaceStats, began: float) -> bool:
        """Run one measurement; True when the place left the rotation."""
        try:
            result, error = self.measure(task.payload, place), None
        except PlaceLost as exc:
            return self._cut(place, where, task, stats, began, exc)
        except Exception as exc:  # the item's own failure on a working place
            result, error = None, f"{type(exc).__name__}: {exc}"
        seconds = time.monotonic() - began
        with self._cond:
            stats.busy_s += seconds
            stats.items += 1
            stats.failures_in_a_row = 0
            self._report.outcomes.append(Outcome(task.key, task.replica, where, result, error, began, seconds))
            self._in_flight -= 1
            self._cond.notify_all()
        return False

    def _cut(self, place: Any, where: Where, task: _Task, stats: PlaceStats, began: float, exc: PlaceLost) -> bool:
        seconds = time.monotonic() - began
        with self._cond:
            stats.busy_s += seconds
            stats.failures_in_a_row += 1
            self._report.cut.append(CutAttempt(task.key, task.replica, where, exc.reason, seconds))
            self._done_with.get(task.key, set()).discard(where.place)
            task.avoid.add(where.place)
            self._queue.insert(0, task)  # measured again first, on another place
            self._in_flight -= 1
            gone = exc.permanent or stats.failures_in_a_row >= self.max_failures
            if gone:
                stats.lost = (exc.reason if exc.permanent else
                              f"{stats.failures_in_a_row} failures in a row, the last: {exc.reason}")
                self._live -= 1
            self._cond.notify_all()
        self.progress(f"{where.place}: {task.key} cut ({exc.reason}); measured again on another place"
                      + (f"; {where.place} leaves the rotation" if gone else ""))
        if gone and self.on_place_lost is not None:
            self.on_place_lost(place, stats.lost or exc.reason)
        return gone


def _describe(place: Any) -> Where:
    return Where(str(getattr(place, "name", place)), str(getattr(place, "host", "")),
                 str(getattr(place, "board_id", "")))
