# Two commands: `make demo` (Fashion-MNIST few-shot: TaskRes beside zero-shot CLIP, linear probe, CoOp, CLIP-Adapter, Tip-Adapter-F) and `make test`.
# Each sets itself up on a fresh Debian machine: .venv from requirements.txt, Debian's
# dataset-fashion-mnist. Re-running skips whatever is already in place.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
PYTEST_WORKERS ?= 2
# make demo DEMO_ARGS="--seeds 1 2 3": options of scripts/demo.py (--help)
DEMO_ARGS ?=

.PHONY: demo test setup fashion-mnist clean-venv

setup: $(STAMP)

# The stamp is newer than requirements.txt once everything in it is installed.
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

# the optional trackers (MLflow, W&B): the tests cover them, the demo does not need them
TRACKERS_STAMP := $(VENV)/.trackers-installed
$(TRACKERS_STAMP): requirements-trackers.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-trackers.txt
	@touch $(TRACKERS_STAMP)

fashion-mnist:
	@if [ ! -f $(FMNIST) ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), then run make again."; exit 1; \
	  fi; \
	fi

demo: setup fashion-mnist
	$(PY) scripts/demo.py $(DEMO_ARGS)

test: setup $(TRACKERS_STAMP) fashion-mnist
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) tests

clean-venv:
	rm -rf $(VENV)
