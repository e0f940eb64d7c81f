"""Places of a shared lab through labgrid's own client (`labgrid.remote.client.ClientSession`): reserve them by
tags (labgrid reservations: waiting, priority), acquire them, resolve each one into what one station needs,
and release them at the end, on Ctrl-C, SIGTERM and exceptions too.

One reservation holds one place in labgrid 26 (a reservation has one filter group), so N places are N
reservations. Places are handed out as they are allocated (`Lab.reserve` returns the first ones, `Lab.more`
the later ones), so two runs that want all places never wait on each other's halves.

A place left acquired by a run that was killed (SIGKILL, a lost machine) stays acquired: labgrid ties it to the
owner name, not to a connection. Recover it with `labgrid-client -p PLACE release --kick` (`labgrid-client who`
shows the owner, `<user>-hil<pid>` on the host that ran the harness), or `labgrid-client -p PLACE release-from
HOST/USER` to release it only if that run still holds it.
"""

from __future__ import annotations

import asyncio
import getpass
import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from hil.errors import HilError
from hil.lab.config import LabConfig

SERIAL_CLASSES = ("NetworkSerialPort",)
SCOPE_CLASSES = ("PyVISADevice",)
FLASH_SERVICE_USER = "hil-flash"  # a NetworkService with this username is a place's model-flashing service
POWER_CLASSES = ("NetworkPowerPort", "PDUDaemonPort", "NetworkYKUSHPowerPort", "NetworkSiSPMPowerPort",
                 "NetworkUSBPowerPort", "TasmotaPowerPort")
CONNECT_TIMEOUT_S = 10.0
RPC_TIMEOUT_S = 15.0
SERIAL_READY_S = 10.0  # how long the exporter may take to start ser2net after an acquire
POLL_S = 0.5
_KEEPALIVE = [  # labgrid's client channel options (labgrid.remote.client.ClientSession)
    ("grpc.keepalive_time_ms", 7500), ("grpc.keepalive_timeout_ms", 10000), ("grpc.http2.ping_timeout_ms", 10000),
    ("grpc.http2.max_pings_without_data", 0)]


class LabError(HilError):
    """The lab cannot give this run what it asked for (unreachable coordinator, no matching place, ...)."""


@dataclass(frozen=True)
class LabPlace:
    """One acquired place, resolved into what one station needs: the board's serial URL, the scope's VISA
    resource, the exporter that serves them and the board's identity."""

    name: str
    exporter: str  # the labgrid exporter's name
    host: str  # the host that serves the serial port (the exporter's published hostname)
    serial_url: str  # rfc2217://HOST:PORT?ign_set_control (pyserial and esptool open it)
    baud: int
    board_id: str  # tag board_id if the place has one, else EXPORTER:DEVICE-PATH of its serial port
    scope_resource: str | None = None
    scope_host: str | None = None
    power: dict[str, Any] | None = None  # {"cls": ..., **params} of a power port labgrid drives
    tags: dict[str, str] = field(default_factory=dict)
    resources: tuple[str, ...] = ()  # exporter/group/cls/name of every resource the place holds
    # HOST:PORT of a model-flashing service the place exports (a NetworkService with username FLASH_SERVICE_USER:
    # the virtual lab's boards, which have no ROM bootloader); None: esptool flashes through `serial_url`
    flash_service: str | None = None


def visa_resource(params: dict[str, Any]) -> str:
    """The VISA resource string of a labgrid PyVISADevice: `TYPE::URL::INSTR` as labgrid's PyVISADriver builds it,
    or `TYPE::URL` when the URL already ends in a resource class (`HOST::5025::SOCKET`)."""
    kind, url = str(params.get("type", "")), str(params.get("url", ""))
    if url.upper().endswith(("::SOCKET", "::INSTR")):
        return f"{kind}::{url}"
    return f"{kind}::{url}::INSTR"


def _host_of_resource(resource: str) -> str | None:
    parts = resource.split("::")
    return parts[1] if len(parts) > 2 and parts[0].upper().startswith("TCPIP") else None


