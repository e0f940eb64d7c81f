"""Driver registry: drivers register themselves where they are defined; the import graph has no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from instruments.oscilloscope import DRIVERS, Oscilloscope
from instruments.rigol import RigolDS1000Z
from instruments.scope import open_scope
from instruments.sim import ScopeSimulator
from tests.instruments.board import board_source

PACKAGE = Path(__file__).resolve().parents[2] / "instruments"
BUILT_IN = {"rigol", "rigol-mso5000", "keysight", "tektronix"}  # the names bench.yaml documents


@pytest.fixture
def restore_registry():
    saved = dict(DRIVERS)
    yield
    DRIVERS.clear()
    DRIVERS.update(saved)


def test_importing_instruments_scope_alone_makes_every_driver_available():
    code = "from instruments.scope import DRIVERS; print(' '.join(sorted(DRIVERS)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert set(out.stdout.split()) == BUILT_IN


def test_a_new_driver_registers_itself_and_open_scope_finds_it(restore_registry):
    class BenchtopScope(Oscilloscope, driver="benchtop-test"):
        idn_patterns = ("BENCHTOP LABS",)

    assert DRIVERS["benchtop-test"] is BenchtopScope and BenchtopScope.driver == "benchtop-test"
    with ScopeSimulator("rigol", board_source()) as sim:
        sim.faults.idn_override = "BENCHTOP LABS,BT-1,1,1.0"
        with open_scope(sim.resource, timeout_s=1) as scope:
            assert type(scope) is BenchtopScope
        with open_scope(sim.resource, driver="benchtop-test", timeout_s=1) as scope:
            assert type(scope) is BenchtopScope


def test_a_taken_driver_name_is_refused_and_unnamed_subclasses_stay_unregistered(restore_registry):
    with pytest.raises(TypeError, match="'rigol' is already taken by instruments.rigol.RigolDS1000Z"):
        class Impostor(Oscilloscope, driver="rigol"):
            pass

    class Tweaked(RigolDS1000Z):
        pass

    assert DRIVERS["rigol"] is RigolDS1000Z and Tweaked not in DRIVERS.values() and Tweaked.driver == ""


def _imports(path: Path) -> set[str]:
    """Every `instruments.*` module `path` imports, at any depth (function-level imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("instruments"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("instruments"))
    return {m for m in found if m != "instruments"}


def test_import_graph_of_the_instruments_modules_is_acyclic():
    graph = {f"instruments.{p.stem}": _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert not {m for m in graph["instruments.oscilloscope"] if m.removeprefix("instruments.") in
                ("rigol", "keysight", "tektronix", "scope")}, "the base module must not know its drivers"
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path + (module,))}"
        if module in done or module not in graph:
            return
        for dep in graph[module]:
            visit(dep, path + (module,))
        done.add(module)

    for module in graph:
        visit(module, ())
