"""Bench noise and injected regressions on the virtual bench (issue 18): the noise model's statistics, what it and
`virtual.inject` / `--inject` do to figures measured with the harness's own capture procedure, and how a
campaign resolves, records and hands the session's noise seed to the virtual bench."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from hil.bench import parse_bench
from hil.campaign import Campaign, CampaignOptions
from hil.errors import HilError
from hil.measure import PowerMeasurement, Settings, measure_power
from hil.protocol import DutClient
from hil.sim.bench import VirtualBench
from hil.sim.noise import NOISE_OFF, NoiseModel, session_seed
from instruments.scope import open_scope
from tests.conftest import TINY_CONFIG
from tests.harness.helpers import ROOT, start_hil_sim

VARIANT = "sine-int8"  # the name the board is flashed under (the campaign passes the variant's)
NOISE = {"enabled": True}  # the defaults: 2 % between sessions (75 % shared), 0.3 % per trial


# -- the model --------------------------------------------------------------------------------------------
def test_every_gain_is_exactly_one_without_noise() -> None:
    for seed in (0, 1, 2**31):
        assert NOISE_OFF.session_gain(seed) == 1.0
        assert NOISE_OFF.variant_gain(seed, "a") == 1.0
        assert NOISE_OFF.trial_gain(seed, "a", 3) == 1.0
        assert NOISE_OFF.gain(seed, "a", 3) == 1.0


def test_gains_are_reproducible_and_differ_between_seeds_variants_and_trials() -> None:
    n = NoiseModel()
    assert n.gain(7, "a", 2) == NoiseModel().gain(7, "a", 2)  # bit for bit from the seed
    assert n.gain(7, "a", 2) != n.gain(8, "a", 2)
    assert n.variant_gain(7, "a") != n.variant_gain(7, "b")
    assert n.trial_gain(7, "a", 0) != n.trial_gain(7, "a", 1)
    assert n.gain(7, "a", 2) == n.session_gain(7) * n.variant_gain(7, "a") * n.trial_gain(7, "a", 2)
    a, b = n.gain(7, "a", 2), n.gain(7, "b", 2)  # the shared part is one draw for every variant of a session
    assert a / b == pytest.approx(n.variant_gain(7, "a") * n.trial_gain(7, "a", 2)
                                  / (n.variant_gain(7, "b") * n.trial_gain(7, "b", 2)), rel=1e-12)


def test_the_log_gains_have_the_documented_spreads() -> None:
    """Over 4000 sessions the log-gains' SDs are shared_sd, variant_sd and trial_cv (SD of an SD: ~1.1 %)."""
    n = NoiseModel(between_run_cv=0.02, shared_fraction=0.75, trial_cv=0.003)
    assert n.shared_sd == pytest.approx(math.sqrt(0.75) * 0.02) and n.variant_sd == pytest.approx(0.01)
    seeds = range(4000)
    shared = np.log([n.session_gain(s) for s in seeds])
    own_a = np.log([n.variant_gain(s, "a") for s in seeds])
    own_b = np.log([n.variant_gain(s, "b") for s in seeds])
    trial = np.log([n.trial_gain(s, "a", 1) for s in seeds])
    assert np.std(shared) == pytest.approx(n.shared_sd, rel=0.1)
    assert np.std(own_a) == pytest.approx(n.variant_sd, rel=0.1)
    assert np.std(trial) == pytest.approx(n.trial_cv, rel=0.1)
    total = np.log([n.gain(s, "a", 1) / n.trial_gain(s, "a", 1) for s in seeds])
    assert np.std(total) == pytest.approx(n.between_run_cv, rel=0.1)  # the two parts add up to the total
    # independent draws: no correlation between the shared, the per-variant and the per-trial parts
    corr = np.corrcoef([shared, own_a, own_b, trial])
    assert np.all(np.abs(corr[np.triu_indices(4, 1)]) < 0.06)


def test_session_seed_is_stable_32_bit_and_tells_sessions_apart() -> None:
    a = session_seed("0123456789abcdef0123456789abcdef")
    assert a == session_seed("0123456789abcdef0123456789abcdef") and 0 <= a < 2**32
    assert a != session_seed("0123456789abcdef0123456789abcdee")


def test_out_of_range_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="shared_fraction must be between 0 and 1"):
        NoiseModel(shared_fraction=1.5)


