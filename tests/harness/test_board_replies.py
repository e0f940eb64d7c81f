"""Replies from a board are checked before a figure is taken from them: a board whose `infer` replies are well
formed and CRC-signed but inconsistent (a firmware bug) voids its trials with the reason, never a valid figure.

The fake board is the virtual board behind a TCP proxy on a real socket that rewrites its `infer` replies and
signs them again, as firmware with a broken timer or statistics would send them; the scope still sees what the
board really ran.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hil.bench import parse_bench
from hil.errors import HilError
from hil.measure import Settings, measure_latency, measure_power
from hil.protocol import DutClient, InferResult
from hil.sim.bench import VirtualBench, default_model_path
from hil.wire import format_reply, infer_reply_problem, latency_stats, parse_reply
from tests.harness.helpers import quiet_bench

Tamper = Callable[[dict[str, Any]], dict[str, Any]]


class TamperingBoard:
    """A TCP proxy in front of a board's `socket://` URL that rewrites the `infer` replies `tamper` is given for
    (the first `spare` of them pass untouched) and signs them with a valid CRC."""

    def __init__(self, upstream: str, tamper: Tamper, *, spare: int = 0) -> None:
        host, port = upstream.removeprefix("socket://").rsplit(":", 1)
        self._upstream = (host, int(port))
        self._tamper, self._spare = tamper, spare
        self.infers = 0  # `infer` replies seen
        self.tampered = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self._server.getsockname()[1]}"
        self._sockets: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            while True:
                client, _ = self._server.accept()
                board = socket.create_connection(self._upstream)
                self._sockets += [client, board]
                threading.Thread(target=self._pump, args=(client, board, False), daemon=True).start()
                threading.Thread(target=self._pump, args=(board, client, True), daemon=True).start()
        except OSError:
            return  # closed

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        buf = b""
        try:
            while chunk := src.recv(4096):
                if not replies:
                    dst.sendall(chunk)
                    continue
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    dst.sendall(self._rewrite(line) + b"\n")
        except OSError:
            return

    def _rewrite(self, line: bytes) -> bytes:
        reply = parse_reply(line.decode("latin-1"), require_crc=True)
        if reply is None or reply["cmd"] != "infer" or not reply["ok"]:
            return line
        self.infers += 1
        if self.infers <= self._spare:
            return line
        self.tampered += 1
        return format_reply(self._tamper(dict(reply))).encode() + b"\r"

    def close(self) -> None:
        for s in self._sockets:
            s.close()


def _mean_far_off(r: dict[str, Any]) -> dict[str, Any]:
    return {**r, "mean_us": 999999.0}


def _negative(r: dict[str, Any]) -> dict[str, Any]:
    lat = [-abs(x) for x in r["latency_us"]]
    return {**r, "latency_us": lat, **latency_stats(lat)}


def _n_true(r: dict[str, Any]) -> dict[str, Any]:
    return {**r, "n": True}


def _one_latency_short(r: dict[str, Any]) -> dict[str, Any]:
    lat = r["latency_us"][:-1]
    return {**r, "latency_us": lat, **latency_stats(lat)}


def _fractional_latency(r: dict[str, Any]) -> dict[str, Any]:
    return {**r, "latency_us": [x + 0.5 for x in r["latency_us"]]}


def _max_below_a_latency(r: dict[str, Any]) -> dict[str, Any]:
    return {**r, "max_us": r["max_us"] - 1}


# (tamper, what the reason says)
INCONSISTENT = [
    pytest.param(_mean_far_off, "mean_us 999999.0 is not the mean of its latencies", id="mean-against-latencies"),
    pytest.param(_negative, "a negative latency", id="negative-latencies"),
    pytest.param(_n_true, "'n' is true, not an integer", id="n-is-a-bool"),
    pytest.param(_one_latency_short, "latencies for n=", id="count"),
    pytest.param(_fractional_latency, "'latency_us' is", id="fractional-latencies"),
    pytest.param(_max_below_a_latency, "are not the smallest and largest of its latencies", id="max-against-latencies"),
]


@pytest.fixture
def bench() -> Iterator[VirtualBench]:
    """The virtual bench (its noise off) with the sine model slowed to ~3 ms an inference (a capture of it is
    valid), its board also on a TCP port."""
    config = quiet_bench()
    config["virtual"]["inject"] = [{"variant": "sine_float", "kind": "latency", "factor": 50}]
    with VirtualBench(parse_bench(config), default_model_path(), boot_s=0.05) as vb:
        yield vb


def test_the_proxy_alone_changes_no_figure(bench: VirtualBench) -> None:
    """The control: through the same proxy, untouched replies give valid latency and power figures."""
    from instruments.scope import open_scope

    board = TamperingBoard(bench.url, _mean_far_off, spare=10**6)
    try:
        with DutClient(board.url) as dut, open_scope(bench.resource) as scope:
            m = measure_power(dut, scope, bench.spec, Settings(trials=2, warmup=0, window_s=0.05))
            latency = measure_latency(dut, Settings(trials=2, warmup=1, window_s=0.01))
    finally:
        board.close()
    figures = m.figures()
    assert board.infers > 0 and board.tampered == 0
    assert all(figures[k].valid for k in ("latency_ms", "power_mw", "energy_mj", "pulse_vs_latency_pct")), figures
    assert latency["latency_ms"].valid and latency["latency_ms"].value == pytest.approx(
        figures["latency_ms"].value, rel=0.02)


@pytest.mark.parametrize(("tamper", "reason"), INCONSISTENT)
def test_an_inconsistent_reply_voids_the_trials_of_the_boards_own_timer(bench: VirtualBench, tamper: Tamper,
                                                                        reason: str) -> None:
    """The latency path with no capture (QEMU boards; a failed capture): every trial void, no valid figure."""
    board = TamperingBoard(bench.url, tamper, spare=1)  # the probe is right: trials, not the plan, are at stake
    lines: list[str] = []
    try:
        with DutClient(board.url) as dut:
            figures = measure_latency(dut, Settings(trials=2, warmup=1, window_s=0.01), progress=lines.append)
    finally:
        board.close()
    assert board.tampered == 4  # each trial measured once more after its void run
    for metric in ("latency_ms", "latency_p95_ms"):
        fig = figures[metric]
        assert not fig.valid and fig.value is None, fig
        assert fig.reason.startswith("every run was void, the board's reply is inconsistent: ") and reason in fig.reason
    assert sum("void" in line for line in lines) == 4, lines


@pytest.mark.parametrize(("tamper", "reason"), INCONSISTENT)
def test_an_inconsistent_reply_voids_the_capture_and_its_power_figures(bench: VirtualBench, tamper: Tamper,
                                                                       reason: str) -> None:
    """The scope path: the board's reply disagrees with itself, so neither its latency nor the capture counts."""
    from instruments.scope import open_scope

    board = TamperingBoard(bench.url, tamper, spare=2)  # the probe and the ranging burst are right
    try:
        with DutClient(board.url) as dut, open_scope(bench.resource) as scope:
            m = measure_power(dut, scope, bench.spec, Settings(trials=2, warmup=0, window_s=0.05))
    finally:
        board.close()
    assert all(t.void is not None and reason in t.void for t in m.trials)
    assert all(not t.report.valid and t.report.reason.startswith("capture void: the board's reply is inconsistent")
               for t in m.trials)
    figures = m.figures()
    assert not any(f.valid for f in figures.values()), {k: f for k, f in figures.items() if f.valid}
    assert reason in figures["latency_ms"].reason


