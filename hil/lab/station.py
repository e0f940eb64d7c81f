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
        self._serial = None  # one RFC 2217 connection for the whole run (see dut())

    def start(self) -> LabStation:
        return self  # the exporter serves the port while the place is acquired: nothing local to check

    def stop(self) -> None:
        self._close_serial()

    def _close_serial(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except OSError:
                pass
            self._serial = None

    def dut(self):
        """A protocol client on the place's one RFC 2217 connection, opened once and kept: ser2net serves a port
        to one client at a time, and a connection opened right after one closed can be refused."""
        from hil.protocol import DutClient

        if self._serial is None or not self._serial.is_open:
            self._serial = _open_with_retries(self.place)
        return DutClient(self._serial, baudrate=self.spec.baud).open()

    def flash(self, model: bytes, *, arena_bytes: int | None = None, source: str = "model") -> None:
        if self.place.flash_service is None:
            self._close_serial()  # esptool takes the port through the same URL
            super().flash(model, arena_bytes=arena_bytes, source=source)
            return
        from hil.lab.flash import flash_over_service

        flash_over_service(self.place.flash_service, model, arena_bytes=arena_bytes, source=source)


OPEN_TRIES = 5
OPEN_RETRY_S = 0.5


def _open_with_retries(place: LabPlace):
    """open_serial, tried again a few times: ser2net can refuse a connection while it still closes the last."""
    import time

    from hil.lab.places import LabError, open_serial

    for attempt in range(OPEN_TRIES):
        try:
            return open_serial(place)
        except LabError:
            if attempt == OPEN_TRIES - 1:
                raise
            time.sleep(OPEN_RETRY_S)
    raise AssertionError("unreachable")
