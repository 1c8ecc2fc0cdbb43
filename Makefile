# Two entry points, each of which sets itself up from a fresh clone:
#   make demo   - install, train a TRPO agent on CartPole-v1 and show its result
#   make test   - install, lint, type-check and run the test suite
# and the documentation site (MkDocs + Material, see mkdocs.yml):
#   make docs       - install the docs extra, build the site into site/ (strict)
#   make docs-serve - serve it on http://127.0.0.1:8000 with live reload
#   make examples   - run examples/ in full mode and refresh the outputs the site shows
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs
# MkDocs 1.x prints a banner about its successor on every run; the build itself is unaffected.
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test lint install bench clean docs docs-serve examples

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
	$(PY) -m ruff check trustregion rl_adapters tests benchmarks examples docs/hooks.py
	$(PY) -m mypy trustregion

test: $(STAMP) lint
	$(PY) -m pytest -n 2

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[rl,test,dev,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: $(DOCS_STAMP)
	$(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000

# Full-mode runs (minutes; HalfCheetah trains for a while): the figures and printed output
# under docs/examples/assets/ are committed, so building the site never trains anything.
EXAMPLES := trpo_cartpole_step kl_portfolio cpo_cases minimize_logistic halfcheetah_vs_sb3 fvp_property_test
examples: $(STAMP)
	mkdir -p docs/examples/assets
	set -e; for ex in $(EXAMPLES); do \
	  echo "== $$ex"; \
	  MPLBACKEND=Agg $(PY) examples/$$ex.py --out docs/examples/assets \
	    > docs/examples/assets/$$ex.txt; \
	  cat docs/examples/assets/$$ex.txt; \
	done

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis site
