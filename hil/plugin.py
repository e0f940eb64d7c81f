"""The `hil` pytest plugin (entry point `pytest11`): bench options, fixtures and the results summary."""
