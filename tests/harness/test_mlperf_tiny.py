"""The MLPerf Tiny protocol (issue 22, first part): docs/mlperf-tiny-vectors.json against the virtual DUT in-process
and over its pty through the host client, the reference reply formats through the host parser, and the failures a
host must catch: no `m-ready`, an `e-[...]` reply, a malformed `m-results`, a wrong byte count after `db load`."""

from __future__ import annotations

import json
import re
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from hil.dut import mlperf_wire as wire
from hil.dut.mlperf_tiny import MlperfTimeout, MlperfTinyClient
from hil.dut.mlperf_wire import MlperfError
from hil.sim.mlperf_device import MlperfBoard, MlperfDevice, model_kind
from tests.firmware.tflite_builder import reshape_model

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "docs" / "mlperf-tiny-vectors.json").read_text())
SHARED = ROOT.parent / "shared" / "data"
# A runnable stand-in for each reference model's input (CI has no copy of the MLPerf Tiny models): the virtual DUT
# recognises the benchmark by the input's shape, as the vectors' "model" names it.
STAND_INS = {"mlperf_tiny_kws_ref_model.tflite": ((1, 49, 10, 1), (1, 490))}


def _model(name: str) -> bytes:
    return reshape_model(*STAND_INS[name])


def _matches(want: str, got: str) -> bool:
    if want == "{results}":
        return got.startswith("m-results-[") and got.endswith("]")
    pattern = re.escape(want).replace(re.escape("{u32}"), r"\d+")
    return re.fullmatch(pattern, got) is not None


def _check(step: dict, got: list[str]) -> None:
    assert len(got) == len(step["expect"]), (step, got)
    for want, line in zip(step["expect"], got, strict=True):
        assert _matches(want, line), (step["send"], want, line)


@pytest.mark.parametrize("exchange", VECTORS["exchanges"], ids=lambda e: e["name"])
def test_the_vectors_against_the_virtual_dut(exchange: dict) -> None:
    device = MlperfDevice(_model(exchange["model"]))
    for step in exchange["steps"]:
        _check(step, device.handle(step["send"]))


@pytest.mark.parametrize("exchange", VECTORS["exchanges"], ids=lambda e: e["name"])
def test_the_vectors_over_the_pty_through_the_client(exchange: dict) -> None:
    """The same exchanges, the commands sent as `text%` bytes on a pty and the replies read to `m-ready`; an
    `e-[...]` reply is the client's MlperfError carrying the DUT's text."""
    with MlperfBoard(_model(exchange["model"])) as board, MlperfTinyClient(board.pty_path) as client:
        for step in exchange["steps"]:
            errors = [line for line in step["expect"] if line.startswith("e-[")]
            if errors:
                with pytest.raises(MlperfError, match=re.escape(errors[0][3:-1])):
                    client.request(step["send"])
                continue
            # the client drops empty lines, as the reference runner does (db print's extra line after a short row)
            _check({**step, "expect": [line for line in step["expect"] if line]},
                   [*client.request(step["send"]), wire.READY])


@pytest.mark.parametrize("case", VECTORS["replies"], ids=lambda c: c["name"])
def test_reference_replies_through_the_parser(case: dict) -> None:
    def parse():
        if case["parse"] == "results":
            return wire.parse_results(case["lines"][0])
        return wire.parse_infer(case["lines"], case["n"], case["warmup"])

    if "error" in case:
        with pytest.raises(MlperfError, match=re.escape(case["error"])):
            parse()
        return
    got = parse()
    results = got if case["parse"] == "results" else got.results
    assert results == tuple(case["results"])
    if "laps" in case:
        assert got.laps_us == tuple(case["laps"])
    if "window_us" in case:
        assert got.window_us == case["window_us"]


