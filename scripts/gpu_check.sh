#!/usr/bin/env bash
# One-command check of the CUDA build on a machine with an NVIDIA GPU, from a clean copy of
# the repository (no .venv, no build/):
#
#   OUT=/some/folder scripts/gpu_check.sh      (OUT defaults to ./gpu_check_out)
#
# 1. environment report; 2. build with the CUDA kernels for the card found (PYFACEPNP_CUDA=ON,
# `pip wheel --no-build-isolation` against the machine's own python3 and torch: nothing is
# installed, torch is never replaced); 3. a smoke run; 4. the CUDA tests; 5. the GPU
# benchmark; 6. the rest of the test suite with the time left; 7. a summary table, printed
# last. Every step has a hard time limit and a failing step does not stop the next ones;
# the whole run ends within about 6 minutes (GPU_CHECK_BUDGET seconds, default 345).
# Files written to $OUT (flat, at most 8): summary.md env.log build.log smoke.log
# test_cuda.log bench.log bench_gpu.json test_rest.log.
#
# Needs: python3 with torch (CUDA build), pybind11, scikit-build-core, pytest; cmake >= 3.18
# and ninja (pip packages or system); nvcc matching torch's CUDA major version; Python headers.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
BUDGET=${GPU_CHECK_BUDGET:-345}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
START=$SECONDS
declare -a STEP_NAMES STEP_RESULTS STEP_SECS STEP_NOTES

left() { echo $((BUDGET - (SECONDS - START))); }

# run_step NAME LOG LIMIT CMD...: runs CMD with a hard limit, output to LOG (and a short echo).
run_step() {
  local name=$1 log=$2 limit=$3
  shift 3
  local avail
  avail=$(($(left) - 15))
  ((limit > avail)) && limit=$avail
  if ((limit < 10)); then
    STEP_NAMES+=("$name"); STEP_RESULTS+=("SKIPPED"); STEP_SECS+=(0); STEP_NOTES+=("no time left")
    echo "== $name: skipped (no time left)"
    return 1
  fi
  echo "== $name (limit ${limit}s, log $(basename "$log"))"
  local t0=$SECONDS rc
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local result=OK
  if ((rc == 124 || rc == 137)); then result="TIMEOUT"; elif ((rc != 0)); then result="FAIL (rc $rc)"; fi
  STEP_NAMES+=("$name"); STEP_RESULTS+=("$result"); STEP_SECS+=($((SECONDS - t0))); STEP_NOTES+=("")
  echo "   -> $result in $((SECONDS - t0))s"
  return $rc
}

