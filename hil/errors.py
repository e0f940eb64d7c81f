"""User-facing harness errors, and the set of error types the CLI turns into one line and exit code 2."""

from instruments.errors import InstrumentError
from models.errors import ModelError


class HilError(Exception):
    """A user-facing harness error (bad bench or budget file, unreachable board, failed gate input)."""


USER_ERRORS: tuple[type[Exception], ...] = (HilError, ModelError, InstrumentError)
