# Two commands: `make hil` (the main job on the bench in bench.yaml) and `make test` (the whole suite).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: hil test install lint clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	# esptool pulls in pyserial, whose files overwrite labgrid's fork (same `serial` package): the fork last
	$(PY) -m pip install --quiet --no-deps --force-reinstall -c requirements.lock pyserial-labgrid
	@touch $(STAMP)

# One xdist worker per board+scope pair of the bench (bench.yaml lists two virtual ones).
HIL_WORKERS ?= 2

hil: $(STAMP)
	$(VENV)/bin/pytest -m hil -n $(HIL_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf artifacts reports build firmware/host/build .pytest_cache
