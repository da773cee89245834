# Two commands do all the set-up and the work:  `make demo`  and  `make test`.
# Both create a virtual environment in .venv (override with VENV=...) and install unetkit into it.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install test demo lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# CPU build of torch where there is no GPU; an already installed torch is kept
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

test: lint
	$(VENV)/bin/pytest -q

# the benchmarks README quotes (minutes each; real data in ../shared/data)
bench: install
	cd bench && ../$(PY) train_step.py --base-width 16
	cd bench && ../$(PY) predict.py --rss-width 2 --rss-depth 3
	cd bench && ../$(PY) dsb.py --budget 10 --recipes default,otsu,milesial
	cd bench && ../$(PY) isbi.py --budget 10 --tta
	cd bench && ../$(PY) dsb_instances.py --budget 15

demo: install
	$(VENV)/bin/unetkit demo -o demo

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache
