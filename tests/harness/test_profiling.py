"""Per-layer profiles: the virtual board's estimate, the board's `profile` reply described from the model, the
per-layer change between two profiles, and a campaign that keeps one per variant for the report and the gate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from hil.profiling import LayerProfile, estimate, from_board, layer_changes
from hil.protocol import DutClient
from hil.sim.board import VirtualBoard


def test_the_estimate_adds_up_to_the_cost_models_latency(tiny_variants: dict[str, Path]) -> None:
    from hil.sim.costmodel import CostModel, layers_from_model, load_calibration
    from models.tflite_file import read_model

    blob = tiny_variants["baseline-int8"].read_bytes()
    prof = estimate(blob)
    cost = CostModel.build(layers_from_model(read_model(blob, source="m")), load_calibration().profile())
    assert prof.total_us == pytest.approx(cost.latency_s * 1e6)
    assert sum(t.us for t in prof.layers) + cost.invoke_overhead_s * 1e6 == pytest.approx(prof.total_us)
    assert [t.op for t in prof.layers] == [layer.op for layer in cost.layers]
    conv = next(t for t in prof.layers if t.op == "CONV_2D")
    assert "3×3 1→" in conv.detail and "MACs" in conv.detail  # the first conv takes the 1-channel image
    rows = prof.rows()
    assert rows[-1][1] == "total" and rows[-2][1] == "(invoke overhead)"
    shares = [float(r[4]) for r in rows[:-1]]
    assert sum(shares) == pytest.approx(100.0, abs=0.1 * len(shares))


def test_the_virtual_boards_profile_is_the_estimate_and_its_latency(tiny_variants: dict[str, Path]) -> None:
    """`profile` on the virtual board: per layer the cost model's time (within its 0.03 % jitter), described from
    the flashed model, and a total that is the board's own `infer` latency."""
    blob = tiny_variants["baseline-int8"].read_bytes()
    with VirtualBoard(blob, boot_s=0.0, seed=4) as b, DutClient(b.pty_path) as c:
        prof = from_board(c.profile(), blob, source="virtual")
        latency_us = c.infer(5, 1).mean_us
    want = estimate(blob)
    assert [(t.index, t.op, t.detail) for t in prof.layers] == [(t.index, t.op, t.detail) for t in want.layers]
    for got, exp in zip(prof.layers, want.layers, strict=True):
        assert got.us == pytest.approx(exp.us, rel=0.005, abs=2), got
    assert prof.total_us == pytest.approx(latency_us, rel=0.005)
    assert 0 <= prof.overhead_us < 0.01 * prof.total_us
    assert LayerProfile.from_json(prof.to_json()) == prof


def test_a_profile_of_other_operators_than_the_models_is_not_described(sine_model: bytes) -> None:
    """A reply whose ops are not the flashed model's (another model runs): no layer gets the model's shapes."""
    from hil.wire import OpTime, Profile

    ops = [t.op for t in estimate(sine_model).layers]
    for other in (["ADD", *ops[1:]], ops[:-1]):  # another op, or one op fewer
        prof = from_board(Profile(tuple(OpTime(i, op, 5) for i, op in enumerate(other)), 5 * len(other) + 2),
                          sine_model)
        assert all(t.detail == "" for t in prof.layers) and prof.overhead_us == 2
    same = from_board(Profile(tuple(OpTime(i, op, 5) for i, op in enumerate(ops)), 5 * len(ops)), sine_model)
    assert any(t.detail for t in same.layers)


def test_layer_changes_pair_the_layers_and_put_the_largest_first(tiny_variants: dict[str, Path],
                                                                 sine_model: bytes) -> None:
    blob = tiny_variants["baseline-int8"].read_bytes()
    fast, slow = estimate(blob, kernels="esp-nn"), estimate(blob, kernels="reference")
    changes = layer_changes(fast, slow)
    assert changes is not None and len(changes) == len(fast.layers) + 1
    by_index = {c.index: c for c in changes}
    for a, b in zip(fast.layers, slow.layers, strict=True):
        assert by_index[a.index].change_us == pytest.approx(b.us - a.us)
    assert [abs(c.change_us) for c in changes] == sorted((abs(c.change_us) for c in changes), reverse=True)
    assert layer_changes(fast, estimate(sine_model)) is None  # another model's operators: no pairs


@pytest.mark.slow
def test_a_campaign_keeps_each_profile_and_the_gate_shows_a_regressions_layers(baseline_build: Path, tmp_path: Path,
                                                                              monkeypatch) -> None:
    """Three baseline runs on main, then a run whose latency is made 20 % worse: every run keeps the variant's
    profile, the report shows its per-layer table, and the gate's report puts the per-layer change beside the
    regression."""
    from hil.campaign import CampaignOptions, run
    from hil.report.writer import write_report
    from hil.results import ResultsStore
    from tests.harness.helpers import quiet_bench

    ws = tmp_path / "ws"
    shutil.copytree(baseline_build, ws)
    (ws / "bench.yaml").write_text(yaml.safe_dump({**quiet_bench(), "boards": quiet_bench()["boards"][:1]}))
    (ws / "budgets.yaml").write_text(yaml.safe_dump({"version": 1, "defaults": {"latency_ms": {"max": 500}}}))

    def session(branch: str, **kw) -> int:
        monkeypatch.setenv("HIL_GIT_BRANCH", branch)
        options = CampaignOptions(bench=ws / "bench.yaml", budgets=ws / "budgets.yaml",
                                  models_config=ws / "variants.yaml", models_dir=ws / "models",
                                  results_db=ws / "r.sqlite", report_dir=ws / "report", trials=2, window=0.2,
                                  warmup=1, accuracy_samples=10, variants=["baseline-int8"], **kw)
        finish, _ = run(options, progress=lambda _: None)
        assert finish.run_id is not None
        return finish.run_id

    base = [session("main", noise_seed=k) for k in range(3)]
    cand = session("feature", inject=["baseline-int8:latency=1.2"])
    with ResultsStore(ws / "r.sqlite") as store:
        for r in [*base, cand]:
            files = store.artifacts(r, "baseline-int8", "profile")
            assert len(files) == 1, r
        latency = next(m.value for m in store.measurements(cand) if m.metric == "latency_ms")
        kept = LayerProfile.read(store.artifacts(cand, "baseline-int8", "profile")[0].path)
        assert kept.total_us / 1e3 == pytest.approx(latency, rel=0.005)
        out = write_report(store, cand, tmp_path / "report", baseline="main", tolerances=["latency_ms=5%"])
    md = (out / "report.md").read_text()
    assert "## Per-layer profile (simulated)" in md and "Where the time goes (simulated)" in md
    table = md[md.index(f"baseline-int8: per-layer change against run {base[-1]}"):]
    rows = [line for line in table.split("\n\n")[1].splitlines()[2:] if line.startswith("|")]
    assert rows, table[:800]
    cells = [line.strip("|").split("|") for line in rows]
    big = [float(c[5]) for c in cells if c[0].strip() and float(c[2].replace(",", "")) >= 100]  # whole-µs timer
    assert big and all(p == pytest.approx(20.0, abs=0.5) for p in big), rows  # every layer 20 % slower
