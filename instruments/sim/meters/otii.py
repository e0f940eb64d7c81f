"""`OtiiSimulator`: the Otii 3 application's (or Otii Server's) JSON automation API on loopback TCP.

Each message is one JSON object followed by CRLF. On connect the server sends
`{"type": "information", "info": "connected", "data": {...}}`; each request
`{"type": "request", "cmd": ..., "trans_id": ..., "data": {...}}` gets
`{"type": "response", "cmd": ..., "trans_id": ..., "data": {...}}` or
`{"type": "error", "cmd": ..., "trans_id": ..., "errorcode": ..., "data": {...}}`.

One simulated Arc (or Ace) is attached. Recording runs from `project_start_recording` to
`project_stop_recording`: the main-current channel `mc` is the source's current averaged over each sample
interval and quantized to the active range's step; the digital channels `i1`/`i2` are value-change events
(an initial value at t=0, then one event per edge, edge times resolved to `gpi_resolution_s`).
"""

from __future__ import annotations

import contextlib
import json
import math
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instruments.sim.meters.common import MeterFrontEnd, MeterProbe
from instruments.sim.signals import SignalSource
from instruments.sim.tcp import TcpServer

DEFAULT_PORT = 1905
#: Selectable `mc` sample rates (S/s): Arc 1-4 kS/s; Arc Pro / Ace Pro up to 50 kS/s.
SAMPLE_RATES = {"Arc": (1000, 2000, 4000), "Ace": (1000, 2000, 4000, 5000, 10000, 20000, 50000),
                "Arc Pro": (1000, 2000, 4000, 5000, 10000, 20000, 50000)}
#: (upper limit A, step A) of the low and high current ranges as simulated (auto range switches between them).
LOW_RANGE = (0.019, 5e-9)
HIGH_RANGE = (5.0, 1e-6)


@dataclass
class OtiiFaults:
    """Faults to inject while serving; change them at any time."""

    short_data: bool = False  # recording_get_channel_data returns half the values asked for
    garbage_line: bool = False  # the next data answer is not JSON
    drop_on_data: bool = False  # close the connection instead of answering channel data
    nan_at: int | None = None  # a null value at that index of the next mc answer


@dataclass
class _Recording:
    rid: int
    name: str
    t_start: float
    t_stop: float | None = None
    channels: dict[str, Any] = field(default_factory=dict)  # "mc": (timestamp, interval, values); "i1": events


