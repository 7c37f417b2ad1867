# Two commands do all the set-up on a fresh machine: `make train` and `make test`.
# Both create .venv if it is missing and install the package with the exact versions of
# constraints.txt once; the stamp file keeps later runs fast.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install lint train test test-slow test-floors mutation bench gpu-check clean

$(STAMP): constraints.txt pyproject.toml requirements.txt
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

# `make test` lints (ruff: pyflakes, isort, pyupgrade, bugbear), checks the package's layers
# (import-linter: each room imports only the rooms below it) and runs the fast suite; `make test-slow`
# the tests marked slow (over a minute each on a 2-core CPU: multi-process DDP runs). CI (.ci/run) runs both.
test: lint
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The oldest versions pyproject.toml claims (constraints-floors.txt), in their own venv: the fast suite.
test-floors:
	test -x .venv-floors/bin/python || $(PYTHON) -m venv .venv-floors
	.venv-floors/bin/python -m pip install -q -c constraints-floors.txt -e ".[test]"
	.venv-floors/bin/python -m pytest -q -m "not slow"

# Mutation testing of the pure core (docs/reliability.md, "Mutation testing"; not in CI: over an hour
# on 2 cores): mutmut (the [mutation] extra) mutates the files [tool.mutmut] in pyproject.toml names,
# runs the tests that call each mutated function, then prints killed / survived / no tests per
# module. MUTANTS='detector.core.boxes.*' runs only those mutants; results accumulate in mutants/
# (`rm -rf mutants` starts afresh). One torch thread: forked workers deadlock with more.
MUTMUT_STAMP := $(VENV)/.installed-mutation
DETECTOR_SHARED ?= $(abspath ../shared)
MUTMUT_CHILDREN ?= 2
MUTANTS ?=

$(MUTMUT_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[test,mutation]"
	touch $(MUTMUT_STAMP)

mutation: $(MUTMUT_STAMP)
	OMP_NUM_THREADS=1 DETECTOR_SHARED=$(DETECTOR_SHARED) $(PY) -m mutmut run --max-children $(MUTMUT_CHILDREN) $(MUTANTS)
	$(PY) tools/mutation_table.py --survivors

# The first machine with GPUs gives its figures in one command: bench/gpu.py (img/s, peak memory, the
# matching + loss share of a training step and the decode + NMS share of an evaluation step, the
# checks that need CUDA) and the DDP check over every GPU it has (detector train fit --trainer.devices N,
# no strategy flag: the same weights on every rank, the logged mAP a one-process eval's), into
# gpu-check.json. Without a GPU it says so and exits non-zero.
gpu-check: $(STAMP)
	$(PY) bench/gpu.py --ddp --json gpu-check.json

clean:
	rm -rf $(VENV) .venv-floors .pytest_cache mutants