# -- on the virtual bench -----------------------------------------------------------------------------------
def _measure(model: bytes, virtual: dict[str, Any], *, noise_seed: int | None = None,
             variant: str = VARIANT) -> PowerMeasurement:
    """The harness's capture procedure (ranging, 2 trials with warm-up) on a one-board virtual bench, clocked at
    10 MHz so the sine model's Invoke() (~1.4 ms) keeps the marker high long enough for the analysis."""
    config = parse_bench({"boards": [{"name": "b", "cpu_mhz": 10}], "virtual": virtual})
    with VirtualBench(config, None, boot_s=0.0, noise_seed=noise_seed) as vb:
        vb.board.flash(model, source=variant)
        with DutClient(vb.port) as dut, open_scope(vb.resource) as scope:
            return measure_power(dut, scope, vb.spec, Settings(trials=2, warmup=2, window_s=0.05))


def _value(m: PowerMeasurement, metric: str) -> float:
    fig = m.figures()[metric]
    assert fig.valid, fig.reason
    return float(fig.value)


def _seed_far_from_one(n: NoiseModel, variant: str) -> int:
    """A noise seed whose session drift of `variant` is at least 2 %: the noise cannot hide in the tolerance."""
    return next(s for s in range(200) if abs(math.log(n.session_gain(s) * n.variant_gain(s, variant))) > 0.02)


def test_without_noise_two_runs_of_a_seed_are_bit_identical(sine_model: bytes) -> None:
    a, b = _measure(sine_model, {"seed": 3}), _measure(sine_model, {"seed": 3, "noise": {"enabled": False}})
    for x, y in zip(a.trials, b.trials, strict=True):
        np.testing.assert_array_equal(x.shunt.volts, y.shunt.volts)
    assert _value(a, "energy_mj") == _value(b, "energy_mj")


def test_noise_moves_energy_by_the_sessions_drift_and_a_noise_seed_replays_it(sine_model: bytes) -> None:
    n = NoiseModel()
    seed = _seed_far_from_one(n, VARIANT)
    off = _measure(sine_model, {"seed": 3})
    on = _measure(sine_model, {"seed": 3, "noise": NOISE}, noise_seed=seed)
    again = _measure(sine_model, {"seed": 3, "noise": {**NOISE, "seed": seed}})  # the bench file's seed
    other = _measure(sine_model, {"seed": 3, "noise": NOISE}, noise_seed=seed + 1000)
    assert _value(on, "energy_mj") == _value(again, "energy_mj")  # the same noise seed: bit-identical
    for x, y in zip(on.trials, again.trials, strict=True):
        np.testing.assert_array_equal(x.shunt.volts, y.shunt.volts)
    assert _value(on, "energy_mj") != _value(other, "energy_mj")
    # the drift is the noise model's session x variant gain, within a few trial SDs (0.3 %) and the scope's noise
    drift = math.log(_value(on, "energy_mj") / _value(off, "energy_mj"))
    assert abs(drift - math.log(n.session_gain(seed) * n.variant_gain(seed, VARIANT))) < 4 * n.trial_cv + 0.002
    between = abs(math.log(_value(on, "energy_mj") / _value(other, "energy_mj")))
    assert 0 < between < 7 * math.sqrt(2) * n.between_run_cv  # plausible for two sessions of a 2 % bench
    for metric in ("active_power_mw", "idle_power_mw"):  # idle and active current alike
        assert _value(on, metric) / _value(off, metric) == pytest.approx(math.exp(drift), abs=0.015)
    assert _value(on, "latency_ms") == _value(off, "latency_ms")  # noise is in the current, not the timing


@pytest.mark.parametrize("kind", ["energy", "power"])
def test_an_injected_energy_regression_scales_energy_and_active_power_by_its_factor(sine_model: bytes,
                                                                                     kind: str) -> None:
    clean = _measure(sine_model, {"seed": 5})
    worse = _measure(sine_model, {"seed": 5, "inject": [{"variant": VARIANT, "kind": kind, "factor": 1.05}]})
    assert _value(worse, "energy_mj") / _value(clean, "energy_mj") == pytest.approx(1.05, rel=0.002)
    assert _value(worse, "active_power_mw") / _value(clean, "active_power_mw") == pytest.approx(1.05, rel=0.002)
    assert _value(worse, "idle_power_mw") == pytest.approx(_value(clean, "idle_power_mw"), rel=0.002)
    assert _value(worse, "latency_ms") == _value(clean, "latency_ms")


