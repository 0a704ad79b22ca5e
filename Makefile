# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)
export PATH := $(BIN):$(PATH)
export MPLBACKEND := Agg

.PHONY: env demo test clean-demo

# gluoncv 0.10.5 hard-depends on opencv-python (GUI build, needs libGL) which collides with
# opencv-python-headless over the cv2 folder; so gluoncv goes in with --no-deps and [train]
# lists its real runtime dependencies.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps gluoncv==0.10.5.post0
	rm -f $(VENV)/.installed-*
	touch $@

env: $(STAMP)

# Prepare demo data and train the demo classifier and detector, tracked in ./mlflow.db.
demo: env
	test -d .dvc || dvc init --quiet
	dvc repro
	dvc metrics show

test: env
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf data/prepared data/demo models reports mlflow.db mlartifacts