class OtiiSimulator(TcpServer):
    """An Otii automation server on `host:port` with one Arc fed by a `SignalSource` (current A, marker on GPI1)."""

    thread_name = "otii-sim"

    def __init__(self, source: SignalSource | None = None, probe: MeterProbe | None = None, *,
                 model: str = "Arc Pro", marker_input: int = 1, noise_a: float = 0.0, seed: int | None = None,
                 host: str = "127.0.0.1", port: int = 0, logged_in: bool = True,
                 gpi_resolution_s: float = 1e-6) -> None:
        if model not in SAMPLE_RATES:
            raise ValueError(f"model must be one of {', '.join(SAMPLE_RATES)}, got {model!r}")
        self.front = MeterFrontEnd(source, probe, noise_a=noise_a, seed=seed)
        self.model = model
        self.marker_input = marker_input
        self.gpi_resolution_s = gpi_resolution_s
        self.device = {"device_id": "Arc5E0000000000000000000000000001" if model != "Ace" else
                       "Ace5E0000000000000000000000000001", "name": model, "type": model.split()[0]}
        self.version = {"hw_version": "1.1" if model == "Arc" else "2.0", "fw_version": "1.2.6"}
        self.settings: dict[str, Any] = {"main_voltage": 3.3, "max_current": 0.5, "range": "high", "main": False,
                                         "exp_port": False, "exp_voltage": 3.3, "power_regulation": "voltage",
                                         "channels": set(), "rates": {"mc": 1000}, "in_project": False}
        self.logged_in = logged_in
        self.licenses = [{"id": 1001, "type": "Automation", "available": True, "reserved_to": "", "hostname": ""}]
        self.projects: set[int] = set()
        self.recordings: list[_Recording] = []
        self.recording: _Recording | None = None
        self.faults = OtiiFaults()
        self.requests: deque[dict] = deque(maxlen=10_000)  # every request received, parsed
        self.raw_requests: deque[bytes] = deque(maxlen=10_000)  # the bytes of every request line
        self._init_tcp(host, port)
        self._lock = threading.RLock()
        self._next_id = 1

    @property
    def source(self) -> SignalSource | None:
        return self.front.source

    @source.setter
    def source(self, value: SignalSource | None) -> None:
        self.front.source = value

    # ---- serving --------------------------------------------------------------------------------
    def _send(self, conn: socket.socket, message: dict | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode("utf-8")
        conn.sendall(data + b"\r\n")

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            self._send(conn, {"type": "information", "info": "connected",
                              "data": {"otii_version": "3.5.5", "protocol_version": "1.0", "server": "otii-sim"}})
            while not self._stop.is_set():
                r, _, _ = select.select([conn], [], [], 0.1)
                if not r:
                    continue
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    if line.strip() and not self._handle(conn, line):
                        return
        except OSError:
            return
        finally:
            self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _handle(self, conn: socket.socket, line: bytes) -> bool:
        self.raw_requests.append(line)
        try:
            req = json.loads(line)
        except ValueError as exc:
            self._send(conn, {"type": "error", "errorcode": "Not able to parse request", "cmd": "",
                              "data": {"parse_error": str(exc), "data": line.decode("utf-8", "replace")}})
            return True
        self.requests.append(req)
        cmd, tid, data = req.get("cmd", ""), req.get("trans_id"), req.get("data") or {}
        handler = getattr(self, "_cmd_" + cmd.replace("-", "_"), None)
        if handler is None:
            self._send(conn, {"type": "error", "cmd": cmd, "trans_id": tid, "errorcode": "Invalid command",
                              "data": {}})
            return True
        with self._lock:
            try:
                out = handler(data)
            except _OtiiError as err:
                self._send(conn, {"type": "error", "cmd": cmd, "trans_id": tid, "errorcode": err.code,
                                  "data": err.data})
                return True
        f = self.faults
        if cmd == "recording_get_channel_data":
            if f.drop_on_data:
                return False
            if f.garbage_line:
                f.garbage_line = False
                self._send(conn, b'{"type": "response", "cmd": "recording_get_channel_data", "data": {"valu')
                return True
        self._send(conn, {"type": "response", "cmd": cmd, "trans_id": tid, "data": out or {}})
        return True

    # ---- requests -------------------------------------------------------------------------------
    def _device(self, data: dict) -> None:
        if "device_id" not in data:
            raise _OtiiError("Missing key in request", {"key": "device_id"})
        if data["device_id"] != self.device["device_id"]:
            raise _OtiiError("Device not connected", {"device_id": str(data["device_id"])})

    def _cmd_otii_is_logged_in(self, data):
        return {"logged_in": self.logged_in}

    def _cmd_otii_login(self, data):
        self.logged_in = True

    def _cmd_otii_logout(self, data):
        self.logged_in = False

    def _cmd_otii_get_licenses(self, data):
        return {"licenses": [dict(lic) for lic in self.licenses]}

    def _cmd_otii_reserve_license(self, data):
        for lic in self.licenses:
            if lic["id"] == data.get("license_id"):
                lic["reserved_to"], lic["hostname"] = "sim", "localhost"
                return
        raise _OtiiError("License could not be reserved", {})

    def _cmd_otii_return_license(self, data):
        for lic in self.licenses:
            if lic["id"] == data.get("license_id"):
                lic["reserved_to"], lic["hostname"] = "", ""

    def _cmd_otii_has_license(self, data):
        return {"has_license": any(lic["reserved_to"] for lic in self.licenses)}

    def _cmd_otii_get_devices(self, data):
        return {"devices": [dict(self.device)]}

    def _cmd_otii_get_active_project(self, data):
        return {"project_id": max(self.projects) if self.projects else -1}

    def _cmd_otii_create_project(self, data):
        pid = self._next_id
        self._next_id += 1
        self.projects.add(pid)
        return {"project_id": pid}

    def _cmd_project_close(self, data):
        self.projects.discard(data.get("project_id"))

    def _cmd_arc_get_version(self, data):
        self._device(data)
        return dict(self.version)

    def _cmd_arc_add_to_project(self, data):
        self._device(data)
        self.settings["in_project"] = True

    def _cmd_arc_calibrate(self, data):
        self._device(data)
        self.settings["calibrated_at"] = time.time()

    def _cmd_arc_set_main_voltage(self, data):
        self._device(data)
        self.settings["main_voltage"] = float(data["value"])

    def _cmd_arc_get_main_voltage(self, data):
        self._device(data)
        return {"value": self.settings["main_voltage"]}

    def _cmd_arc_set_max_current(self, data):
        self._device(data)
        self.settings["max_current"] = float(data["value"])

    def _cmd_arc_set_range(self, data):
        self._device(data)
        if data.get("range") not in ("low", "high"):
            raise _OtiiError("Invalid key value", {"key": "range", "value": data.get("range")})
        self.settings["range"] = data["range"]

    def _cmd_arc_get_range(self, data):
        self._device(data)
        return {"range": self.settings["range"]}

    def _cmd_arc_set_power_regulation(self, data):
        self._device(data)
        self.settings["power_regulation"] = data["mode"]

    def _cmd_arc_enable_channel(self, data):
        self._device(data)
        (self.settings["channels"].add if data["enable"] else self.settings["channels"].discard)(data["channel"])

    def _cmd_arc_set_channel_samplerate(self, data):
        self._device(data)
        if int(data["value"]) not in SAMPLE_RATES[self.model]:
            raise _OtiiError("Invalid key value", {"key": "value", "value": data["value"]})
        self.settings["rates"][data["channel"]] = int(data["value"])

    def _cmd_arc_get_channel_samplerate(self, data):
        self._device(data)
        return {"value": self.settings["rates"].get(data["channel"], 1000)}

    def _cmd_arc_enable_exp_port(self, data):
        self._device(data)
        self.settings["exp_port"] = bool(data["enable"])

    def _cmd_arc_set_exp_voltage(self, data):
        self._device(data)
        self.settings["exp_voltage"] = float(data["value"])

    def _cmd_arc_set_main(self, data):
        self._device(data)
        self.settings["main"] = bool(data["enable"])

    def _cmd_arc_get_main(self, data):
        self._device(data)
        return {"value": self.settings["main"]}

    def _cmd_arc_is_connected(self, data):
        self._device(data)
        return {"connected": True}

    def _cmd_project_start_recording(self, data):
        if data.get("project_id") not in self.projects:
            raise _OtiiError("Project does not exist", {})
        now = self.front.arm()
        self.recording = _Recording(self._next_id, f"Recording {len(self.recordings) + 1}", now)
        self._next_id += 1

    def _cmd_project_stop_recording(self, data):
        rec = self.recording
        if rec is None:
            raise _OtiiError("Command failure", {"message": "no recording running"})
        rec.t_stop = self.front.now()
        self._record(rec)
        self.recordings.append(rec)
        self.recording = None

    def _cmd_project_get_last_recording(self, data):
        if not self.recordings:
            return {"recording_id": -1}
        rec = self.recordings[-1]
        return {"recording_id": rec.rid, "name": rec.name}

    def _rec(self, data) -> _Recording:
        for rec in self.recordings:
            if rec.rid == data.get("recording_id"):
                return rec
        raise _OtiiError("Command failure", {"message": f"no recording {data.get('recording_id')}"})

    def _cmd_recording_delete(self, data):
        self.recordings.remove(self._rec(data))

    def _channel(self, data) -> Any:
        self._device(data)
        rec = self._rec(data)
        ch = data.get("channel")
        if ch not in rec.channels:
            raise _OtiiError("Command failure", {"message": f"channel {ch} was not recorded"})
        return rec, rec.channels[ch]

    def _cmd_recording_get_channel_info(self, data):
        rec, chan = self._channel(data)
        if isinstance(chan, tuple):
            return {"offset": 0.0, "from": 0.0, "to": rec.t_stop - rec.t_start, "sample_rate": 1.0 / chan[1]}
        return {"offset": 0.0, "from": 0.0, "to": rec.t_stop - rec.t_start, "sample_rate": 0}

    def _cmd_recording_get_channel_data_count(self, data):
        _, chan = self._channel(data)
        return {"count": len(chan[2]) if isinstance(chan, tuple) else len(chan)}

    def _cmd_recording_get_channel_data(self, data):
        _, chan = self._channel(data)
        index, count = int(data["index"]), int(data["count"])
        f = self.faults
        if isinstance(chan, tuple):
            ts, interval, values = chan
            part = values[index:index + count]
            if f.short_data:
                part = part[: len(part) // 2]
            out = [float(v) for v in part]
            if f.nan_at is not None and 0 <= f.nan_at - index < len(out):
                out[f.nan_at - index] = None
                f.nan_at = None
            return {"data_type": "analog", "timestamp": ts + index * interval, "interval": interval, "values": out}
        part = chan[index:index + count]
        if f.short_data:
            part = part[: len(part) // 2]
        return {"data_type": "digital", "values": [{"timestamp": t, "value": v} for t, v in part]}

    # ---- the recording --------------------------------------------------------------------------
    def _record(self, rec: _Recording) -> None:
        rate = self.settings["rates"].get("mc", 1000)
        dt = 1.0 / rate
        duration = rec.t_stop - rec.t_start
        n = int(math.floor(duration * rate))
        if not self.settings["main"]:  # the Arc's output is off: no current flows through it
            amps = np.zeros(n)
        else:
            amps = self.front.current(rec.t_start + dt * np.arange(n), dt)
        amps = np.minimum(amps, self.settings["max_current"])
        if self.settings["range"] == "low":
            step = np.full(n, LOW_RANGE[1])
            amps = np.clip(amps, -LOW_RANGE[0], LOW_RANGE[0])
        else:  # "high" is Otii's automatic range: the low range's resolution while the current fits it
            step = np.where(np.abs(amps) < LOW_RANGE[0], LOW_RANGE[1], HIGH_RANGE[1])
        amps = np.rint(amps / step) * step
        channels = self.settings["channels"]
        if "mc" in channels:
            rec.channels["mc"] = (0.0, dt, amps.astype(np.float32).astype(np.float64).tolist())
        for pin in (1, 2):
            name = f"i{pin}"
            if name in channels:
                rec.channels[name] = self._events(rec, pin)

    def _events(self, rec: _Recording, pin: int) -> list[tuple[float, bool]]:
        res = self.gpi_resolution_s
        n = int((rec.t_stop - rec.t_start) / res)
        if pin != self.marker_input or not self.settings["exp_port"]:
            return [(0.0, False)]
        events: list[tuple[float, bool]] = []
        prev = None
        for k0 in range(0, n, 1 << 20):
            k = np.arange(k0, min(n, k0 + (1 << 20)))
            lv = self.front.logic(rec.t_start + k * res)
            if prev is None:
                events.append((0.0, bool(lv[0])))
            else:
                lv = np.concatenate(([prev], lv))
                k = np.concatenate(([k[0] - 1], k))
            edges = np.flatnonzero(np.diff(lv.astype(np.int8))) + 1
            events += [(float(k[i] * res), bool(lv[i])) for i in edges]
            prev = lv[-1]
        return events


class _OtiiError(Exception):
    def __init__(self, code: str, data: dict) -> None:
        super().__init__(code)
        self.code, self.data = code, data