def test_an_injected_latency_regression_slows_that_variant_only(sine_model: bytes) -> None:
    inject = [{"variant": VARIANT, "kind": "latency", "factor": 1.10}]
    clean = _measure(sine_model, {"seed": 5})
    slower = _measure(sine_model, {"seed": 5, "inject": inject})
    assert _value(slower, "latency_ms") / _value(clean, "latency_ms") == pytest.approx(1.10, rel=0.005)
    assert _value(slower, "pulse_width_ms") / _value(clean, "pulse_width_ms") == pytest.approx(1.10, rel=0.005)
    assert _value(slower, "energy_mj") / _value(clean, "energy_mj") == pytest.approx(1.10, rel=0.005)
    untouched = _measure(sine_model, {"seed": 5, "inject": inject}, variant="another")
    assert _value(untouched, "energy_mj") == _measure(sine_model, {"seed": 5}, variant="another").figures()[
        "energy_mj"].value


def test_injection_works_with_the_noise_on(sine_model: bytes) -> None:
    """Same session, same noise: the injected factor still comes out (the trials' gains are the same draws)."""
    noise = {**NOISE, "seed": 11}
    clean = _measure(sine_model, {"seed": 5, "noise": noise})
    worse = _measure(sine_model, {"seed": 5, "noise": noise,
                                  "inject": [{"variant": VARIANT, "kind": "energy", "factor": 1.05}]})
    assert _value(worse, "energy_mj") / _value(clean, "energy_mj") == pytest.approx(1.05, rel=0.002)


