# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)
export PATH := $(BIN):$(PATH)
export MPLBACKEND := Agg

.PHONY: env demo test lint format bench lab notebooks clean-demo

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

# The whole loop on the embedded defaults: demo data -> train -> evaluate -> optimize -> package ->
# register (./mlflow.db) -> promote; then the edge runner on the demo video against the promoted detector.
demo: env
	test -d .dvc || dvc init --quiet
	dvc repro
	dvc metrics show
	$(BIN)/python -m pipelines.report
	@echo "== edge runner: device.yaml, the demo video, shapes-detector@production; broker 127.0.0.1:1883 =="
	$(BIN)/lensops broker --host 127.0.0.1 --port 1883 & pid=$$!; sleep 3; \
	$(BIN)/lensops edge run --config device.yaml --exit-when-done --print-messages 3; status=$$?; \
	kill $$pid 2>/dev/null; exit $$status

# Measured speed of every stage, side by side (benchmarks/README.md); writes reports/bench/.
bench: env
	$(BIN)/python -m benchmarks

# JupyterLab on the project's environment (kernel "python3" = .venv), opened on notebooks/.
lab: env
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

# Re-run every notebook top to bottom on the demo data (after `make demo`) and keep the outputs in place.
notebooks: env
	$(BIN)/python -m lensops.notebooks

# The suite runs Mosquitto, Chromium, PostgreSQL, systemd-analyze and GStreamer's RTSP server for
# real (nothing skips): tests/system_requirements.py installs them as root, or names the apt-get line.
test: env lint
	$(BIN)/python -m tests.system_requirements --install
	$(BIN)/python -m pytest -q

# ruff's lint and format checks ([tool.ruff] in pyproject.toml); `make format` rewrites the files
lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: env
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-demo:
	rm -rf data/prepared data/demo models build packages reports mlflow.db mlartifacts .lensops
