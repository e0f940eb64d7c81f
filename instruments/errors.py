"""Errors raised by instrument drivers and the simulator."""


class InstrumentError(Exception):
    """A user-facing instrument error (unreachable resource, timeout, malformed data); one line, exit 2."""
