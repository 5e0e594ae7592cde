# Two entry points: `make demo` (install, generate the demo cohort, run the whole pipeline)
# and `make test` (the test suite). An existing .venv is reused.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= data/demo
DEMO_CASES ?= 80
CORES ?= 2

.PHONY: demo test install demo-data clean-demo view

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# OpenSeadragon for the slide viewer, from the npm registry (package-lock.json), never kept in the repo
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

install: $(VENV)/.installed node_modules/.installed

# oracle.json is written last, so its presence means the cohort is complete.
$(DEMO_DIR)/oracle.json: | $(VENV)/.installed
	$(PY) -m generators.demo --out $(DEMO_DIR) --cases $(DEMO_CASES) --seed 0

demo-data: $(DEMO_DIR)/oracle.json

demo: install demo-data
	$(VENV)/bin/snakemake --workflow-profile workflow/profiles/default --cores $(CORES)
	$(VENV)/bin/snakemake --workflow-profile workflow/profiles/default --cores $(CORES) --report results/report.html
	$(PY) -m healnet.summary results

test: install
	$(VENV)/bin/pytest -q --durations=25

# the zoomable viewer of a finished cohort (also written by the pipeline): make view COHORT=demo
COHORT ?= demo
view: install
	$(VENV)/bin/healnet view results/$(COHORT)

clean-demo:
	rm -rf $(DEMO_DIR) results .snakemake
