"""The queue on the virtual lab: every variant measured on live places through ser2net, and when an exporter
is killed mid-run its item is measured again elsewhere, the place is dropped with its reason and nothing measured
on it after the kill is valid."""

from __future__ import annotations

import threading
import time

from hil.lab.places import Lab, LabPlace, open_serial
from hil.lab.queue import Dispatcher, PlaceLost, Work
from hil.protocol import DutClient

INFERS = 8  # per item: ~0.4 s through ser2net on loopback


def board_measure(lab: Lab, on_infer=None):
    """measure(item, place): hello + INFERS inferences on the place's board over rfc2217; a failure on a place
    the coordinator reports lost is PlaceLost, anything else is the item's own error."""

    def measure(item: str, place: LabPlace) -> dict:
        try:
            ser = open_serial(place, timeout=0.02)
            try:
                with DutClient(ser, baudrate=place.baud, margin_s=0.5) as dut:
                    latencies = []
                    for k in range(INFERS):
                        if on_infer is not None:
                            on_infer(item, place, k)
                        latencies.append(dut.infer(1).mean_us)
                    return {"board_id": dut.hello_info.board_id, "latency_us": latencies}
            finally:
                ser.close()
        except Exception as exc:
            reason = lab.lost(place, wait_s=5.0)
            if reason is not None:
                raise PlaceLost(reason) from exc
            raise

    return measure


def test_all_items_on_four_places_with_their_board_identity(vlab):
    with Lab(vlab.lab_config(places=4)) as lab:
        places = lab.reserve()
        report = Dispatcher(board_measure(lab), more_places=lab.more, wait_for_places_s=10,
                            on_place_done=lambda p: lab.release_place(p.name)).run(
            [Work(f"v{i}", f"v{i}", replicas=2 if i == 0 else 1) for i in range(6)], places)
    assert not report.unfinished and not report.cut and not report.lost
    assert len(report.outcomes) == 7
    for o in report.outcomes:
        assert o.error is None, o.error
        # the board that answered is the one the place names: the identity comes from the wire, not from us
        assert o.result["board_id"].replace(":", "") == o.where.board_id
        assert o.where.host == "127.0.0.1"
    v0 = report.by_key()["v0"]
    assert len({o.where.place for o in v0}) == 2  # replicas on two different places
    assert len({o.where.place for o in report.outcomes}) >= 3
    assert report.dispatch_overhead_s < 1.0


def test_killing_an_exporter_mid_run_moves_its_item_to_a_live_place(fresh_lab):
    killed_at: dict[str, float] = {}
    kill_lock = threading.Lock()

    def on_infer(item, place, k):
        # the second item started on an exporter-1 place is cut in the middle of its inferences
        with kill_lock:
            if place.exporter == "vlab-exporter-1" and k == 3 and item in ("v2", "v3", "v4", "v5") \
                    and not killed_at:
                killed_at["t"] = time.monotonic()
                killed_at["item"] = item
                fresh_lab.kill_exporter("vlab-exporter-1")

    with Lab(fresh_lab.lab_config(places=4, wait_s=30)) as lab:
        places = lab.reserve()
        report = Dispatcher(board_measure(lab, on_infer), more_places=lab.more, wait_for_places_s=10).run(
            [Work(f"v{i}", f"v{i}") for i in range(8)], places)
    assert killed_at, "no item ran on exporter 1 after the first ones"
    # every variant has one valid figure set, measured on a live place
    assert not report.unfinished
    assert sorted(o.key for o in report.outcomes) == [f"v{i}" for i in range(8)]
    assert all(o.error is None for o in report.outcomes)
    # the item cut by the kill was measured again on exporter 0
    cut = [c for c in report.cut if c.key == killed_at["item"]]
    assert cut and cut[0].where.place.startswith("vlab-1-")
    (again,) = [o for o in report.outcomes if o.key == killed_at["item"]]
    assert again.where.place.startswith("vlab-0-")
    # the killed places left the rotation, with the exporter named as the reason
    assert set(report.lost) <= {"vlab-1-0", "vlab-1-1"} and cut[0].where.place in report.lost
    assert all("vlab-exporter-1" in why for why in report.lost.values()), report.lost
    # nothing measured on a killed place after the kill is valid
    for o in report.outcomes:
        if o.where.place.startswith("vlab-1-"):
            assert o.started + o.seconds <= killed_at["t"], o
