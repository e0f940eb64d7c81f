"""Errors a user can cause in the model factory (bad config, missing or corrupt file)."""


class ModelError(Exception):
    """A user-facing model factory error; the CLI prints it as one line and exits 2."""
