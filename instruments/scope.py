"""The user-facing oscilloscope API: `open_scope`, the auto-ranging helper and the base class's names.

Importing this module imports every module of the `instruments` package (not its subpackages), and each
driver module registers its classes in `instruments.oscilloscope.DRIVERS` as it is defined: adding a
driver means adding its module, nothing here. The drivers import `instruments.oscilloscope`, never this
module, so the import graph stays acyclic.
"""

from __future__ import annotations

import importlib
import pkgutil

import instruments
from instruments.errors import InstrumentError
from instruments.oscilloscope import (
    DRIVERS,
    FORMATS,
    ChannelConfig,
    Oscilloscope,
    TimebaseConfig,
    TriggerConfig,
    TriggerTimeout,
    driver_for_idn,
)
from instruments.transport import TransportError, VisaTransport

__all__ = ["DRIVERS", "FORMATS", "ChannelConfig", "Oscilloscope", "TimebaseConfig", "TriggerConfig",
           "TriggerTimeout", "autorange", "load_drivers", "open_scope"]


def load_drivers() -> dict[str, type[Oscilloscope]]:
    """Import the package's modules so every driver has registered itself; returns the registry."""
    for module in pkgutil.iter_modules(instruments.__path__, "instruments."):
        if not module.ispkg:
            importlib.import_module(module.name)
    return DRIVERS


def open_scope(
    resource: str, driver: str = "auto", *, backend: str = "@py", timeout_s: float = 5.0,
) -> Oscilloscope:
    """Open `resource` over VISA, ask `*IDN?` and return the matching driver.

    `driver="auto"` picks it from the IDN; a named driver (a key of `DRIVERS`) must match the IDN too.
    """
    names = ", ".join(sorted(DRIVERS))
    if driver != "auto" and driver not in DRIVERS:
        raise InstrumentError(f"unknown oscilloscope driver {driver!r}; choose auto or one of {names}")
    transport = VisaTransport(resource, backend=backend, timeout_s=timeout_s)
    try:
        try:
            idn = transport.query("*IDN?")
        except TransportError as exc:
            raise TransportError(f"cannot identify the oscilloscope: {exc}") from None
        cls = driver_for_idn(idn) if driver == "auto" else DRIVERS[driver]
        if cls is None:
            raise InstrumentError(f"unsupported oscilloscope {idn!r} at {resource}; supported drivers: {names}")
        if not cls.matches(idn):
            raise InstrumentError(f"driver {driver!r} does not match the instrument at {resource} ({idn!r}); "
                                  "use driver='auto'")
        return cls(transport, idn)
    except BaseException:
        transport.close()
        raise


def _round_sig(value: float, digits: int = 2) -> float:
    """Round to `digits` significant digits (scopes accept fine volts/div steps)."""
    return float(f"{value:.{digits - 1}e}")


def autorange(
    scope: Oscilloscope, channel: int, *, timeout_s: float = 10.0, max_iterations: int = 8,
    min_fraction: float = 0.5, start_volts_per_div: float | None = None,
) -> ChannelConfig:
    """Adjust volts/div and offset of `channel` until the signal spans >= `min_fraction` of the ADC unclipped.

    Each step is one real single-shot capture (the trigger must already be configured).
    """
    cfg = scope.channels.get(channel)
    if cfg is None or start_volts_per_div is not None:
        cfg = scope.configure_channel(channel, start_volts_per_div or 1.0)
    for _ in range(max_iterations):
        (wf,) = scope.capture(channel, timeout_s=timeout_s)
        lo, hi = float(wf.volts.min()), float(wf.volts.max())
        span_v = scope.adc_span_div * cfg.volts_per_div
        if wf.clipped:
            vdiv = cfg.volts_per_div * 2.5
        elif (hi - lo) >= min_fraction * span_v:
            return cfg
        elif (hi - lo) < 4 * wf.step_v:  # too few codes to measure the span: zoom in a decade
            vdiv = cfg.volts_per_div / 10
        else:  # aim at ~75 % of the range, centred
            vdiv = _round_sig(max(hi - lo, 1e-6) / (0.75 * scope.adc_span_div))
        offset = (lo + hi) / 2
        cfg = scope.configure_channel(channel, vdiv, offset, coupling=cfg.coupling, probe=cfg.probe,
                                      bandwidth_limit=cfg.bandwidth_limit)
    raise InstrumentError(f"auto-ranging channel {channel} on {scope.resource} did not settle after "
                          f"{max_iterations} captures; set volts/div by hand")


load_drivers()
