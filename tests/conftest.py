"""Shared test fixtures: a tiny but real variant matrix built once per session by the real factory."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

# A small reference CNN with short training: every recipe and mode runs for real, in about a minute.
TINY_CONFIG = {
    "version": 1,
    "seed": 0,
    "model": {"filters": [4, 8, 8], "dense_units": [16, 16]},
    "training": {"epochs": 4, "batch_size": 32, "learning_rate": 3.0e-3},
    "representative_samples": 50,
    "recipes": {
        "baseline": {"kind": "baseline"},
        "pruned": {"kind": "pruned", "target_sparsity": 0.5, "epochs": 2, "learning_rate": 1.0e-4},
        "qat": {"kind": "qat", "epochs": 1, "learning_rate": 1.0e-4},
        "clustered": {"kind": "clustered", "clusters": 8, "epochs": 1, "learning_rate": 1.0e-4},
        "distilled": {
            "kind": "distilled",
            "student": {"filters": [4, 4, 8], "dense_units": [8, 8]},
            "epochs": 4,
            "learning_rate": 3.0e-3,
        },
    },
    "variants": {
        "baseline": ["no_opt", "dynamic", "float16", "int_fallback", "int8"],
        "pruned": ["int8"],
        "qat": ["int8"],
        "clustered": ["int8", "int8_lut"],
        "distilled": ["int8"],
    },
    "aliases": {"cnn_not_optimised-int8_quant": "baseline-int8"},
}
TINY_LIMITS = {"limit_train": 600, "limit_test": 150}


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny variant matrix as a real YAML file."""
    path = tmp_path_factory.mktemp("config") / "variants.yaml"
    path.write_text(yaml.safe_dump(TINY_CONFIG))
    return path


@pytest.fixture(scope="session")
def tiny_build(tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """Build the tiny matrix once: (artifact folder, metrics table)."""
    from models.factory import build

    root = tmp_path_factory.mktemp("factory")
    table = build(
        tiny_config,
        root / "models",
        "digits",
        cache_dir=root / "cache",
        progress=lambda _: None,
        **TINY_LIMITS,
    )
    return root / "models", table


BASELINE_CONFIG = {**TINY_CONFIG, "variants": {"baseline": ["no_opt", "dynamic", "int8"]}}


@pytest.fixture(scope="session")
def baseline_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's baseline variants built on the whole digits set, as a campaign builds them: a folder
    with `variants.yaml`, `models/` and `cache/`. Copy it before use: a campaign rewrites `models/`."""
    from models.factory import build

    root = tmp_path_factory.mktemp("baseline-build")
    (root / "variants.yaml").write_text(yaml.safe_dump(BASELINE_CONFIG))
    build(root / "variants.yaml", root / "models", "digits", progress=lambda _: None)
    return root


@pytest.fixture(scope="session")
def tiny_variants(tiny_build: tuple[Path, pd.DataFrame]) -> dict[str, Path]:
    """Variant name -> .tflite file of the tiny matrix (baseline-no_opt, baseline-int8, ...)."""
    from models.artifacts import load_artifacts

    return {a.name: a.tflite for a in load_artifacts(tiny_build[0])}


@pytest.fixture(scope="session")
def digits_test() -> tuple[np.ndarray, np.ndarray]:
    """The 397-image digits test split: x float32 [N, 32, 32, 1] in [0, 1], y int labels."""
    from models.datasets import load

    ds = load("digits")
    return ds.x_test, ds.y_test


# -- the last line of `make test`: tests skipped because a Debian package is missing -------------------------

_APT = re.compile(r"apt-get install ((?:[a-z0-9][a-z0-9.+-]+ ?)+)")


def missing_tool_line(reasons: list[str]) -> str | None:
    """One line naming how many tests skipped for a missing tool and the Debian packages to install, from the
    skip reasons (each names its package as `apt-get install PKG ...`); None when no skip names a package."""
    packages: dict[str, None] = {}
    count = 0
    for reason in reasons:
        found = _APT.findall(reason)
        if found:
            count += 1
            packages.update(dict.fromkeys(p for group in found for p in group.split()))
    if not count:
        return None
    tests = "test" if count == 1 else "tests"
    return (f"{count} {tests} skipped for a missing tool; to run them: sudo apt-get install "
            f"{' '.join(packages)} (README, \"Two commands\")")


def pytest_unconfigure(config: pytest.Config) -> None:
    """After pytest's own summary: the missing-tool skips of the session, so `make test` ends with them."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or hasattr(config, "workerinput"):  # xdist workers report to the controller
        return
    reasons = []
    for report in reporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reasons.append(str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr))
    line = missing_tool_line(reasons)
    if line is not None:
        reporter.write_line(line, yellow=True, bold=True)