def test_results_are_rendered_as_each_reference_submission_prints_them() -> None:
    assert wire.format_results([0.0, 0.05, 0.99609375], "kws01") == "m-results-[0.000,0.050,0.996]"
    assert wire.format_results([0.121, 0.879], "vww01") == "m-results-[0.121,0.879,]"
    assert wire.format_results([0.1234, 0.5], "ic01") == "m-results-[0.123,0.500]"
    assert wire.format_results([12.3456], "ad01") == "m-results-[12.346]"


def test_commands_the_dut_would_misread_are_refused_on_the_host() -> None:
    for bad in ("", "db 1%2", "x" * 81):
        with pytest.raises(ValueError):
            wire.command(bad)
    chunks = wire.db_commands(bytes(range(70)))
    assert chunks[0] == "db load 70" and len(chunks) == 1 + 3
    assert all(len(c) <= wire.MAX_COMMAND for c in chunks) and chunks[1] == "db " + bytes(range(31)).hex()


def test_an_input_streams_and_runs_as_the_accuracy_mode_does() -> None:
    """predict = db load + hex chunks + infer 1 0: the device's output is the model's on that input (the reshape
    model's output is its input, so the bytes sent come back dequantized)."""
    x = np.arange(-128, 362, dtype=np.int16).astype(np.int8).reshape(1, 49, 10, 1)
    with MlperfBoard(_model("mlperf_tiny_kws_ref_model.tflite")) as board, MlperfTinyClient(board.url) as client:
        assert client.name() == "unspecified"
        assert client.profile() == (wire.FIRMWARE, "kws01")
        got = client.predict(x)
    want = (x.reshape(-1).astype(np.float64) + 128) / 256
    np.testing.assert_allclose(got, np.floor(want * 1000) / 1000)  # kws01 truncates to 3 decimals


def test_latency_is_the_timestamp_window_over_n_on_the_simulated_clock() -> None:
    with MlperfBoard(_model("mlperf_tiny_kws_ref_model.tflite")) as board, MlperfTinyClient(board.url) as client:
        reply = client.infer(50, 3)
        per_inference = board.device.latency_us
    assert reply.n == 50 and reply.laps_us is not None
    assert reply.latency_us == pytest.approx(per_inference, abs=1 / 50)  # the clock counts whole microseconds
    assert reply.inferences_per_s == pytest.approx(1e6 / per_inference, rel=1e-3)


def test_a_dut_that_never_says_m_ready_is_one_clear_timeout() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    held: list[socket.socket] = []
    thread = threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True)
    thread.start()
    try:
        with MlperfTinyClient(f"socket://127.0.0.1:{port}", line_timeout_s=0.3) as client:
            thread.join(5)
            held[0].sendall(b"m-name-dut-[mute]\r\n")  # answers, but never ends its reply
            with pytest.raises(MlperfTimeout, match=r"did not end its reply to 'name' with 'm-ready' within 0.3 s; "
                                                    r"it said \['m-name-dut-\[mute\]'\]"):
                client.name()
    finally:
        for s in held:
            s.close()
        server.close()


def _board_with(handle) -> MlperfBoard:
    board = MlperfBoard(_model("mlperf_tiny_kws_ref_model.tflite"))
    original = board.device.handle
    board.device.handle = lambda command: handle(original, command)  # type: ignore[method-assign]
    return board


def test_a_dut_that_expects_another_byte_count_is_refused_before_any_data() -> None:
    def handle(original, command):
        if command.startswith("db load "):
            return original("db load 489")[:1] + [wire.READY]  # says 489, whatever the host asked for
        return original(command)

    with _board_with(handle).start() as board, MlperfTinyClient(board.url) as client:
        with pytest.raises(MlperfError, match="the DUT expects 489 bytes, the host sends 490"):
            client.load(bytes(490))


