"""The virtual lab against the real labgrid: the CLI sees its places and who holds them, the harness reserves,
acquires, resolves and releases them (also on exceptions and SIGTERM), a board answers the harness's protocol
through ser2net's rfc2217, and each mistake is one clear LabError."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from hil.lab.config import LabConfig
from hil.lab.places import Lab, LabError, open_serial
from hil.lab.virtual import free_port
from hil.protocol import DutClient
from tests.lab.conftest import labgrid_client, wait_until, who

PLACES = ["vlab-0-0", "vlab-0-1", "vlab-1-0", "vlab-1-1"]


def test_labgrid_client_lists_the_four_places_with_their_tags(vlab):
    lines = labgrid_client(vlab.address, "places").splitlines()
    assert [line.split()[0] for line in lines] == PLACES  # the name, then the place's comment
    assert all("virtual esp32 on /dev/pts/" in line for line in lines)
    verbose = labgrid_client(vlab.address, "-v", "places")
    for name in PLACES:
        block = verbose.split(f"Place '{name}':")[1].split("Place '")[0]
        tags = re.search(r"tags: (.*)", block).group(1)
        assert "board=esp32" in tags and "chip=esp32" in tags and "board_id=240ac41a" in tags


def test_the_harness_holds_the_places_and_releases_them_on_an_exception(vlab):
    assert who(vlab.address) == {}
    with pytest.raises(RuntimeError, match="boom"), Lab(vlab.lab_config(places=4)) as lab:
        got = lab.reserve()
        got += wait_until(lambda: lab.more() if lab.waiting else [None], what="all four places")
        got = [p for p in got if p is not None]
        assert sorted(p.name for p in got) == PLACES
        held = who(vlab.address)
        assert sorted(held) == PLACES
        assert set(held.values()) == {f"{lab.user}@{lab.host}"} and f"-hil{os.getpid()}" in lab.user
        raise RuntimeError("boom")
    assert who(vlab.address) == {}
    assert "Reservation" not in labgrid_client(vlab.address, "reservations")


def test_a_place_resolves_to_a_board_on_rfc2217_and_a_scope_on_visa(vlab):
    from instruments.scope import open_scope

    with Lab(vlab.lab_config(tags={"board": "esp32", "board_id": "240ac41a0101"})) as lab:
        (place,) = lab.reserve()
        assert place.name == "vlab-1-1" and place.exporter == "vlab-exporter-1" and place.host == "127.0.0.1"
        assert re.fullmatch(r"rfc2217://127\.0\.0\.1:\d+\?ign_set_control", place.serial_url)
        assert place.scope_resource == vlab.place("vlab-1-1").bench.resource and place.scope_host == "127.0.0.1"
        ser = open_serial(place)
        try:
            with DutClient(ser, baudrate=place.baud) as dut:
                assert dut.hello_info.board_id == "24:0a:c4:1a:01:01"  # the board behind this place, no other
                assert dut.hello_info.model_ok
                assert dut.infer(3).n == 3
        finally:
            ser.close()
        with open_scope(place.scope_resource) as scope:
            assert scope.idn  # the simulated scope answers *IDN? on the place's VISA resource
        # ser2net, started by the exporter on acquire, listens on loopback only
        port = int(place.serial_url.split(":")[2].split("?")[0])
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert [line.split()[3] for line in listening.splitlines()] == [f"127.0.0.1:{port}"]


def test_unreachable_coordinator_is_one_line():
    cfg = LabConfig(coordinator=f"127.0.0.1:{free_port()}", tags={"board": "esp32"})
    t0 = time.monotonic()
    with pytest.raises(LabError, match=r"cannot reach the labgrid coordinator at 127\.0\.0\.1:\d+") as info:
        Lab(cfg).open()
    assert "\n" not in str(info.value) and time.monotonic() - t0 < 15


def test_tags_that_match_no_place(vlab):
    with pytest.raises(LabError, match="no place of the lab at .* has the tags board=esp32 chip=esp32s3"), \
            Lab(vlab.lab_config(tags={"board": "esp32", "chip": "esp32s3"})) as lab:
        lab.reserve()
    with pytest.raises(LabError, match="5 places wanted but only 4 have the tags"), \
            Lab(vlab.lab_config(places=5)) as lab:
        lab.reserve()
    assert who(vlab.address) == {}


def test_a_place_missing_a_resource_a_station_needs(vlab):
    with pytest.raises(LabError, match=r"place vlab-\d-\d has no power port") as info, \
            Lab(vlab.lab_config(needs={"power": True})) as lab:
        lab.reserve()
    assert "RawSerialPort (NetworkSerialPort)" in str(info.value)
    assert who(vlab.address) == {}  # the acquired place was released again


def test_a_reservation_that_times_out_and_a_run_that_waits(vlab):
    first = Lab(vlab.lab_config(places="all")).open()
    try:
        first.reserve()
        wait_until(lambda: (first.more(), not first.waiting)[1], what="the first run holding every place")
        with pytest.raises(LabError, match=r"no place with the tags .* was free within 1 s"), \
                Lab(vlab.lab_config(wait_s=1)) as second:
            second.reserve()
        # a second run that may wait gets a place as soon as the first lets one go, with priority over none
        got = []
        with Lab(vlab.lab_config(wait_s=30, priority=5)) as second:
            waiter = threading.Thread(target=lambda: got.extend(second.reserve()))
            waiter.start()
            time.sleep(1.0)
            assert not got  # still waiting, not failing
            first.release_place("vlab-1-0")
            waiter.join(30)
            assert [p.name for p in got] == ["vlab-1-0"]
            assert who(vlab.address)["vlab-1-0"] == f"{second.user}@{second.host}"
    finally:
        first.close()
    assert who(vlab.address) == {}


def test_sigterm_releases_the_places(vlab):
    script = textwrap.dedent(f"""
        import time
        from hil.lab.config import LabConfig
        from hil.lab.places import Lab
        with Lab(LabConfig(coordinator={vlab.address!r}, tags={{"board": "esp32"}}, places=2)) as lab:
            got = lab.reserve()
            while lab.waiting:
                got += lab.more()
                time.sleep(0.2)
            print("held", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=os.getcwd(), start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert len(who(vlab.address)) == 2
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert who(vlab.address) == {}


def test_a_place_left_by_a_killed_run_is_recovered_with_release_kick(vlab):
    script = textwrap.dedent(f"""
        from hil.lab.config import LabConfig
        from hil.lab.places import Lab
        lab = Lab(LabConfig(coordinator={vlab.address!r}, tags={{"board": "esp32"}})).open()
        print(lab.reserve()[0].name, flush=True)
        import time; time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    name = proc.stdout.readline().strip()
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait(10)
    assert name in who(vlab.address)  # labgrid keeps it acquired for the dead run
    labgrid_client(vlab.address, "-p", name, "release", "--kick")
    assert who(vlab.address) == {}
