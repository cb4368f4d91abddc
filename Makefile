# make help: list the targets. Python and packages go into .venv (override: make install VENV=...).
VENV ?= .venv
PY := $(VENV)/bin/python
# torch on this machine kind installs from local disk at this version; elsewhere set TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: help install system-deps test lint format train evaluate

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: system-deps $(VENV)/.installed ## create .venv with torch, this package and the test tools

system-deps: ## ffmpeg (libx264, libx265, libaom, libsvtav1) from Debian when missing; SLURM + munge (optional) as root
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	  else echo "ffmpeg is missing: install it (e.g. sudo apt-get install ffmpeg)" >&2; exit 1; fi; }
	@# slurm-wlm + munge: tests/test_slurm.py starts a single-node cluster from them (skipped without).
	@if command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null \
	  || echo "note: slurm-wlm/munge did not install; the SLURM tests will be skipped" >&2; \
	else echo "note: SLURM is optional; as root, apt-get install slurm-wlm munge enables tests/test_slurm.py" >&2; fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: install ## run the test suite
	$(PY) -m pytest -q

lint: ## ruff check and format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: ## ruff format and fix imports
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

train: install ## the tiny codec on the embedded clips (about 5 minutes on 2 CPU cores)
	$(PY) train.py

evaluate: install ## x265 against x264 on the embedded clips
	$(PY) evaluate.py