def test_a_dut_that_finishes_loading_early_is_a_wrong_byte_count() -> None:
    def handle(original, command):
        if command.startswith("db load "):
            original("db load 62")  # takes 62 bytes, but confirms what the host asked
            return [f"m-[Expecting {command.split()[-1]} bytes]", wire.READY]
        return original(command)

    with _board_with(handle).start() as board, MlperfTinyClient(board.url) as client:
        with pytest.raises(MlperfError, match="wrong byte count: the DUT finished loading after 62 of 490 bytes"):
            client.load(bytes(490))


def test_a_malformed_results_line_on_the_wire_is_an_error_not_a_figure() -> None:
    def handle(original, command):
        lines = original(command)
        return [line[:-6] if line.startswith("m-results-[") else line for line in lines]  # cut mid-number

    with _board_with(handle).start() as board, MlperfTinyClient(board.url) as client:
        with pytest.raises(MlperfError, match="malformed results line"):
            client.infer(1, 0)


def test_the_virtual_dut_recognises_the_reference_benchmarks_by_their_input() -> None:
    assert model_kind((1, 49, 10, 1), "int8") == "kws01"
    assert model_kind((1, 96, 96, 3), "int8") == "vww01"
    assert model_kind((1, 32, 32, 3), "int8") == "ic01"
    assert model_kind((1, 640), "int8") == "ad01"
    assert model_kind((1, 32, 32, 1), "int8") is None


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} (the MLPerf Tiny reference models) is absent")
@pytest.mark.parametrize("name", ["mlperf_tiny_kws_ref_model", "mlperf_tiny_vww_96_int8", "mlperf_tiny_resnet_quant",
                                  "mlperf_tiny_ad01_int8"])
def test_the_reference_models_run_through_the_mlperf_path_as_the_host_tflm_does(name: str) -> None:
    """Each reference model on the virtual DUT, fed in its benchmark's own wire format (int8 features, uint8 RGB,
    float32 LE), gives the host TFLM runtime's result as the reference prints it."""
    from hil.dut.mlperf_models import host_result, wire_input
    from models.tflm import TflmModel

    blob = (SHARED / f"{name}.tflite").read_bytes()
    ref = TflmModel(blob)
    rng = np.random.default_rng(22)
    with MlperfBoard(blob) as board, MlperfTinyClient(board.url) as client:
        kind = client.profile()[1]
        for _ in range(2):
            wire_x, x = wire_input(kind, ref.input, rng)
            got, want = client.predict(wire_x), host_result(kind, ref, wire_x, x)
            if kind == "ad01":
                np.testing.assert_allclose(got, want, atol=5e-4, rtol=1e-3)
            else:
                tolerance = 1e-3 if kind == "kws01" else 5e-4  # kws01 truncates, the others round to 3 decimals
                np.testing.assert_allclose(got, want, atol=tolerance)