# -- the bench file -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("virtual", "message"), [
    ({"noise": {"between_run_cv": 0.9}},
     "f.yaml: virtual.noise.between_run_cv: Input should be less than or equal to 0.5 (got 0.9)"),
    ({"noise": {"shared_fraction": -0.1}},
     "f.yaml: virtual.noise.shared_fraction: Input should be greater than or equal to 0 (got -0.1)"),
    ({"noise": {"enable": True}}, "f.yaml: virtual.noise.enable: unknown key; allowed keys: enabled, between_run_cv"),
    ({"inject": [{"variant": "a", "kind": "speed", "factor": 1.1}]},
     "f.yaml: virtual.inject.0.kind: Input should be 'energy', 'power' or 'latency' (got 'speed')"),
    ({"inject": [{"variant": "a", "kind": "energy", "factor": 0}]},
     "f.yaml: virtual.inject.0.factor: Input should be greater than 0 (got 0)"),
    ({"inject": [{"variant": "a", "kind": "energy", "factor": 1.1}, {"variant": "a", "kind": "energy", "factor": 2}]},
     "f.yaml: virtual: inject: a energy is injected twice; keep one factor"),
])
def test_bad_noise_and_inject_settings_are_one_clear_line(virtual: dict, message: str) -> None:
    with pytest.raises(HilError) as err:
        parse_bench({"virtual": virtual}, "f.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_noise_is_off_unless_the_bench_file_enables_it() -> None:
    assert parse_bench({}).virtual.noise.model() is None
    noise = parse_bench({"virtual": {"noise": {"enabled": True}}}).virtual.noise.model()
    assert noise == NoiseModel(0.02, 0.75, 0.003)


# -- the campaign -------------------------------------------------------------------------------------------
def _campaign(tmp_path: Path, virtual: dict[str, Any] | None = None, *, session: str = "a" * 32,
              **options: Any) -> Campaign:
    (tmp_path / "variants.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    (tmp_path / "budgets.yaml").write_text(yaml.safe_dump({"version": 1, "defaults": {"latency_ms": {"max": 50}}}))
    bench = {"boards": [{"name": "b0"}, {"name": "b1"}], "virtual": virtual or {}}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    return Campaign(CampaignOptions(bench=tmp_path / "bench.yaml", budgets=tmp_path / "budgets.yaml",
                                    models_config=tmp_path / "variants.yaml", results_db=tmp_path / "r.sqlite",
                                    **options), session=session)


def _meta(campaign: Campaign) -> dict[str, Any]:
    return campaign.recorder._meta


def test_a_session_derives_its_seed_every_worker_agrees_and_the_station_gets_it(tmp_path: Path) -> None:
    from hil.station import open_station

    workers = [_campaign(tmp_path, {"noise": NOISE}) for _ in range(2)]  # two xdist workers of one session
    seeds = [_meta(c)["noise"]["seed"] for c in workers]
    assert seeds[0] == seeds[1] == session_seed("a" * 32)
    assert _meta(workers[0])["noise"] == {"enabled": True, "between_run_cv": 0.02, "shared_fraction": 0.75,
                                          "trial_cv": 0.003, "seed": seeds[0]}
    other = _campaign(tmp_path, {"noise": NOISE}, session="b" * 32)
    assert _meta(other)["noise"]["seed"] != seeds[0]  # another run draws another session drift
    with open_station(workers[0].bench, "b1") as station:  # what Campaign.station opens
        assert station.virtual.noise_seed == seeds[0]
        assert station.virtual.board.core.noise_seed == seeds[0]


def test_noise_seed_and_inject_options_override_the_bench_file_and_reach_the_board(tmp_path: Path) -> None:
    from hil.station import open_station

    file_inject = [{"variant": "x", "kind": "energy", "factor": 1.2}, {"variant": "x", "kind": "latency", "factor": 2}]
    c = _campaign(tmp_path, {"noise": {**NOISE, "seed": 5}, "inject": file_inject}, noise_seed=1234,
                  inject=["x:energy=1.05", "baseline-int8:latency=1.1"])
    c.options.validate()
    meta = _meta(c)
    assert meta["noise"]["seed"] == 1234
    assert meta["inject"] == [{"variant": "x", "kind": "latency", "factor": 2.0},
                              {"variant": "x", "kind": "energy", "factor": 1.05},
                              {"variant": "baseline-int8", "kind": "latency", "factor": 1.1}]
    with open_station(c.bench) as station:
        core = station.virtual.board.core
        assert core.noise_seed == 1234
        assert core.inject == {"x": {"latency": 2.0, "energy": 1.05}, "baseline-int8": {"latency": 1.1}}


def test_without_noise_the_meta_says_so(tmp_path: Path) -> None:
    meta = _meta(_campaign(tmp_path, noise_seed=7))
    assert meta["noise"]["enabled"] is False and meta["noise"]["seed"] is None and meta["inject"] == []


@pytest.mark.parametrize("token", ["baseline-int8:energy", "baseline-int8:speed=1.1", ":energy=1.1",
                                   "baseline-int8:energy=-1", "baseline-int8:energy=fast"])
def test_a_bad_inject_token_is_one_error_naming_it_and_the_form(token: str, tmp_path: Path) -> None:
    c = _campaign(tmp_path, inject=[token])
    with pytest.raises(HilError) as err:
        c.plan()
    assert str(err.value).startswith(f"--inject {token!r}: expected VARIANT:KIND=FACTOR")


def test_inject_on_a_real_bench_is_a_usage_error(tmp_path: Path) -> None:
    options = CampaignOptions(bench=ROOT / "examples" / "bench-esp32-rigol.yaml", inject=["baseline-int8:energy=1.05"])
    with pytest.raises(HilError, match="--inject acts on the virtual bench only, and board 'esp32-devkitc'"):
        options.validate()
    CampaignOptions(bench=ROOT / "examples" / "bench-esp32-rigol.yaml", noise_seed=3).validate()  # ignored there


def test_the_options_reach_both_command_lines() -> None:
    from hil.cli import build_parser

    args = build_parser().parse_args(["measure", "--noise-seed", "42", "--inject", "a:energy=1.05",
                                      "--inject", "b:latency=1.1"])
    o = CampaignOptions.from_values(lambda flag: getattr(args, flag.lstrip("-").replace("-", "_")))
    assert (o.noise_seed, o.inject) == (42, ["a:energy=1.05", "b:latency=1.1"])


# -- hil sim ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("noise", "line"), [
    ({**NOISE, "seed": 1234}, "noise:    2 % between sessions (75 % shared), 0.3 % per trial, seed 1234"),
    ({"enabled": False}, "noise:    off"),
])
def test_hil_sim_says_the_noise(tmp_path: Path, noise: dict, line: str) -> None:
    bench = tmp_path / "bench.yaml"
    bench.write_text(yaml.safe_dump({"virtual": {"noise": noise}}))
    proc, _, lines = start_hil_sim("--bench", str(bench), "--no-scope")
    try:
        assert any(x.startswith(line) for x in lines), lines
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