def test_a_consistent_reply_passes_the_check(bench: VirtualBench) -> None:
    """The check is not a filter that refuses everything: the board's own replies are consistent."""
    with DutClient(bench.url) as dut:
        results = [dut.infer(n, 1, gap) for n, gap in ((1, 0), (7, 1), (40, 0))]
    assert [r.problem for r in results] == [None, None, None]
    assert results[1].n == 7 and len(results[1].latency_us) == 7


def test_a_probe_whose_latencies_are_impossible_plans_nothing_and_says_why(bench: VirtualBench) -> None:
    board = TamperingBoard(bench.url, _negative)
    try:
        with DutClient(board.url) as dut, pytest.raises(HilError) as err:
            measure_latency(dut, Settings(trials=1, warmup=0, window_s=0.01))
    finally:
        board.close()
    assert str(err.value).startswith("the board's reply to 'infer 3 1' is inconsistent (a negative latency")


def test_a_probe_with_a_wrong_mean_is_planned_by_its_latencies_and_its_trials_void(bench: VirtualBench) -> None:
    board = TamperingBoard(bench.url, _mean_far_off)  # every reply, the probe's too
    try:
        with DutClient(board.url) as dut:
            figures = measure_latency(dut, Settings(trials=1, warmup=0, window_s=0.01))
    finally:
        board.close()
    assert not figures["latency_ms"].valid and "mean_us 999999.0" in figures["latency_ms"].reason


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"n": 3.0}, "'n' is 3.0, not an integer"),
        ({"warmup": None}, "'warmup' is null, not an integer"),
        ({"gap_ms": 1001}, "'gap_ms' is 1001, outside 0..1000"),
        ({"cpu_mhz": 0}, "'cpu_mhz' is 0, outside 1..100000"),
        ({"latency_us": [10, 20, 10_000_001]}, "longer than the firmware's 10 s limit"),
        ({"mean_us": float("nan")}, "'mean_us' is NaN, not a finite number"),
        ({"std_us": 50.0}, "std_us 50.0 is not the standard deviation of its latencies"),
        ({"mean_us": 13.33}, None),  # written with more digits than the firmware does: consistent
        ({"mean_us": 13.4}, "mean_us 13.4 is not the mean"),  # 0.07 us off: no rounding to 0.1 us gives it
    ],
)
def test_the_reply_check_names_each_inconsistency(change: dict[str, Any], problem: str | None) -> None:
    lat = [10, 20, 10]
    reply = {"ok": True, "cmd": "infer", "n": 3, "warmup": 0, "gap_ms": 0, "latency_us": lat, **latency_stats(lat),
             "cpu_mhz": 240}
    assert infer_reply_problem(reply) is None  # the untouched reply is consistent
    reply.update(change)
    if "latency_us" in change:
        reply.update(min_us=min(change["latency_us"]), max_us=max(change["latency_us"]))
    got = infer_reply_problem(reply)
    assert (got is None) if problem is None else (got is not None and problem in got), got
    assert InferResult.from_reply(reply).problem == got