def test_a_result_agrees_only_with_the_same_class_within_the_print_precision() -> None:
    from hil.dut.mlperf_models import results_agree

    host = np.array([0.1, 0.7, 0.2])
    assert results_agree("ic01", np.array([0.1, 0.7, 0.2]), host)
    assert results_agree("ic01", np.array([0.1004, 0.6996, 0.2]), host)  # 3-decimal rounding
    assert not results_agree("ic01", np.array([0.1, 0.2, 0.7]), host)  # another class
    assert not results_agree("ic01", np.array([0.1, 0.69, 0.21]), host)  # same class, off by more than printing
    assert not results_agree("ic01", np.array([0.1, 0.7]), host)  # a result missing
    assert results_agree("ad01", np.array([12.346]), np.array([12.3456]))
    assert not results_agree("ad01", np.array([12.5]), np.array([12.3456]))


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} (the MLPerf Tiny reference models) is absent")
def test_hil_mlperf_measures_a_reference_model_through_the_mlperf_path(tmp_path: Path, capsys) -> None:
    """`hil mlperf MODEL`: latency, p95, energy between the timestamp edges and the results against the host TFLM
    runtime, in one table labelled simulated; exit 0 when the results agree."""
    from hil.cli import main

    rc = main(["mlperf", str(SHARED / "mlperf_tiny_ad01_int8.tflite"), "--inputs", "8", "--trials", "2",
               "--window", "0.2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "simulated" in out
    row = next(line for line in out.splitlines() if line.startswith("mlperf_tiny_ad01_int8 "))
    cells = row.split()
    assert cells[1] == "ad01"
    latency, p95, ips, mj, uj = (float(c) for c in cells[2:7])
    assert 0 < latency <= p95 < latency * 1.01
    assert ips == pytest.approx(1e3 / latency, rel=1e-3) and uj == pytest.approx(mj * 1e3, rel=1e-3)
    assert "100.0 (8/8)" in row


def test_hil_mlperf_with_a_missing_model_is_one_line(tmp_path: Path, capsys) -> None:
    from hil.cli import main

    assert main(["mlperf", str(tmp_path / "nope.tflite")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hil: error: ") and "nope.tflite: no such model file" in err and err.count("\n") == 1


def test_hil_sim_serves_the_mlperf_personality_until_ctrl_c(tmp_path: Path) -> None:
    """`hil sim --protocol mlperf-tiny --model M` prints the DUT's port; the client runs it; Ctrl-C stops it."""
    import signal

    from tests.harness.helpers import start_hil_sim

    model = tmp_path / "kws-shaped.tflite"
    model.write_bytes(_model("mlperf_tiny_kws_ref_model.tflite"))
    proc, fields, lines = start_hil_sim("--protocol", "mlperf-tiny", "--model", str(model))
    try:
        assert "SIMULATED" in lines[0] and "m-model-[kws01]" in lines[1], lines
        with MlperfTinyClient(fields["socket"]) as client:
            assert client.profile()[1] == "kws01"
            assert client.infer(5, 1).n == 5
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "virtual MLPerf Tiny DUT stopped" in out


def test_hil_sim_with_a_model_it_cannot_read_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "hil.cli", "sim", "--protocol", "mlperf-tiny", "--model",
                        str(tmp_path / "none.tflite")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "cannot read the model" in r.stderr and "--model PATH" in r.stderr


def _campaign_figures(baseline_build: Path, tmp_path: Path, protocol: str, noise_seed: int | None = None) -> dict:
    import shutil

    import yaml

    from hil.campaign import Campaign, CampaignOptions
    from tests.harness.helpers import quiet_bench

    ws = tmp_path / protocol
    shutil.copytree(baseline_build, ws)
    bench = quiet_bench()
    if noise_seed is not None:  # the shipped bench noise, one pinned session
        bench["virtual"]["noise"] = {**bench["virtual"]["noise"], "enabled": True, "seed": noise_seed}
    bench["boards"] = [{**bench["boards"][0], "protocol": protocol}]
    (ws / "bench.yaml").write_text(yaml.safe_dump(bench))
    (ws / "budgets.yaml").write_text(yaml.safe_dump({"version": 1, "defaults": {"latency_ms": {"max": 500}}}))
    options = CampaignOptions(bench=ws / "bench.yaml", budgets=ws / "budgets.yaml",
                              models_config=ws / "variants.yaml", models_dir=ws / "models",
                              results_db=ws / "r.sqlite", trials=3, window=0.2, warmup=1, accuracy_samples=40,
                              variants=["baseline-int8"])
    campaign = Campaign(options)
    try:
        return campaign.measure("baseline-int8")
    finally:
        campaign.close()


def test_a_campaign_measures_an_mlperf_tiny_dut_as_it_measures_ours(baseline_build: Path, tmp_path: Path) -> None:
    """The same variant on the virtual board through both protocols: latency and energy per inference agree within
    1 %, the device outputs are the host TFLM's through both, and what the MLPerf DUT does not report is recorded
    as not reported, never as a number."""
    ours = _campaign_figures(baseline_build, tmp_path, "hil")
    theirs = _campaign_figures(baseline_build, tmp_path, "mlperf-tiny")
    assert theirs["latency_ms"].valid
    assert theirs["latency_ms"].value == pytest.approx(ours["latency_ms"].value, rel=0.01)
    for metric in ("accuracy", "output_agreement"):
        assert theirs[metric].valid and theirs[metric].value == ours[metric].value, metric
    assert theirs["output_agreement"].value == 100.0
    # energy mode on the scope: energy between the timestamp edges over N, the EnergyRunner's definition
    assert theirs["energy_mj"].valid and theirs["active_power_mw"].valid
    assert theirs["energy_mj"].value == pytest.approx(ours["energy_mj"].value, rel=0.01)
    # idle power after the last timestamp (the DUT waits for the host), and what follows from it; the p95 from
    # one-inference windows
    for metric in ("active_power_mw", "idle_power_mw", "dynamic_power_mw", "dynamic_energy_mj", "latency_p95_ms"):
        assert theirs[metric].valid, (metric, theirs[metric])
        assert theirs[metric].value == pytest.approx(ours[metric].value, rel=0.01), metric
    assert theirs["latency_p95_ms"].trials == 20 and theirs["latency_p95_ms"].spread > 0
    # the whole record's average: ours holds idle gaps between inferences, theirs back-to-back ones, warm-ups
    # before the first timestamp and idle after the last; both between idle and active
    for fig in (ours, theirs):
        assert fig["idle_power_mw"].value < fig["power_mw"].value < fig["active_power_mw"].value
    # the runner's figures, per window then the median: the same inferences and energy through both protocols
    for metric in ("inferences_per_s", "energy_uj"):
        assert theirs[metric].valid and theirs[metric].value == pytest.approx(ours[metric].value, rel=0.01), metric
    assert theirs["energy_uj"].value == pytest.approx(theirs["energy_mj"].value * 1e3)
    assert theirs["inferences_per_s"].value == pytest.approx(1e3 / theirs["latency_ms"].value, rel=1e-3)
    fig = theirs["arena_kb"]
    assert fig.value is None and not fig.valid and fig.skipped and "does not report its tensor arena" in fig.reason
    for metric in ("pulse_width_ms", "pulse_vs_latency_pct"):  # energy mode has no timer of the DUT's to hold
        fig = theirs[metric]                                 # the window against
        assert fig.value is None and fig.skipped and "no latency of its own" in fig.reason, (metric, fig)


@pytest.mark.slow
def test_with_bench_noise_both_protocols_see_the_same_sessions_drift(baseline_build: Path, tmp_path: Path) -> None:
    """Bench noise on, one pinned session: the MLPerf DUT's current drifts with the session's and the variant's gain
    as the virtual board's does, so energy and power agree within 1 % again, while both differ from the quiet
    bench's by the drift."""
    quiet = _campaign_figures(baseline_build, tmp_path / "quiet", "hil")
    ours = _campaign_figures(baseline_build, tmp_path / "a", "hil", noise_seed=11)
    theirs = _campaign_figures(baseline_build, tmp_path / "b", "mlperf-tiny", noise_seed=11)
    for metric in ("energy_mj", "active_power_mw", "idle_power_mw"):
        assert theirs[metric].value == pytest.approx(ours[metric].value, rel=0.01), metric
    drift = ours["idle_power_mw"].value / quiet["idle_power_mw"].value - 1
    assert abs(drift) > 0.002  # the session's gain moved the figures
    assert theirs["idle_power_mw"].value / quiet["idle_power_mw"].value - 1 == pytest.approx(drift, abs=0.005)


def test_an_mlperf_board_must_be_virtual_for_now() -> None:
    from hil.bench import parse_bench
    from hil.errors import HilError

    with pytest.raises(HilError, match="protocol mlperf-tiny runs on the virtual board for now"):
        parse_bench({"boards": [{"name": "m", "port": "/dev/ttyUSB0", "protocol": "mlperf-tiny"}]})