def open_serial(place: LabPlace, timeout: float = 0.02) -> Any:
    """The place's board as an open pyserial port over RFC 2217 (hand it to `hil.protocol.DutClient`). pyserial's
    rfc2217 backend refuses `write_timeout`, which DutClient sets when it opens a URL itself."""
    import serial

    try:
        return serial.serial_for_url(place.serial_url, baudrate=place.baud, timeout=timeout)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise LabError(f"place {place.name}: cannot open {place.serial_url} ({exc})") from None


_SESSIONS = itertools.count(1)


def owner_name() -> tuple[str, str]:
    """(host, user) a new Lab registers with the coordinator: the user gets `-hil<pid>` (`.<n>` for a process's
    n-th Lab) so that two runs of one user on one host are two owners (neither can take the other's reserved
    places), and `labgrid-client who` says which process holds a place."""
    host = os.environ.get("LG_HOSTNAME") or socket.gethostname()
    user = os.environ.get("LG_USERNAME") or getpass.getuser()
    n = next(_SESSIONS)
    return host, f"{user}-hil{os.getpid()}" + (f".{n}" if n > 1 else "")


class Lab:
    """A connection to a labgrid coordinator that reserves, acquires and releases places for one run.

    Use as a context manager: leaving it releases every place and cancels every reservation, also on Ctrl-C,
    on SIGTERM (turned into KeyboardInterrupt while the context is open in the main thread) and on exceptions.
    """

    def __init__(self, config: LabConfig, *, progress: Callable[[str], None] | None = None):
        self.config = config
        self.progress = progress or (lambda _msg: None)
        self.host, self.user = owner_name()
        self.acquired: dict[str, LabPlace] = {}
        self._tokens: dict[str, str | None] = {}  # reservation token -> place acquired for it (None: waiting)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Any = None
        self._old_sigterm: Any = None
        self._closed = False

    # -- connection -----------------------------------------------------------------------------------
    def open(self) -> Lab:
        """Connect to the coordinator; a LabError names it when it cannot be reached."""
        try:
            from labgrid.remote.client import ClientSession
        except ImportError as exc:
            raise LabError(f"labgrid is not installed ({exc}); install the project's requirements") from None
        host, user = self.host, self.user

        class _Session(ClientSession):  # the run's own owner name (see owner_name) and connection
            def __attrs_post_init__(self) -> None:
                super().__attrs_post_init__()
                # gRPC shares one connection between a process's channels to one address, and the coordinator
                # refuses a second client session on a connection: a channel of its own for each Lab
                import grpc
                from labgrid.remote.generated import labgrid_coordinator_pb2_grpc

                self.channel = grpc.aio.insecure_channel(target=self.address, options=[
                    *_KEEPALIVE, ("grpc.use_local_subchannel_pool", 1)])
                self.stub = labgrid_coordinator_pb2_grpc.CoordinatorStub(self.channel)

            def gethostname(self) -> str:
                return host

            def getuser(self) -> str:
                return user

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="labgrid-client", daemon=True)
        self._thread.start()
        address = self.config.coordinator

        async def start() -> Any:
            session = _Session(address=address, loop=asyncio.get_running_loop())
            try:
                await asyncio.wait_for(session.start(), CONNECT_TIMEOUT_S)
            except BaseException:
                session.stopping.set()
                await _quietly(session.stop())
                await _quietly(session.close())
                raise
            return session

        try:
            self._session = self._run(start(), CONNECT_TIMEOUT_S + 2)
        except Exception as exc:
            self._stop_loop()
            timed_out = isinstance(exc, TimeoutError | asyncio.TimeoutError)
            why = "no answer" if timed_out else str(exc) or type(exc).__name__
            raise LabError(f"cannot reach the labgrid coordinator at {address} ({why}); is labgrid-coordinator "
                           f"running there? (bench file lab.coordinator)") from None
        self._closed = False
        self._install_sigterm()
        return self

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float = RPC_TIMEOUT_S) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _rpc(self, name: str, request: Any) -> Any:
        import grpc

        async def call() -> Any:
            try:
                return await getattr(self._session.stub, name)(request)
            except grpc.aio.AioRpcError as exc:
                raise LabError(f"labgrid coordinator {self.config.coordinator}: {name}: {exc.details()}") from None

        return self._run(call())

    def _sync(self) -> None:
        """Wait until the coordinator's updates so far have reached this client."""
        if not self._run(self._session.sync_with_coordinator()):
            raise LabError(f"lost the connection to the labgrid coordinator at {self.config.coordinator}")

    def _snapshot(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(places, resources) as this client sees them now, copied in the client's thread."""

        async def copy() -> tuple[dict[str, Any], dict[str, Any]]:
            s = self._session
            places = {n: p.asdict() | {"name": n, "_obj": p} for n, p in s.places.items()}
            resources = {e: {g: {r: dict(v.data) for r, v in grp.items()} for g, grp in groups.items()}
                         for e, groups in s.resources.items()}
            return places, resources

        return self._run(copy())

    # -- places ---------------------------------------------------------------------------------------
    def matching(self) -> list[str]:
        """Names of the places whose tags include the configured tags, sorted."""
        self._sync()
        places, _ = self._snapshot()
        want = self.config.tags.items()
        return sorted(n for n, p in places.items() if want <= p["tags"].items())

    def reserve(self) -> list[LabPlace]:
        """Reserve the configured number of places, wait (up to `wait_s`) until at least one is allocated,
        acquire every allocated one and return them resolved. The others keep waiting: `more()` collects them.

        Raises LabError when no place matches the tags, when fewer places match than are wanted, when the
        wait times out or when a place lacks a resource a station needs; nothing stays reserved then.
        """
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        names = self.matching()
        tags = self.config.filter_text
        if not names:
            raise LabError(f"no place of the lab at {self.config.coordinator} has the tags {tags}; "
                           "`labgrid-client -v places` lists the places and their tags")
        wanted = len(names) if self.config.places == "all" else self.config.places
        if wanted > len(names):
            raise LabError(f"{wanted} places wanted but only {len(names)} have the tags {tags} "
                           f"({', '.join(names)}); lower lab.places or tag more places")
        for _ in range(wanted):
            request = pb.CreateReservationRequest(
                filters={"main": pb.Reservation.Filter(filter=dict(self.config.tags))}, prio=self.config.priority)
            token = self._rpc("CreateReservation", request).reservation.token
            self._tokens[token] = None
        self.progress(f"lab: {wanted} reservation(s) for {tags} at {self.config.coordinator} (priority "
                      f"{self.config.priority:g}), waiting up to {self.config.wait_s:g} s")
        deadline = time.monotonic() + self.config.wait_s
        try:
            while True:
                got = self.more()
                if got:
                    return got
                if time.monotonic() > deadline:
                    raise LabError(f"no place with the tags {tags} was free within {self.config.wait_s:g} s "
                                   f"(lab.wait_s); `labgrid-client who` shows who holds them")
                time.sleep(POLL_S)
        except BaseException:
            self.release()
            raise

    def more(self) -> list[LabPlace]:
        """Acquire and resolve the places allocated to this run's waiting reservations since the last call."""
        from labgrid.remote.common import Reservation, ReservationState
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        out = []
        for token, place in list(self._tokens.items()):
            if place is not None:
                continue
            res = Reservation.from_pb2(self._rpc("PollReservation", pb.PollReservationRequest(token=token)).reservation)
            state = res.state
            if state is ReservationState.allocated:
                name = res.allocations["main"][0]
                out.append(self._acquire(name, token))
            elif state in (ReservationState.expired, ReservationState.invalid):
                self._tokens.pop(token)
        return out

    @property
    def waiting(self) -> int:
        """How many of this run's reservations still wait for a place."""
        return sum(p is None for p in self._tokens.values())

    def _acquire(self, name: str, token: str) -> LabPlace:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        self._rpc("AcquirePlace", pb.AcquirePlaceRequest(placename=name))
        self._tokens[token] = name
        self.acquired[name] = None  # type: ignore[assignment]  # held, not yet resolved: released on failure
        place = self._resolve(name)
        self.acquired[name] = place
        self.progress(f"lab: acquired {name} ({place.exporter} on {place.host}: {place.serial_url}"
                      f"{', scope ' + place.scope_resource if place.scope_resource else ''})")
        return place

    def _resolve(self, name: str) -> LabPlace:
        """The acquired place's resources as one station: waits until the exporter serves the serial port."""
        needs = self.config.needs
        deadline = time.monotonic() + SERIAL_READY_S
        while True:
            self._sync()
            places, resources = self._snapshot()
            held = _held(places[name], resources)
            serial = _pick(held, SERIAL_CLASSES, needs.serial)
            if serial is None:
                raise LabError(f"place {name} has no {needs.serial or 'NetworkSerialPort'} (the board's serial "
                               f"port); it holds {_describe(held)}. Add the exporter's RawSerialPort/USBSerialPort "
                               f"to the place: labgrid-client -p {name} add-match EXPORTER/GROUP/NetworkSerialPort")
            params = serial[1]["params"]
            if params.get("port") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if not params.get("port"):
            raise LabError(f"place {name}: the exporter {serial[0].split('/')[0]} did not start ser2net for "
                           f"{params.get('extra', {}).get('path')} within {SERIAL_READY_S:g} s (is ser2net installed "
                           "on the exporter host?)")
        scope = _pick(held, SCOPE_CLASSES, needs.scope_name)
        if needs.scope and scope is None:
            raise LabError(f"place {name} has no PyVISADevice (the scope's VISA resource); it holds "
                           f"{_describe(held)}. Add one to the exporter's group (type: TCPIP, url: HOST or "
                           "HOST::PORT::SOCKET) and match it to the place")
        power = _pick(held, POWER_CLASSES, needs.power_name)
        if needs.power and power is None:
            raise LabError(f"place {name} has no power port ({', '.join(POWER_CLASSES)}); it holds "
                           f"{_describe(held)}")
        exporter, group = serial[0].split("/")[:2]
        tags = dict(places[name]["tags"])
        flash = next((d["params"] for _, d in held if d["cls"] == "NetworkService"
                      and d["params"].get("username") == FLASH_SERVICE_USER), None)
        scope_resource = visa_resource(scope[1]["params"]) if scope is not None else None
        return LabPlace(
            name=name, exporter=exporter, host=str(params["host"]),
            serial_url=f"rfc2217://{params['host']}:{params['port']}?ign_set_control",
            baud=int(params.get("speed") or 115200),
            board_id=tags.get("board_id") or f"{exporter}:{params.get('extra', {}).get('path') or group}",
            scope_resource=scope_resource,
            scope_host=_host_of_resource(scope_resource) if scope_resource else None,
            power=None if power is None else {"cls": power[1]["cls"], **{
                k: v for k, v in power[1]["params"].items() if k != "extra"}},
            tags=tags, resources=tuple(sorted(path for path, _ in held)),
            flash_service=None if flash is None else f"{flash['address']}:{flash.get('port', 22)}",
        )

    def lost(self, place: LabPlace, wait_s: float = 0.0) -> str | None:
        """Why an acquired place can no longer serve (its exporter or a resource went away), or None. `wait_s`:
        keep looking that long, for a failure the coordinator has not seen yet (an exporter's stream ending)."""
        deadline = time.monotonic() + wait_s
        while True:
            reason = self._lost(place)
            if reason is not None or time.monotonic() >= deadline:
                return reason
            time.sleep(0.2)

    def _lost(self, place: LabPlace) -> str | None:
        try:
            self._sync()
            places, resources = self._snapshot()
        except Exception as exc:  # the coordinator itself is gone: the place cannot be trusted either
            return f"coordinator {self.config.coordinator} unreachable ({exc})"
        p = places.get(place.name)
        if p is None:
            return f"place {place.name} was deleted from the coordinator"
        if p["acquired"] != f"{self.host}/{self.user}":
            return f"place {place.name} is no longer held by this run (now: {p['acquired'] or 'released'})"
        for path in place.resources:
            exporter, group, _cls, rname = path.split("/")
            data = resources.get(exporter, {}).get(group, {}).get(rname, {})
            if not data.get("cls"):
                return f"exporter {exporter} went away ({rname} of {place.name} is no longer exported)"
            if not data.get("avail"):
                return f"{rname} of {place.name} on exporter {exporter} is no longer available"
        return None

    def define_place(self, name: str, patterns: list[str], tags: dict[str, str], comment: str = "") -> None:
        """Create a place on the coordinator with resource matches (`EXPORTER/GROUP/*`) and tags: what
        `labgrid-client -p NAME create; add-match ...; set-tags ...` does, for a lab set up by a program."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        self._rpc("AddPlace", pb.AddPlaceRequest(name=name))
        for pattern in patterns:
            self._rpc("AddPlaceMatch", pb.AddPlaceMatchRequest(placename=name, pattern=pattern))
        self._rpc("SetPlaceTags", pb.SetPlaceTagsRequest(placename=name, tags=tags))
        if comment:
            self._rpc("SetPlaceComment", pb.SetPlaceCommentRequest(placename=name, comment=comment))

    def exported(self) -> dict[str, list[str]]:
        """Exporter name -> its `GROUP/NAME` resources that are available now (what `labgrid-client resources`
        lists)."""
        self._sync()
        _, resources = self._snapshot()
        return {e: sorted(f"{g}/{r}" for g, grp in groups.items() for r, d in grp.items() if d.get("avail"))
                for e, groups in resources.items()}

    # -- release --------------------------------------------------------------------------------------
    def release_place(self, name: str) -> None:
        """Release one place (a run that has no more work for it lets others have it); errors are reported,
        not raised, so that the other places are still released."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        self.acquired.pop(name, None)
        for token, place in list(self._tokens.items()):
            if place == name:
                self._tokens.pop(token)
                # the reservation goes first: labgrid's coordinator allocates a released place to a waiting
                # reservation at once only when the place no longer carries a reservation (else on its next
                # periodic scheduling, seconds later)
                self._cancel(token)
                try:
                    self._rpc("ReleasePlace", pb.ReleasePlaceRequest(placename=name, fromuser=f"{self.host}/"
                                                                                       f"{self.user}"))
                except Exception as exc:
                    self.progress(f"lab: could not release {name} ({exc}); release it with "
                                  f"`labgrid-client -p {name} release --kick`")

    def release(self) -> None:
        """Release every acquired place and cancel every reservation of this run (idempotent)."""
        if self._session is None:
            return
        for name in [p for p in self._tokens.values() if p is not None]:
            self.release_place(name)
        for token in list(self._tokens):
            self._tokens.pop(token)
            self._cancel(token)

    def _cancel(self, token: str) -> None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        try:
            self._rpc("CancelReservation", pb.CancelReservationRequest(token=token))
        except Exception:  # expired already, or the coordinator is gone: nothing left to cancel
            pass

    def close(self) -> None:
        """Release everything, then disconnect from the coordinator."""
        if self._closed:
            return
        self._closed = True
        try:
            self.release()
        finally:
            self._restore_sigterm()
            if self._session is not None:
                session, self._session = self._session, None
                try:
                    self._run(_quietly(session.stop()), 5)
                    self._run(_quietly(session.close()), 5)
                except Exception:
                    pass
            self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            if not self._loop.is_running():
                self._loop.close()
            self._loop, self._thread = None, None

    def _install_sigterm(self) -> None:
        """SIGTERM (a cancelled CI job) becomes KeyboardInterrupt, so the context's exit releases the places."""
        if threading.current_thread() is not threading.main_thread():
            return

        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        self._old_sigterm = signal.signal(signal.SIGTERM, interrupt)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def __enter__(self) -> Lab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _quietly(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        await coro
    except BaseException:  # cleanup of a session that may already be dead
        pass


def _held(place: dict[str, Any], resources: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(exporter/group/cls/name, resource data) of every exported resource the place's matches select."""
    obj = place["_obj"]
    out = []
    for exporter, groups in sorted(resources.items()):
        for group, entries in sorted(groups.items()):
            for rname, data in sorted(entries.items()):
                if not data.get("cls"):
                    continue
                path = (exporter, group, data["cls"], rname)
                match = obj.getmatch(path)
                if match is not None:
                    out.append(("/".join(path), data | {"name": match.rename or rname}))
    return out


def _pick(held: list[tuple[str, dict[str, Any]]], classes: tuple[str, ...],
          name: str | None) -> tuple[str, dict[str, Any]] | None:
    found = [h for h in held if h[1]["cls"] in classes and (name is None or h[1]["name"] == name)]
    return found[0] if found else None


def _describe(held: list[tuple[str, dict[str, Any]]]) -> str:
    return ", ".join(f"{d['name']} ({d['cls']})" for _, d in held) or "no exported resource"
