"""Root conftest: the `hil` plugin is loaded through its pytest11 entry point (see pyproject.toml).

Declared here as well so a plain checkout without `pip install -e .` still gets the options.
"""

import importlib.metadata

_entry_points = {ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
pytest_plugins = [] if "hil.plugin" in _entry_points else ["hil.plugin"]
