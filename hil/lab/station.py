"""A lab place as a station: the bench's first board entry gives every place its board settings (chip, baud,
marker GPIO) and the bench's scope section its channels; the place gives the ports."""

from __future__ import annotations

from dataclasses import replace

from hil.bench import BenchConfig, StationSpec
from hil.errors import HilError
from hil.lab.places import LabPlace
from hil.station import RealStation


def place_spec(bench: BenchConfig, place: LabPlace) -> StationSpec:
    """The station of `place`: the bench's first board as the template, with the place's serial URL and scope."""
    template = bench.station()
    board = template.board.model_copy(update={"name": place.name, "port": place.serial_url, "baud": place.baud})
    scope = template.scope
    if scope is not None:
        if place.scope_resource is None:
            raise HilError(f"place {place.name} exports no scope (PyVISADevice), and the bench measures with one; "
                           "add the scope to the place's exporter group, or set scope: null and a meter")
        scope = scope.model_copy(update={"resource": place.scope_resource})
    return replace(template, board=board, scope=scope)


class LabStation(RealStation):
    """One acquired place: its board over the exporter's RFC 2217 port, its scope's VISA resource; a model is
    written by the place's flashing service where it exports one (the virtual lab), else by esptool through
    the serial URL."""

    def __init__(self, spec: StationSpec, place: LabPlace):
        super().__init__(spec)
        self.place = place
        self.simulated = False  # what the board says in hello decides (the virtual lab's boards say simulated)

    def start(self) -> LabStation:
        return self  # the exporter serves the port while the place is acquired: nothing local to check

    def flash(self, model: bytes, *, arena_bytes: int | None = None, source: str = "model") -> None:
        if self.place.flash_service is None:
            super().flash(model, arena_bytes=arena_bytes, source=source)
            return
        from hil.lab.flash import flash_over_service

        flash_over_service(self.place.flash_service, model, arena_bytes=arena_bytes, source=source)
