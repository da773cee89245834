# Two commands do all the set-up and the work:  `make demo`  and  `make test`.
# Both create a virtual environment in .venv (override with VENV=...) and install unetkit into it.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install test demo lint docs bench wheel-check clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# CPU build of torch where there is no GPU; an already installed torch is kept
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check src tests bench docs/hooks
	$(VENV)/bin/ruff format --check src tests bench docs/hooks
	$(VENV)/bin/mypy

# the documentation site (docs/, mkdocs.yml): --strict fails on a broken link, a missing page
# or an API reference that no longer resolves; the site goes to build/site (git-ignored).
# No --quiet: it hides the warnings from the counter that --strict fails on.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

test: lint docs
	$(VENV)/bin/pytest -q

# the benchmarks docs/benchmarks.md quotes (minutes each; real data in ../shared/data)
bench: install
	cd bench && ../$(PY) train_step.py --base-width 16
	cd bench && ../$(PY) predict.py --rss-width 2 --rss-depth 3
	cd bench && ../$(PY) dsb.py --budget 10 --recipes default,otsu,milesial
	cd bench && ../$(PY) isbi.py --budget 10 --tta
	cd bench && ../$(PY) dsb_instances.py --budget 15

# the wheel built from the tree, installed non-editable into a fresh environment, runs the
# demo and predicts with its model (an editable install would hide missing package data)
WHEEL_DIR := build/wheel-check
wheel-check: install
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)
	$(PY) -m pip wheel -q --no-deps -w $(WHEEL_DIR) .
	$(PYTHON) -m venv $(WHEEL_DIR)/venv
	$(WHEEL_DIR)/venv/bin/pip install -q torch==2.13.0
	$(WHEEL_DIR)/venv/bin/pip install -q $(WHEEL_DIR)/unetkit-*.whl
	cd $(WHEEL_DIR) && venv/bin/python -c "import unetkit, pathlib; p = pathlib.Path(unetkit.__file__).parent; assert (p / 'py.typed').is_file() and 'site-packages' in str(p), p"
	cd $(WHEEL_DIR) && venv/bin/unetkit demo -o demo --time-budget 0.2 --images 8 --large 240x320
	cd $(WHEEL_DIR) && venv/bin/unetkit predict demo/run/best.pt demo/large/large.png -o pred
	test -s $(WHEEL_DIR)/pred/large.png && test -s $(WHEEL_DIR)/pred/summary.csv

demo: install
	$(VENV)/bin/unetkit demo -o demo

clean:
	rm -rf $(VENV) demo build site .pytest_cache .ruff_cache .mypy_cache
