"""Qoitech Otii Arc / Arc Pro / Ace through `otii-tcp-client` (JSON over TCP to the Otii 3 app or Otii Server).

The Otii application must run with its TCP server enabled (default port 1905) and an Automation licence;
`otii-tcp-client` logs in and reserves the licence itself (credentials file or OTII_USERNAME/OTII_PASSWORD).
This driver adds the Arc to a project, sets the main output, the `mc` sample rate and the expansion port
(digital inputs GPI1/GPI2 at `io_voltage`), records between `arm()` and `capture()`, then downloads `mc`
and the marker's value-change events. Every answer is checked (counts, interval, finite values, ordered
events): a short, malformed or interrupted download raises `MeterStreamError`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from instruments.errors import InstrumentError
from instruments.meters.base import CurrentMeter, MeterLimits, MeterStreamError, current_waveform, logic_waveform

DEFAULT_PORT = 1905
#: Nominal current steps (A) of the Arc's low range (below ~19 mA) and of the automatic/high range above it.
LOW_RANGE_A, LOW_STEP_A, HIGH_STEP_A = 0.019, 5e-9, 1e-6


def parse_resource(resource: str) -> tuple[str, int]:
    """`host`, `host:port` or `otii://host:port` -> (host, port)."""
    text = resource.split("://", 1)[-1].strip() or "127.0.0.1"
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(DEFAULT_PORT))
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise InstrumentError(f"Otii resource must be host[:port], got {resource!r}") from None


def marker_fractions(events: list[dict], t_first: float, dt: float, n: int) -> np.ndarray:
    """Fraction of each sample interval [t_k - dt/2, t_k + dt/2) during which the input was high.

    `events` are Otii digital values `{"timestamp": s, "value": bool}` in time order; the first one is the
    level at the start of the recording (and is taken to hold before it).
    """
    if not events:
        return np.zeros(n)
    ts = np.array([float(e["timestamp"]) for e in events])
    vs = np.array([1.0 if e["value"] else 0.0 for e in events])
    if np.any(np.diff(ts) < 0):
        k = int(np.flatnonzero(np.diff(ts) < 0)[0]) + 1
        raise MeterStreamError(f"Otii digital events out of order at event {k} ({ts[k - 1]} s then {ts[k]} s)")
    cum = np.concatenate(([0.0], np.cumsum(vs[:-1] * np.diff(ts))))  # time high up to each event

    def high_time(x: np.ndarray) -> np.ndarray:
        i = np.maximum(np.searchsorted(ts, x, side="right") - 1, 0)  # before the first event: its value
        return cum[i] + vs[i] * (x - ts[i])

    bounds = t_first - dt / 2 + dt * np.arange(n + 1)
    return np.clip(np.diff(high_time(bounds)) / dt, 0.0, 1.0)


class OtiiMeter(CurrentMeter, kind="otii"):
    """An Otii Arc/Ace as the board's supply (main output at `supply_volts`), recording `mc` and GPI`marker_input`."""

    limits = MeterLimits(
        model="Otii Arc / Arc Pro / Ace",
        sample_rates=(1000.0, 2000.0, 4000.0, 5000.0, 10000.0, 20000.0, 50000.0),
        max_current_a=5.0,
        ranges=(f"low below ~{LOW_RANGE_A * 1e3:.0f} mA (nominal {LOW_STEP_A * 1e9:.0f} nA/step)",
                f"high/auto to 5 A (2.5 A continuous; nominal {HIGH_STEP_A * 1e6:.0f} uA/step)"),
        range_switching="'high' is automatic ranging; the switch is seamless in the app but can add a short "
                        "settling at the low/high boundary (~19 mA) that an ESP32 idling at ~20-40 mA may cross",
        digital_inputs="GPI1, GPI2 on the expansion port, levels set by the expansion-port voltage (1.2-5 V); "
                       "recorded as time-stamped value changes",
        marker_input_default=1,
    )

    def __init__(self, resource: str = f"127.0.0.1:{DEFAULT_PORT}", *, device: str | None = None,
                 supply_volts: float = 3.3, max_current_a: float = 0.5, sample_rate: float = 50_000,
                 current_range: str = "high", marker_input: int = 1, io_voltage: float = 3.3,
                 calibrate: bool = False, licensing: str = "auto", connect_timeout_s: float = 5.0,
                 keep_recordings: bool = False) -> None:
        super().__init__(resource)
        if marker_input not in (1, 2):
            raise InstrumentError(f"Otii marker_input must be GPI 1 or 2, got {marker_input!r}")
        if current_range not in ("low", "high"):
            raise InstrumentError(f"Otii current_range must be 'low' or 'high', got {current_range!r}")
        if float(sample_rate) not in self.limits.sample_rates:
            raise InstrumentError(f"Otii sample_rate must be one of {self.limits.sample_rates}, got {sample_rate!r}")
        try:
            from otii_tcp_client import otii_client
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise InstrumentError(f"the Otii driver needs otii-tcp-client (pip install otii-tcp-client): {exc}") \
                from None
        self.host, self.port = parse_resource(resource)
        self.supply_volts, self.max_current_a = float(supply_volts), float(max_current_a)
        self.sample_rate, self.current_range = float(sample_rate), current_range
        self.marker_input, self.io_voltage = int(marker_input), float(io_voltage)
        self.calibrated, self.keep_recordings = bool(calibrate), keep_recordings
        self.client = otii_client.OtiiClient()
        mode = otii_client.LicensingMode.AUTO if licensing == "auto" else otii_client.LicensingMode.MANUAL
        try:
            self.otii = self._call("connecting", lambda: self.client.connect(
                host=self.host, port=self.port, try_for_seconds=int(connect_timeout_s), licensing=mode))
        except InstrumentError as exc:
            raise InstrumentError(f"cannot reach the Otii server at {self.host}:{self.port}: {exc}; start the "
                                  "Otii app with its TCP server enabled (or otii_server)") from None
        try:
            self._setup(device)
        except BaseException:
            self.close()
            raise

    # ---- library calls, with one error type -----------------------------------------------------
    def _call(self, what: str, fn):
        from otii_tcp_client import otii_connection, otii_exception
        try:
            return fn()
        except otii_exception.Otii_Exception as exc:
            raise InstrumentError(f"Otii {what}: {exc.type}: {exc.message}") from None
        except otii_connection.DisconnectedException:
            raise MeterStreamError(f"Otii {what}: the server closed the connection") from None
        except json.JSONDecodeError as exc:
            raise MeterStreamError(f"Otii {what}: malformed answer from the server ({exc})") from None
        except TimeoutError:
            raise MeterStreamError(f"Otii {what}: no answer from the server (timeout)") from None
        except (OSError, KeyError, TypeError) as exc:
            raise MeterStreamError(f"Otii {what}: {type(exc).__name__}: {exc}") from None

    def _setup(self, device: str | None) -> None:
        devices = self._call("listing devices", lambda: self.otii.get_devices(timeout=3))
        if device is not None:
            devices = [d for d in devices if device in (d.id, d.name)]
        if not devices:
            raise InstrumentError(f"no Otii Arc/Ace {device or ''} attached to the Otii server at "
                                  f"{self.host}:{self.port}".replace("  ", " "))
        if len(devices) > 1:
            names = ", ".join(f"{d.name} ({d.id})" for d in devices)
            raise InstrumentError(f"several Otii devices ({names}); pass device=<name or id>")
        arc = self.arc = devices[0]
        from otii_tcp_client import otii as otii_module
        try:
            self.project = self.otii.get_active_project()
        except otii_module.OtiiException:
            self.project = self._call("creating a project", self.otii.create_project)
        version = self._call("reading the version", arc.get_version)
        self.model, self.serial_number = arc.type if arc.name == arc.type else f"{arc.type} ({arc.name})", arc.id
        self.idn = f"Qoitech,{arc.type},{arc.id},HW {version.get('hw_version')} FW {version.get('fw_version')}"
        self.version = version
        steps = [
            ("adding the device to the project", arc.add_to_project),
            ("setting the main voltage", lambda: arc.set_main_voltage(self.supply_volts)),
            ("setting the current limit", lambda: arc.set_max_current(self.max_current_a)),
            ("setting the range", lambda: arc.set_range(self.current_range)),
            ("enabling mc", lambda: arc.enable_channel("mc", True)),
            ("setting the mc sample rate", lambda: arc.set_channel_samplerate("mc", int(self.sample_rate))),
            ("enabling the expansion port", lambda: arc.enable_exp_port(True)),
            ("setting the IO voltage", lambda: arc.set_exp_voltage(self.io_voltage)),
            ("enabling the marker input", lambda: arc.enable_channel(f"i{self.marker_input}", True)),
        ]
        if self.calibrated:
            steps.insert(0, ("calibrating", arc.calibrate))
        for what, fn in steps:
            self._call(what, fn)
        rate = self._call("reading the mc sample rate", lambda: arc.get_channel_samplerate("mc"))
        if not math.isclose(float(rate), self.sample_rate):
            raise InstrumentError(f"Otii kept mc at {rate} S/s instead of {self.sample_rate:g}")
        self._call("switching the main output on", lambda: arc.set_main(True))

    def _settings(self) -> dict[str, Any]:
        return {"supply_volts": self.supply_volts, "max_current_a": self.max_current_a,
                "current_range": self.current_range, "io_voltage": self.io_voltage,
                "calibration": {"internal_calibration_run": self.calibrated, "factory": "stored in the device"},
                "version": getattr(self, "version", None)}

    # ---- acquisition ----------------------------------------------------------------------------
    def _start(self) -> None:
        self._call("starting a recording", self.project.start_recording)

    def _stop_quietly(self) -> None:
        self._call("stopping the recording", self.project.stop_recording)

    def _finish(self, duration_s: float, marker: bool, timeout_s: float):
        n = self._n_samples(duration_s)
        self._call("stopping the recording", self.project.stop_recording)
        rec = self._call("finding the recording", self.project.get_last_recording)
        if rec is None:
            raise MeterStreamError("Otii recorded nothing (no recording in the project)")
        try:
            return self._download(rec, n, marker)
        finally:
            if not self.keep_recordings:
                try:
                    self._call("deleting the recording", rec.delete)
                except InstrumentError:
                    pass

    def _download(self, rec, n: int, marker: bool):
        dev = self.arc.id
        count = self._call("counting mc samples", lambda: rec.get_channel_data_count(dev, "mc"))
        if count < n:
            raise MeterStreamError(f"Otii recording holds {count} mc samples, {n} needed "
                                   f"({n / self.sample_rate:g} s at {self.sample_rate:g} S/s): truncated")
        data = self._call("downloading mc", lambda: rec.get_channel_data(dev, "mc", 0, n))
        values = data.get("values") if isinstance(data, dict) else None
        if not isinstance(values, list) or len(values) != n:
            got = len(values) if isinstance(values, list) else "no"
            raise MeterStreamError(f"Otii mc download truncated: {got} of {n} values")
        interval = float(data.get("interval", 0.0))
        if not math.isclose(interval, 1.0 / self.sample_rate, rel_tol=1e-6):
            raise MeterStreamError(f"Otii mc interval {interval!r} s does not match {self.sample_rate:g} S/s")
        if any(not isinstance(v, int | float) or isinstance(v, bool) for v in values):
            k = next(i for i, v in enumerate(values) if not isinstance(v, int | float) or isinstance(v, bool))
            raise MeterStreamError(f"Otii mc value {k} is {values[k]!r}, not a number: malformed download")
        amps = np.asarray(values, dtype=np.float64)
        t0 = float(data.get("timestamp", 0.0))
        low = self.current_range == "low"
        step = LOW_STEP_A if low or float(np.max(np.abs(amps))) < LOW_RANGE_A else HIGH_STEP_A
        clipped = bool(np.any(np.abs(amps) >= (LOW_RANGE_A if low else self.max_current_a) * 0.999))
        prov = self.provenance()
        current = current_waveform(amps, interval, channel="mc", resolution_a=step,
                                   full_scale_a=LOW_RANGE_A if low else self.max_current_a, idn=self.idn,
                                   settings=prov, clipped=clipped, t0=t0, adc_bits=24)
        if not marker:
            return current, None
        ch = f"i{self.marker_input}"
        ecount = self._call("counting marker events", lambda: rec.get_channel_data_count(dev, ch))
        ev = self._call("downloading marker events", lambda: rec.get_channel_data(dev, ch, 0, ecount))
        events = ev.get("values") if isinstance(ev, dict) else None
        if not isinstance(events, list) or len(events) != ecount:
            got = len(events) if isinstance(events, list) else "no"
            raise MeterStreamError(f"Otii {ch} download truncated: {got} of {ecount} events")
        try:
            levels = marker_fractions(events, t0, interval, n)
        except (KeyError, TypeError, ValueError) as exc:
            raise MeterStreamError(f"Otii {ch} events malformed: {exc}") from None
        return current, logic_waveform(levels, interval, channel=f"GPI{self.marker_input}", idn=self.idn,
                                       settings=prov, t0=t0)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is None or client.otii is None:
            return
        try:
            arc = getattr(self, "arc", None)
            if arc is not None:
                self._call("switching the main output off", lambda: arc.set_main(False))
        except InstrumentError:
            pass
        finally:
            try:
                client.disconnect()
            except Exception:
                client.otii.connection.close_connection()
                client.otii = None