# note TEXT: the notes of the step just run (a skipped step keeps its reason).
note() {
  local i=$((${#STEP_NOTES[@]} - 1))
  [[ "${STEP_RESULTS[$i]}" == SKIPPED ]] || STEP_NOTES[$i]="$1"
}

# ---------------------------------------------------------------- 1. environment
ENV_LOG=$OUT/env.log
: >"$ENV_LOG"
{
  echo "date: $(date -u)"; echo "host: $(uname -a)"; echo "repo: $ROOT"
  echo "git: $(git -C "$ROOT" log -1 --format='%h %s' 2>/dev/null || echo 'no git metadata')"
  echo "--- nvidia-smi"; nvidia-smi 2>&1 | head -20
  echo "--- python: $(command -v "$PY")"; "$PY" --version 2>&1
  "$PY" - <<'EOF' 2>&1
import importlib, os, sysconfig
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "cc %d.%d" % (p.major, p.minor), "SMs", p.multi_processor_count,
          "memory %.1f GB" % (p.total_memory / 1e9))
    print("torch arch list", torch.cuda.get_arch_list())
inc = sysconfig.get_paths()["include"]
print("python headers:", inc, "Python.h present:", os.path.exists(os.path.join(inc, "Python.h")))
for m in ("pybind11", "scikit_build_core", "cmake", "ninja", "pytest", "xdist", "pytest_timeout",
          "numpy", "cv2", "hypothesis", "matplotlib", "tqdm"):
    try:
        mod = importlib.import_module(m)
        print("module", m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print("module", m, "MISSING", type(e).__name__)
EOF
} >>"$ENV_LOG" 2>&1

NVCC=$(command -v nvcc || true)
[[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]] && NVCC=/usr/local/cuda/bin/nvcc
PYBIN=$(dirname "$(readlink -f "$(command -v "$PY")")")
export PATH="$PATH:$PYBIN:$(dirname "$(command -v "$PY")")"  # pip's cmake / ninja scripts
CMAKE=$(command -v cmake || true)
NINJA=$(command -v ninja || true)
PREREQ_OK=1
PREREQ_MSG=""
{
  echo "--- nvcc: ${NVCC:-MISSING}"; [[ -n "$NVCC" ]] && "$NVCC" --version | tail -2
  echo "--- cmake: ${CMAKE:-MISSING}"; [[ -n "$CMAKE" ]] && "$CMAKE" --version | head -1
  echo "--- ninja: ${NINJA:-MISSING}"; [[ -n "$NINJA" ]] && "$NINJA" --version
  echo "--- gcc: $(gcc --version 2>&1 | head -1)"
  echo "--- disk: $(df -h "$ROOT" | tail -1)"
} >>"$ENV_LOG" 2>&1
if [[ -z "$NVCC" ]]; then PREREQ_OK=0; PREREQ_MSG+="nvcc not found (PATH, /usr/local/cuda/bin). "; fi
if [[ -z "$CMAKE" ]]; then
  PREREQ_OK=0; PREREQ_MSG+="cmake not found: the build needs cmake >= 3.18 (pip package 'cmake' or system). "
elif ! "$CMAKE" --version | head -1 | awk '{split($3, v, "."); exit !(v[1] > 3 || (v[1] == 3 && v[2] >= 18))}'; then
  PREREQ_OK=0; PREREQ_MSG+="cmake too old ($("$CMAKE" --version | head -1)), needs >= 3.18. "
fi
if [[ -z "$NINJA" ]]; then PREREQ_OK=0; PREREQ_MSG+="ninja not found (pip package 'ninja' or system). "; fi
grep -q "Python.h present: False" "$ENV_LOG" && { PREREQ_OK=0; PREREQ_MSG+="Python headers (Python.h) missing: pybind11 cannot build. "; }
grep -q "available False" "$ENV_LOG" && PREREQ_MSG+="torch sees no CUDA device. "
grep -q "^torch .* cuda None" "$ENV_LOG" && { PREREQ_OK=0; PREREQ_MSG+="torch is a CPU build. "; }
STEP_NAMES+=("environment"); STEP_RESULTS+=("$([[ $PREREQ_OK == 1 ]] && echo OK || echo 'MISSING PREREQUISITES')")
STEP_SECS+=($((SECONDS - START))); STEP_NOTES+=("$(grep -m1 '^device' "$ENV_LOG" | cut -c8-) ${PREREQ_MSG}")
echo "== environment: ${PREREQ_MSG:-ok} (details in env.log)"

# ---------------------------------------------------------------- 2. build
BUILD_LOG=$OUT/build.log
: >"$BUILD_LOG"
BUILT=0
if [[ $PREREQ_OK == 1 ]]; then
  [[ -n "$NVCC" ]] && export CUDACXX=${CUDACXX:-$NVCC}
  export PYFACEPNP_CUDA=ON CUDAFLAGS="${CUDAFLAGS:-} -Xptxas=-v" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
  # The extension must be compiled against the libstdc++ that is loaded at run time. A
  # compiler whose runtime is not that one (on the lent GPU machines CXX points to a wrapper
  # in /opt/gcc) builds a module that segfaults as soon as an op raises an error (seen:
  # formatting the TORCH_CHECK message crashed). Use the system g++ when the configured one
  # does not know its own libstdc++.
  if [[ -x /usr/bin/g++ ]] && [[ "$(${CXX:-g++} -print-file-name=libstdc++.so 2>/dev/null)" != /* ]]; then
    echo "compiler: ${CXX:-g++} does not report its libstdc++; building with /usr/bin/g++" >>"$BUILD_LOG"
    export CXX=/usr/bin/g++ CC=/usr/bin/gcc CUDAHOSTCXX=/usr/bin/g++
  fi
  export CMAKE_POLICY_VERSION_MINIMUM=3.5  # CMake 4 and older CMake files of dependencies
  # pip wheel builds into build/<wheel tag>/ (pyproject.toml) without installing anything;
  # the extension is then placed beside the sources so the checkout imports it (as `make build`).
  build() {
    "$PY" -m pip wheel --no-build-isolation --no-deps --no-index -v -w "$ROOT/build/wheel" "$ROOT" || return 1
    local so
    so=$(ls -t "$ROOT"/build/*/_C*.so 2>/dev/null | head -n 1)
    [[ -n "$so" ]] || { echo "no _C*.so under build/"; return 1; }
    cp -f "$so" "$ROOT/pyfacepnp/" && echo "extension: $so -> pyfacepnp/"
  }
  export -f build
  export PY ROOT
  if run_step "build" "$BUILD_LOG" 200 bash -c build; then BUILT=1; fi
  arch=$(grep -m1 -o "CUDA architectures (TORCH_CUDA_ARCH_LIST): [^ ]*" "$BUILD_LOG" | sed 's/.*: //')
  kern=$(grep -m1 -o "CUDA kernels: [A-Z]*" "$BUILD_LOG")
  note "${kern:-CUDA kernels: ?}, arch ${arch:-?}"
else
  echo "build skipped: $PREREQ_MSG" >>"$BUILD_LOG"
  STEP_NAMES+=("build"); STEP_RESULTS+=("SKIPPED"); STEP_SECS+=(0); STEP_NOTES+=("$PREREQ_MSG")
fi

# Registers / stack / spills of the kernels, from ptxas -v in the build log.
kernel_resources() {
  awk '/Compiling entry function/ {
         n = $0; sub(/.*function .*_cu_[0-9a-f]+_[0-9]+/, "", n); sub(/E+v.*/, "", n); sub(/^[0-9]+/, "", n); name = n }
       /bytes stack frame/ { frame = $1 " B stack, " $5 " B spill st, " $9 " B spill ld" }
       /Used [0-9]+ registers/ && name != "" { print "  " name ": " $5 " registers, " frame; name = "" }' "$BUILD_LOG" | sort -u
}

# ---------------------------------------------------------------- 3. smoke
SMOKE_LOG=$OUT/smoke.log
: >"$SMOKE_LOG"
if [[ $BUILT == 1 ]]; then
  run_step "smoke" "$SMOKE_LOG" 90 "$PY" - <<'EOF'
import sys, time
import torch
sys.path[:0] = [".", "benchmarks"]
import pyfacepnp
from problems import make_problems
print("build info:", pyfacepnp.build_info())
print("cuda kernels registered:", torch._C._dispatch_has_kernel_for_dispatch_key("pyfacepnp::solve_pnp", "CUDA"))
p = make_problems("face", 64, 68, seed=0)
for dt in (torch.float64, torch.float32):
    args = [a.to(dt) for a in (p.points3d, p.points2d, p.K)]
    cpu = pyfacepnp.solve_pnp(*args)
    t0 = time.time()
    gpu = pyfacepnp.solve_pnp(*(a.cuda() for a in args))
    torch.cuda.synchronize()
    print(dt, "first call %.3fs" % (time.time() - t0), "statuses cpu", torch.bincount(cpu.status.long(), minlength=4).tolist(),
          "cuda", torch.bincount(gpu.status.cpu().long(), minlength=4).tolist(),
          "equal", torch.equal(cpu.status, gpu.status.cpu()),
          "max |dt| %.2e" % (gpu.t.cpu().double() - cpu.t.double()).abs().max(),
          "max |dR| %.2e" % (gpu.R.cpu().double() - cpu.R.double()).abs().max())
    x = args[1].cuda().requires_grad_()
    r = pyfacepnp.solve_pnp(args[0].cuda(), x, args[2].cuda())
    r.t.sum().backward()
    print("  backward finite:", bool(torch.isfinite(x.grad).all()), "nonzero:", bool(x.grad.abs().sum() > 0))
y = pyfacepnp.warp_points(args[1].cuda(), torch.tensor([[2.0, 0, 1], [0, 2, -1]], device="cuda"))
print("warp_points ok:", bool(torch.allclose(y.cpu(), pyfacepnp.warp_points(args[1], torch.tensor([[2.0, 0, 1], [0, 2, -1]])))))
EOF
  note "$(grep -m1 'float64 first call' "$SMOKE_LOG" | grep -o 'equal [A-Za-z]*')"
else
  STEP_NAMES+=("smoke"); STEP_RESULTS+=("SKIPPED"); STEP_SECS+=(0); STEP_NOTES+=("no build")
fi

# ---------------------------------------------------------------- 4. CUDA tests
pytest_summary() { grep -E "^(=+ )?[0-9]+ (passed|failed|error|skipped)|^=+ .*(passed|failed|error|skipped).* in " "$1" | tail -1 | sed 's/=//g'; }
TIMEOUT_ARG=""
grep -q "module pytest_timeout MISSING" "$ENV_LOG" || TIMEOUT_ARG="--timeout=150"
CUDA_LOG=$OUT/test_cuda.log
: >"$CUDA_LOG"
if [[ $BUILT == 1 ]]; then
  run_step "CUDA tests" "$CUDA_LOG" 150 "$PY" -m pytest -v -rfEs -p no:cacheprovider $TIMEOUT_ARG \
    --durations=10 tests/test_cuda_warp.py tests/test_cuda_pnp.py
  note "$(pytest_summary "$CUDA_LOG")"
else
  STEP_NAMES+=("CUDA tests"); STEP_RESULTS+=("SKIPPED"); STEP_SECS+=(0); STEP_NOTES+=("no build")
fi

# ---------------------------------------------------------------- 5. benchmark
BENCH_LOG=$OUT/bench.log
: >"$BENCH_LOG"
if [[ $BUILT == 1 ]]; then
  # The benchmark comes before the rest of the suite (which CI runs anyway): it gets all but
  # about 70 s of what is left, at most 160 s of its own budget (plus data generation).
  bb=$(($(left) - 70))
  ((bb > 160)) && bb=160
  ((bb < 30)) && bb=30
  run_step "benchmark" "$BENCH_LOG" $((bb + 35)) "$PY" benchmarks/bench_gpu.py --budget "$bb" --out "$OUT/bench_tmp"
  [[ -f "$OUT/bench_tmp/bench_gpu.json" ]] && mv -f "$OUT/bench_tmp/bench_gpu.json" "$OUT/bench_gpu.json"
  if ! grep -q "^| B | N" "$BENCH_LOG" && [[ -f "$OUT/bench_gpu.json" ]]; then
    echo "(interrupted: tables from the rows measured so far)" >>"$BENCH_LOG"
    "$PY" benchmarks/bench_gpu.py --summarise "$OUT/bench_gpu.json" >>"$BENCH_LOG" 2>&1
  fi
  note "$(grep -m1 '^Target' "$BENCH_LOG" | cut -c1-160)"
else
  STEP_NAMES+=("benchmark"); STEP_RESULTS+=("SKIPPED"); STEP_SECS+=(0); STEP_NOTES+=("no build")
fi

# ---------------------------------------------------------------- 6. the rest of the suite
REST_LOG=$OUT/test_rest.log
: >"$REST_LOG"
if [[ $BUILT == 1 ]]; then
  XDIST=""
  grep -q "module xdist MISSING" "$ENV_LOG" || XDIST="-n 12"
  run_step "rest of the test suite" "$REST_LOG" 600 "$PY" -m pytest -v -rfE -p no:cacheprovider $XDIST \
    --ignore=tests/test_cuda_pnp.py --ignore=tests/test_cuda_warp.py tests
  counts="$(pytest_summary "$REST_LOG")"
  [[ -z "$counts" ]] && counts="unfinished: $(grep -c ' PASSED' "$REST_LOG") passed, $(grep -c ' FAILED' "$REST_LOG") failed so far"
  note "$counts"
else
  STEP_NAMES+=("rest of the test suite"); STEP_RESULTS+=("SKIPPED"); STEP_SECS+=(0); STEP_NOTES+=("no build")
fi
rm -rf "$OUT/bench_tmp"

# ---------------------------------------------------------------- 7. summary (printed last)
SUMMARY=$OUT/summary.md
{
  echo "# pyfacepnp GPU check ($(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - START)) s)"
  echo
  echo "| step | result | seconds | notes |"
  echo "|---|---|---|---|"
  for i in "${!STEP_NAMES[@]}"; do
    echo "| ${STEP_NAMES[$i]} | ${STEP_RESULTS[$i]} | ${STEP_SECS[$i]} | ${STEP_NOTES[$i]} |"
  done
  echo
  if [[ -s "$BUILD_LOG" ]] && grep -q "Used [0-9]* registers" "$BUILD_LOG"; then
    echo "Kernel resources (ptxas, per thread):"
    kernel_resources
    echo
  fi
  if [[ -s "$SMOKE_LOG" ]]; then echo "Smoke:"; sed 's/^/  /' "$SMOKE_LOG" | tail -8; echo; fi
  if grep -q "^| B | N" "$BENCH_LOG" 2>/dev/null; then
    sed -n '/^GPU benchmark on/,$p' "$BENCH_LOG"
  fi
} >"$SUMMARY"

# Tails of the failed steps first, so that the summary stays the last thing printed.
for i in "${!STEP_NAMES[@]}"; do
  case "${STEP_RESULTS[$i]}" in
    OK | SKIPPED) ;;
    *)
      case "${STEP_NAMES[$i]}" in
        build) log=$BUILD_LOG; pat="error|Error|FAILED|CMake Error|fatal" ;;
        smoke) log=$SMOKE_LOG; pat="." ;;
        "CUDA tests") log=$CUDA_LOG; pat="FAILED|ERROR|Error|assert" ;;
        benchmark) log=$BENCH_LOG; pat="Error|error|Traceback" ;;
        "rest of the test suite") log=$REST_LOG; pat="FAILED|ERROR" ;;
        *) log=$ENV_LOG; pat="MISSING" ;;
      esac
      echo
      echo "-------- ${STEP_NAMES[$i]}: ${STEP_RESULTS[$i]} -- first matching lines and the tail of $(basename "$log")"
      grep -E -m 25 "$pat" "$log" | cut -c1-300
      echo "   ..."
      tail -n 30 "$log" | cut -c1-300
      ;;
  esac
done
echo
cat "$SUMMARY"
# Exit status: 0 only when every step passed.
for r in "${STEP_RESULTS[@]}"; do [[ "$r" == OK ]] || exit 1; done
exit 0
