# Two commands do all set-up on a fresh machine:
#   make demo   environment + build + the main job on the embedded synthetic data
#   make test   environment + build + the whole test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU torch from the local disk on the project's machines; override for CUDA builds.
TORCH_SPEC ?= torch==2.13.0
NVCC ?= $(shell command -v nvcc 2>/dev/null)
CUDA_CHECK_ARCH ?= sm_90
PYTEST_ARGS ?=

.PHONY: all env build test demo bench cuda-compile-check info clean

all: build

$(VENV)/.deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)" numpy opencv-python-headless pybind11 ninja \
	    "scikit-build-core>=0.10" pytest hypothesis matplotlib tqdm
	touch $@

env: $(VENV)/.deps

# The package is installed (not editable) from an incremental build directory; the
# flock serialises concurrent builds in one checkout.
build: env
	flock build.lock $(PIP) install -q --no-build-isolation --no-deps .

# Kernels are compiled by nvcc even where torch has no CUDA (they include no torch headers).
cuda-compile-check:
	@if [ -z "$(NVCC)" ]; then echo "nvcc not found: CUDA kernels not compiled"; exit 0; fi; \
	mkdir -p build/nvcc-check; \
	for f in csrc/*/*.cu; do [ -e "$$f" ] || continue; \
	  echo "nvcc -c $$f ($(CUDA_CHECK_ARCH))"; \
	  $(NVCC) -std=c++17 -O2 -arch=$(CUDA_CHECK_ARCH) -Icsrc -c "$$f" -o build/nvcc-check/$$(basename $$f).o || exit 1; \
	done

test: build cuda-compile-check
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) .

demo: build
	$(PY) -P -m pyfacepnp demo

bench: build
	$(PIP) install -q kornia || echo "kornia unavailable: its rows are skipped"
	$(PY) -P benchmarks/bench_pnp.py

info: build
	$(PY) -P -m pyfacepnp info

clean:
	rm -rf build build.lock
