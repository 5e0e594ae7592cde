# Two entry points: `make demo` (install, generate the demo cohort, run the whole pipeline)
# and `make test` (the test suite). An existing .venv is reused.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= data/demo
DEMO_CASES ?= 80
CORES ?= 2

.PHONY: demo test install demo-data clean-demo

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# oracle.json is written last, so its presence means the cohort is complete.
$(DEMO_DIR)/oracle.json: | $(VENV)/.installed
	$(PY) -m preprocessing.demo --out $(DEMO_DIR) --cases $(DEMO_CASES) --seed 0

demo-data: $(DEMO_DIR)/oracle.json

demo: install demo-data
	$(VENV)/bin/snakemake --workflow-profile workflow/profiles/default --cores $(CORES)
	$(VENV)/bin/snakemake --workflow-profile workflow/profiles/default --cores $(CORES) --report results/report.html
	$(PY) -m healnet.summary results

test: install
	$(VENV)/bin/pytest -q

clean-demo:
	rm -rf $(DEMO_DIR) results .snakemake
