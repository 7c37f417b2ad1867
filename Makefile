# Two commands do all the set-up on a fresh machine: `make train` and `make test`.
# Both create .venv if it is missing and install the package with the exact versions of
# constraints.txt once; the stamp file keeps later runs fast.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install train test test-slow test-floors bench clean

$(STAMP): constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The main job: generate the shapes data on first use, train configs/shapes.yaml in a new run folder
# runs/shapes/vN, evaluate its best checkpoint on the val split (prints the mAP table, writes
# runs/shapes/vN/results/val/).
train: $(STAMP)
	$(VENV)/bin/detector train fit --config configs/shapes.yaml
	$(VENV)/bin/detector eval --run shapes --split val

# `make test` runs the fast suite; `make test-slow` the tests marked slow (over a minute each on a
# 2-core CPU: multi-process DDP runs). CI (.ci/run) runs both.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The oldest versions pyproject.toml claims (constraints-floors.txt), in their own venv: the fast suite.
test-floors:
	test -x .venv-floors/bin/python || $(PYTHON) -m venv .venv-floors
	.venv-floors/bin/python -m pip install -q -c constraints-floors.txt -e ".[test]"
	.venv-floors/bin/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .venv-floors .pytest_cache
