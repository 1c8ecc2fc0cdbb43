# Two entry points, each of which sets itself up from a fresh clone:
#   make demo   - install, train a TRPO agent on CartPole-v1 and show its result
#   make test   - install, lint, type-check and run the test suite
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[rl,test,dev,ray]"
	touch $(STAMP)

install: $(STAMP)

# --overwrite: every `make demo` retrains runs/quickstart from scratch (same seed, same run)
# instead of refusing because the previous demo's run is there.
demo: $(STAMP)
	$(VENV)/bin/trpo train CartPole-v1 --timesteps 100000 --seed 0 --out runs/quickstart --overwrite
	$(VENV)/bin/trpo eval runs/quickstart

lint: $(STAMP)
	$(PY) -m ruff check trustregion rl_adapters tests benchmarks
	$(PY) -m mypy trustregion

test: $(STAMP) lint
	$(PY) -m pytest -n 2

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
