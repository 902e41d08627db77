"""The CUDA kernels' own source, run on the CPU under a warp emulation, against the CPU op.

The kernels (csrc/*/*_kernels.cu) include no torch headers, so a host compiler can build them
once the few CUDA features they use are supplied: here a kernel launch runs each warp's 32
lanes as fibers (ucontext) in lockstep rounds that end at every warp intrinsic. Each round is
checked for convergence (all 32 lanes at the same intrinsic with the same mask and offset), so
a driver change that lets lanes diverge before a shuffle fails here, on machines without a
GPU. What this cannot see: device arithmetic (fused multiply-adds), memory, speed; the tests
marked `cuda` cover those on a GPU.

Needs g++ (C++17) and glibc's ucontext; skipped otherwise.
"""

import ctypes
import math
import platform
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import pyfacepnp

from test_cuda_pnp import assert_agree, family_batch, solve_with_grads

ROOT = Path(__file__).resolve().parents[1]
CXX = shutil.which("g++")
pytestmark = pytest.mark.skipif(CXX is None or platform.system() != "Linux",
                                reason="needs g++ and glibc's ucontext")

# The CUDA runtime and device features the kernels use, emulated on the host.
CUDA_RUNTIME_STUB = r"""
#pragma once
#include <ucontext.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
typedef int cudaError_t;
typedef struct CUstream_st* cudaStream_t;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
struct uint3e { unsigned x = 0, y = 0, z = 0; };
namespace emu {
enum Op { kNone, kShflXor, kShfl, kAll, kDone };
struct Lane { ucontext_t ctx; std::vector<char> stack; uint3e tid; Op op = kNone; unsigned mask = 0; int arg = 0; uint64_t in = 0, out = 0; };
struct State { ucontext_t sched; Lane lanes[32]; int cur = 0; uint3e bid; dim3 grid, block; const std::function<void()>* body = nullptr; int error = 0; };
inline State& st() { static State s; return s; }
inline Lane& cur() { return st().lanes[st().cur]; }
inline uint64_t sync_op(Op op, unsigned mask, int arg, uint64_t v) {
  Lane& L = cur(); L.op = op; L.mask = mask; L.arg = arg; L.in = v;
  swapcontext(&L.ctx, &st().sched);
  return L.out;
}
inline void lane_entry() { (*st().body)(); cur().op = kDone; swapcontext(&cur().ctx, &st().sched); }
// 0: ok; 1: lanes at different intrinsics; 2: different masks / offsets; 3: partial mask.
inline int run_warp(unsigned warp) {
  State& s = st();
  for (int l = 0; l < 32; ++l) {
    Lane& L = s.lanes[l];
    L.stack.resize(1 << 20);
    getcontext(&L.ctx);
    L.ctx.uc_stack.ss_sp = L.stack.data(); L.ctx.uc_stack.ss_size = L.stack.size(); L.ctx.uc_link = nullptr;
    makecontext(&L.ctx, lane_entry, 0);
    L.tid.x = warp * 32 + l; L.op = kNone;
  }
  for (;;) {
    for (int l = 0; l < 32; ++l) { s.cur = l; swapcontext(&s.sched, &s.lanes[l].ctx); }
    const Lane& L0 = s.lanes[0];
    for (int l = 1; l < 32; ++l) {
      const Lane& L = s.lanes[l];
      if (L.op != L0.op) return 1;
      if (L.mask != L0.mask || (L.op == kShflXor && L.arg != L0.arg)) return 2;
    }
    if (L0.op == kDone) return 0;
    if (L0.mask != 0xffffffffu) return 3;
    bool all = true;
    for (int l = 0; l < 32; ++l) all = all && s.lanes[l].in != 0;
    for (int l = 0; l < 32; ++l) {
      Lane& L = s.lanes[l];
      if (L.op == kShflXor) L.out = s.lanes[l ^ L.arg].in;
      else if (L.op == kShfl) L.out = s.lanes[L.arg & 31].in;
      else L.out = all ? 1 : 0;
    }
  }
}
template <typename F>
void launch(dim3 grid, dim3 block, size_t, cudaStream_t, F f) {
  const std::function<void()> body = f;
  State& s = st();
  s.grid = grid; s.block = block; s.body = &body;
  if (block.x % 32 != 0 || grid.x == 0) { s.error = 4; return; }
  for (unsigned b = 0; b < grid.x && !s.error; ++b) {
    s.bid.x = b;
    for (unsigned w = 0; w < block.x / 32 && !s.error; ++w) s.error = run_warp(w);
  }
}
template <typename T> uint64_t bits(T v) { uint64_t b = 0; std::memcpy(&b, &v, sizeof(T)); return b; }
template <typename T> T from_bits(uint64_t b) { T v; std::memcpy(&v, &b, sizeof(T)); return v; }
}  // namespace emu
#define threadIdx (emu::cur().tid)
#define blockIdx (emu::st().bid)
#define blockDim (emu::st().block)
#define gridDim (emu::st().grid)
template <typename T> T __shfl_xor_sync(unsigned m, T v, int o) { return emu::from_bits<T>(emu::sync_op(emu::kShflXor, m, o, emu::bits(v))); }
template <typename T> T __shfl_sync(unsigned m, T v, int s) { return emu::from_bits<T>(emu::sync_op(emu::kShfl, m, s, emu::bits(v))); }
inline int __all_sync(unsigned m, int p) { return int(emu::sync_op(emu::kAll, m, 0, p ? 1 : 0)); }
"""

# C entry points around the kernels' own launchers, one translation unit per .cu file; they
# return the launcher's status, or 100 + the emulation's error code.
ENTRY_PNP = r"""
#include "cuda_runtime.h"
#include "pnp_kernels.cu"
using namespace pyfacepnp::gpu;
template <typename T>
int pnp(const T* X, const T* x, const T* w, const double* K, const double* iR, const double* it,
        int64_t B, int64_t N, int32_t loss, double delta, int32_t max_it, double tol, int32_t min_warps,
        T* R, T* t, T* cost, int32_t* iters, int32_t* status, T* cov, double* state, const T* gR,
        const T* gt, const T* gc, T* gX, T* gx, T* gK, T* gw, const double* scales, const double* D,
        int32_t model, T* gD) {
  emu::st().error = 0;
  pfp::PnPForwardArgs<T> f{X, x, w, K, iR, it, B, N, {}, scales, R, t, cost, iters, status, cov, state, D, model};
  f.prm.rob = pfp::Robust<double>{loss, delta};
  f.prm.max_iterations = max_it;
  f.prm.tolerance = tol;
  f.prm.pd_tol = 1e-10;
  int e = launch_solve_pnp<T>(f, min_warps, nullptr);
  if (e || emu::st().error) return e ? e : 100 + emu::st().error;
  pfp::PnPBackwardArgs<T> g{gR, gt, gc, X, x, w, K, state, status, B, N, f.prm.rob, scales, gX, gx, gK, gw, D, model, gD};
  e = launch_solve_pnp_backward<T>(g, nullptr);
  return e ? e : (emu::st().error ? 100 + emu::st().error : 0);
}
template <typename T>
int ransac(const T* X, const T* x, const T* w, const double* K, int64_t B, int64_t N, int32_t loss, double delta,
           double thr, double conf, int32_t max_trials, int64_t seed, T* R, T* t, T* cost, int32_t* iters,
           int32_t* status, T* cov, double* state, bool* inliers, int32_t* n_in, int32_t* trials) {
  emu::st().error = 0;
  pfp::PnPRansacArgs<T> a;
  a.f = pfp::PnPForwardArgs<T>{X, x, w, K, nullptr, nullptr, B, N, {}, nullptr, R, t, cost, iters, status, cov, state};
  a.f.prm.rob = pfp::Robust<double>{loss, delta};
  a.f.prm.max_iterations = 100;
  a.f.prm.tolerance = 1e-10;
  a.f.prm.pd_tol = 1e-10;
  a.rp = pfp::RansacParams{thr * thr, conf, max_trials, uint64_t(seed)};
  a.inliers = inliers;
  a.num_inliers = n_in;
  a.trials = trials;
  int e = launch_solve_pnp_ransac<T>(a, nullptr);
  return e ? e : (emu::st().error ? 100 + emu::st().error : 0);
}
template <typename T>
int minima(const T* X, const T* x, const T* w, const double* K, int64_t B, int64_t N, int32_t k,
           T* R, T* t, T* cost, int32_t* iters, int32_t* status, T* cov, double* state, int32_t* count) {
  emu::st().error = 0;
  pfp::PnPMinimaArgs<T> m;
  m.f = pfp::PnPForwardArgs<T>{X, x, w, K, nullptr, nullptr, B, N, {}, nullptr, R, t, cost, iters, status, cov, state};
  m.f.prm.rob = pfp::Robust<double>{0, 1.0};
  m.f.prm.max_iterations = 100;
  m.f.prm.tolerance = 1e-10;
  m.f.prm.pd_tol = 1e-10;
  m.k = k;
  m.count = count;
  int e = launch_solve_pnp_minima<T>(m, nullptr);
  return e ? e : (emu::st().error ? 100 + emu::st().error : 0);
}
#define MINIMA_ARGS(T) const T* X, const T* x, const T* w, const double* K, int64_t B, int64_t N, int32_t k, \
  T* R, T* t, T* cost, int32_t* iters, int32_t* status, T* cov, double* state, int32_t* count
#define MINIMA_CALL X, x, w, K, B, N, k, R, t, cost, iters, status, cov, state, count
extern "C" int minima_f64(MINIMA_ARGS(double)) { return minima<double>(MINIMA_CALL); }
extern "C" int minima_f32(MINIMA_ARGS(float)) { return minima<float>(MINIMA_CALL); }
#define RANSAC_ARGS(T) const T* X, const T* x, const T* w, const double* K, int64_t B, int64_t N, int32_t loss, \
  double delta, double thr, double conf, int32_t max_trials, int64_t seed, T* R, T* t, T* cost, int32_t* iters, \
  int32_t* status, T* cov, double* state, bool* inliers, int32_t* n_in, int32_t* trials
#define RANSAC_CALL X, x, w, K, B, N, loss, delta, thr, conf, max_trials, seed, R, t, cost, iters, status, cov, state, inliers, n_in, trials
extern "C" int ransac_f64(RANSAC_ARGS(double)) { return ransac<double>(RANSAC_CALL); }
extern "C" int ransac_f32(RANSAC_ARGS(float)) { return ransac<float>(RANSAC_CALL); }
#define PNP_ARGS(T) const T* X, const T* x, const T* w, const double* K, const double* iR, const double* it, \
  int64_t B, int64_t N, int32_t loss, double delta, int32_t max_it, double tol, int32_t mw, T* R, T* t,     \
  T* cost, int32_t* iters, int32_t* status, T* cov, double* state, const T* gR, const T* gt, const T* gc,   \
  T* gX, T* gx, T* gK, T* gw, const double* scales, const double* D, int32_t model, T* gD
#define PNP_CALL X, x, w, K, iR, it, B, N, loss, delta, max_it, tol, mw, R, t, cost, iters, status, cov, state, gR, gt, gc, gX, gx, gK, gw, scales, D, model, gD
extern "C" int pnp_f64(PNP_ARGS(double)) { return pnp<double>(PNP_CALL); }
extern "C" int pnp_f32(PNP_ARGS(float)) { return pnp<float>(PNP_CALL); }
extern "C" void pnp_max_blocks(int64_t b) { pyfacepnp::gpu::kMaxBlocks = b; }
extern "C" int hessian_f64(const double* R, const double* t, const double* X, const double* x,
                           const double* w, const double* K, int64_t B, int64_t N, int32_t loss,
                           double delta, const double* D, int32_t model, double* H, bool* valid,
                           const double* gH, double* gR, double* gt, double* gX, double* gx,
                           double* gK, double* gw, double* gD) {
  emu::st().error = 0;
  pfp::PnPHessianArgs<double> a{};
  a.R = R; a.t = t; a.X = X; a.x = x; a.w = w; a.K = K; a.B = B; a.N = N;
  a.rob = pfp::Robust<double>{loss, delta};
  a.D = D; a.model = model; a.H = H; a.valid = valid;
  int e = launch_pnp_hessian<double>(a, false, nullptr);
  if (e || emu::st().error) return e ? e : 100 + emu::st().error;
  a.gH = gH; a.valid_in = valid; a.gR = gR; a.gt = gt; a.gX = gX; a.gx = gx; a.gK = gK; a.gw = gw; a.gD = gD;
  e = launch_pnp_hessian<double>(a, true, nullptr);
  return e ? e : (emu::st().error ? 100 + emu::st().error : 0);
}
"""
ENTRY_WARP = r"""
#include "cuda_runtime.h"
#include "warp_kernels.cu"
using namespace pyfacepnp::gpu;
template <typename T>
int warp(const T* p, const T* A, const T* g, int64_t B, int64_t N, T* y, T* gp, T* gA) {
  emu::st().error = 0;
  int e = launch_warp_points<T>(p, A, B, N, y, nullptr);
  if (e || emu::st().error) return e ? e : 100 + emu::st().error;
  e = launch_warp_points_backward<T>(g, p, A, B, N, gp, gA, nullptr);
  return e ? e : (emu::st().error ? 100 + emu::st().error : 0);
}
extern "C" int warp_f64(const double* p, const double* A, const double* g, int64_t B, int64_t N, double* y, double* gp, double* gA) { return warp<double>(p, A, g, B, N, y, gp, gA); }
extern "C" int warp_f32(const float* p, const float* A, const float* g, int64_t B, int64_t N, float* y, float* gp, float* gA) { return warp<float>(p, A, g, B, N, y, gp, gA); }
extern "C" void warp_max_blocks(int64_t b) { pyfacepnp::gpu::kMaxBlocks = b; }
"""


def emulated_source(path: Path) -> str:
    """A .cu file with its launches `k<<<g, b, s, st>>>(args);` made emulation calls, and its
    largest grid a variable (a small grid makes the grid-stride loops take turns)."""
    src = path.read_text()
    launch = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;]*>)?)\s*<<<(.*?)>>>\s*\((.*?)\);", re.S)
    src, n = launch.subn(lambda m: f"emu::launch({m[2]}, [&] {{ {m[1]}({m[3]}); }});", src)
    assert n >= 1, f"no kernel launch found in {path}"
    src, k = re.subn(r"constexpr int64_t kMaxBlocks = ([^;]+);", r"int64_t kMaxBlocks = \1;", src)
    assert k == 1, f"kMaxBlocks not found in {path}"
    return src


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cuda_emulated")
    (tmp / "cuda_runtime.h").write_text(CUDA_RUNTIME_STUB)
    sources = []
    for op, entry in (("pnp", ENTRY_PNP), ("warp", ENTRY_WARP)):
        (tmp / f"{op}_kernels.cu").write_text(emulated_source(ROOT / f"csrc/{op}/{op}_kernels.cu"))
        (tmp / f"entry_{op}.cpp").write_text(entry)
        sources.append(str(tmp / f"entry_{op}.cpp"))
    lib = tmp / "libemulated.so"
    cmd = [CXX, "-std=c++17", "-O1", "-shared", "-fPIC", "-w", f"-I{tmp}", f"-I{ROOT / 'csrc'}",
           *sources, "-o", str(lib)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return ctypes.CDLL(str(lib))


def set_max_blocks(lib, blocks):
    lib.pnp_max_blocks(ctypes.c_int64(blocks))
    lib.warp_max_blocks(ctypes.c_int64(blocks))


def ptr(a):
    return ctypes.c_void_p(a.data_ptr()) if a is not None else ctypes.c_void_p(None)


def emulated_solve(lib, X, x, K, w, dtype, seed=0, loss="l2", huber_delta=1.0, init=None,
                   max_iterations=100, min_warps=1, loss_scales=None, distortion=None, model=0):
    """Forward and backward of the emulated kernels, in solve_with_grads' output order (then
    the distortion's gradient, (B, 12) zero-padded, when a (B, 12) lens is given; `model` is
    the kernels' CameraModel: 1 OpenCV, 2 fisheye)."""
    B, N = X.shape[:2]
    c = lambda a: a.detach().to(dtype).contiguous()  # noqa: E731
    c64 = lambda a: a.detach().to(torch.float64).contiguous()  # noqa: E731  (as the glue does)
    X, x, w = map(c, (X, x, w))
    K = c64(c(K))
    iR, it = map(lambda a: c64(c(a)), init) if init is not None else (None, None)
    g = torch.Generator().manual_seed(seed)  # the upstream gradients of solve_with_grads
    up = [torch.randn(B, 3, 3, generator=g, dtype=torch.float64), torch.randn(B, 3, generator=g, dtype=torch.float64),
          torch.randn(B, generator=g, dtype=torch.float64)]
    gR, gt, gc = map(c, up)
    nan = lambda *s: torch.full(s, math.nan, dtype=dtype)  # noqa: E731  (poison: unwritten shows)
    R, t, cost, cov = nan(B, 3, 3), nan(B, 3), nan(B), nan(B, 6, 6)
    state = torch.full((B, 48), math.nan, dtype=torch.float64)
    iters, status = torch.full((B,), -7, dtype=torch.int32), torch.full((B,), -7, dtype=torch.int32)
    gX, gx, gK, gw = nan(B, N, 3), nan(B, N, 2), nan(B, 3, 3), nan(B, N, 2)
    scales = None if loss_scales is None else loss_scales.double().contiguous()  # kept alive
    D = None if distortion is None else c64(c(distortion))
    gD = None if distortion is None else nan(B, 12)
    fn = lib.pnp_f64 if dtype == torch.float64 else lib.pnp_f32
    rc = fn(ptr(X), ptr(x), ptr(w), ptr(K), ptr(iR), ptr(it), ctypes.c_int64(B), ctypes.c_int64(N),
            ctypes.c_int32(1 if loss == "huber" else 0), ctypes.c_double(huber_delta),
            ctypes.c_int32(max_iterations), ctypes.c_double(1e-10), ctypes.c_int32(min_warps),
            ptr(R), ptr(t), ptr(cost), ptr(iters), ptr(status), ptr(cov), ptr(state), ptr(gR), ptr(gt), ptr(gc),
            ptr(gX), ptr(gx), ptr(gK), ptr(gw), ptr(scales), ptr(D), ctypes.c_int32(model), ptr(gD))
    assert rc == 0, {101: "lanes diverged", 102: "lanes disagree on mask or offset", 103: "partial mask"}.get(rc, rc)
    return [R, t, cost, iters, status, cov, gX, gx, gK, gw] + ([] if gD is None else [gD])


CASES = [  # (family, count, N, noise, loss, outliers)
    ("face", 12, 68, 1.0, "l2", 0.0),
    ("minimal", 16, 4, 1.0, "l2", 0.0),
    ("planar", 12, 20, 1.0, "l2", 0.0),
    ("random", 12, 40, 1.0, "huber", 0.3),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-N{c[2]}-{c[4]}")
def test_emulated_kernels_match_cpu(emulated, case, dtype):
    family, count, n, noise, loss, outliers = case
    X, x, K, w = family_batch(family, count, n, noise=noise, seed=3, outliers=outliers)
    emu = emulated_solve(emulated, X, x, K, w, dtype, loss=loss, huber_delta=2.0)
    cpu = solve_with_grads(X, x, K, w, "cpu", dtype, loss=loss, loss_scale=2.0)
    assert_agree(emu, cpu, dtype, f"emulated {family}")


def test_emulated_bad_inputs_init_and_small_grid(emulated):
    """Bad problems beside good ones, an init, and a grid smaller than the batch (each block
    then takes several problems in turn), with the register-capped kernel."""
    B, n = 10, 24
    X, x, K, w = family_batch("random", B, n, seed=9)
    X[0, 3, 1] = math.nan
    X[1] = X[1, :1].expand(n, 3)
    w[2] = 0.0
    w[3, ::2] = 0.0
    X[3, ::2] = math.nan
    K[4, 1, 1] = 0.0  # a singular focal block
    K[6, 2] = torch.tensor([0.5, -3.0, 2.0])  # K's bottom row is ignored: still solved
    w[5, 0, 0] = -1.0
    rng = np.random.default_rng(1)
    init = (torch.tensor(np.stack([np.eye(3)] * B)), torch.tensor(rng.uniform(-1, 1, (B, 3)) + [0, 0, 8.0]))
    set_max_blocks(emulated, 3)
    try:
        for dtype in (torch.float64, torch.float32):
            for kw in ({}, {"init": tuple(a.to(dtype) for a in init)}):
                emu = emulated_solve(emulated, X, x, K, w, dtype, min_warps=16, **kw)
                cpu = solve_with_grads(X, x, K, w, "cpu", dtype, **kw)
                assert_agree(emu, cpu, dtype, f"emulated bad inputs {kw.keys()}")
                assert emu[4][[0, 2, 4, 5]].tolist() == [3, 3, 3, 3]
                assert int(emu[4][6]) == 0
    finally:
        set_max_blocks(emulated, 2**31 - 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(3, 68), (40, 5), (5, 0), (0, 7)])
def test_emulated_warp_points_match_cpu(emulated, shape, dtype):
    B, N = shape
    g = torch.Generator().manual_seed(B * 100 + N)
    p = (torch.rand(B, N, 2, generator=g, dtype=torch.float64) * 800).to(dtype)
    A = torch.randn(B, 2, 3, generator=g, dtype=torch.float64).to(dtype)
    gy = torch.randn(B, N, 2, generator=g, dtype=torch.float64).to(dtype)
    y0 = torch.ops.pyfacepnp.warp_points(p, A)
    gp0, gA0 = torch.ops.pyfacepnp.warp_points_backward(gy, p, A)
    rtol = 1e-14 if dtype == torch.float64 else 1e-6
    for blocks in (2**31 - 1, 3):
        set_max_blocks(emulated, blocks)
        y, gp, gA = (torch.full(s, math.nan, dtype=dtype) for s in ((B, N, 2), (B, N, 2), (B, 2, 3)))
        fn = emulated.warp_f64 if dtype == torch.float64 else emulated.warp_f32
        rc = fn(ptr(p), ptr(A), ptr(gy), ctypes.c_int64(B), ctypes.c_int64(N), ptr(y), ptr(gp), ptr(gA))
        set_max_blocks(emulated, 2**31 - 1)
        assert rc == 0, rc
        # The same per-point formula; the affine gradient sums the points in another order.
        torch.testing.assert_close(y, y0, rtol=rtol, atol=rtol * 4000)
        torch.testing.assert_close(gp, gp0, rtol=rtol, atol=rtol * 20)
        torch.testing.assert_close(gA, gA0, rtol=rtol, atol=rtol * max(1.0, float(gA0.abs().max()) if gA0.numel() else 1.0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_emulated_ransac_matches_cpu(emulated, dtype):
    """The RANSAC kernel in lockstep: the same samples (counter-based generator), the same
    inliers and, up to summation order, the same answer as the CPU op."""
    from test_pnp_ransac import problems_with_outliers

    X, x, K, _ = problems_with_outliers("random", 8, 40, 0.4, seed=21)
    X[3, 0, 0] = math.nan  # an invalid problem among them
    B, N = X.shape[:2]
    w = torch.ones(B, N, 2, dtype=dtype)
    Xd, xd = X.to(dtype).contiguous(), x.to(dtype).contiguous()
    Kd = K.to(dtype).double().contiguous()
    nan = lambda *s: torch.full(s, math.nan, dtype=dtype)  # noqa: E731
    R, t, cost, cov = nan(B, 3, 3), nan(B, 3), nan(B), nan(B, 6, 6)
    state = torch.full((B, 48), math.nan, dtype=torch.float64)
    iters, status, n_in, trials = (torch.full((B,), -7, dtype=torch.int32) for _ in range(4))
    inliers = torch.ones(B, N, dtype=torch.bool)
    fn = emulated.ransac_f64 if dtype == torch.float64 else emulated.ransac_f32
    rc = fn(ptr(Xd), ptr(xd), ptr(w), ptr(Kd), ctypes.c_int64(B), ctypes.c_int64(N), ctypes.c_int32(0),
            ctypes.c_double(1.0), ctypes.c_double(5.0), ctypes.c_double(0.9999), ctypes.c_int32(10000),
            ctypes.c_int64(7), ptr(R), ptr(t), ptr(cost), ptr(iters), ptr(status), ptr(cov), ptr(state),
            ptr(inliers), ptr(n_in), ptr(trials))
    assert rc == 0, {101: "lanes diverged", 102: "lanes disagree on mask or offset", 103: "partial mask"}.get(rc, rc)
    ref = pyfacepnp.solve_pnp_ransac(Xd, xd, K.to(dtype), w, threshold=5.0, seed=7)
    assert status.tolist() == ref.status.tolist()
    assert torch.equal(inliers, ref.inliers) and torch.equal(n_in, ref.num_inliers)
    assert torch.equal(trials, ref.trials)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    ok = ref.converged
    torch.testing.assert_close(R[ok], ref.R[ok], rtol=tol, atol=tol)
    torch.testing.assert_close(t[ok], ref.t[ok], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_emulated_per_problem_loss_scales_match_cpu(emulated, dtype):
    X, x, K, w = family_batch("random", 8, 30, noise=3.0, seed=5, outliers=0.2)
    scales = torch.tensor([0.5, 1.0, 2.0, 4.0, 0.0, 8.0, 1.5, 3.0], dtype=torch.float64)  # 0: invalid
    emu = emulated_solve(emulated, X, x, K, w, dtype, loss="huber", loss_scales=scales)
    cpu = solve_with_grads(X, x, K, w, "cpu", dtype, loss="huber", loss_scale=scales)
    assert_agree(emu, cpu, dtype, "emulated per-problem scales")
    assert int(emu[4][4]) == 3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("model", ["pinhole", "fisheye"])
def test_emulated_distortion_matches_cpu(emulated, model, dtype):
    """Distorted cameras through the kernels' lens path (per-thread coefficient copies, the
    18-value camera-gradient reduction), in lockstep: the CPU op's answers and gradients."""
    from test_pnp_distortion import distorted_problem

    n_coeffs = 4 if model == "fisheye" else 12
    probs = [distorted_problem("random", 40 + s, model, n_coeffs, n=30, noise=1.0) for s in range(6)]
    X = torch.tensor(np.stack([p.X for p, _ in probs]))
    x = torch.tensor(np.stack([p.x for p, _ in probs]))
    K = torch.tensor(np.stack([p.K for p, _ in probs]))
    D = torch.tensor(np.stack([d for _, d in probs]))
    D[2, 0] = math.nan  # an invalid lens among them
    w = torch.ones(6, 30, 2, dtype=torch.float64)
    padded = torch.zeros(6, 12, dtype=torch.float64)
    padded[:, :n_coeffs] = D
    emu = emulated_solve(emulated, X, x, K, w, dtype, distortion=padded, model=2 if model == "fisheye" else 1)
    Dg = D.to(dtype).clone().requires_grad_()
    cpu = solve_with_grads(X, x, K, w, "cpu", dtype, distortion=Dg, camera_model=model)
    assert_agree(emu[:10], cpu, dtype, f"emulated {model}")
    assert emu[4].tolist() == cpu[4].tolist() and int(emu[4][2]) == 3
    ok = cpu[4] == 0
    tol = 1e-8 if dtype == torch.float64 else 2e-3
    torch.testing.assert_close(emu[10][ok, :n_coeffs], Dg.grad[ok], rtol=tol, atol=tol)
    assert (emu[10][:, n_coeffs:] == 0).all() and (emu[10][~ok] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_emulated_minima_match_cpu(emulated, dtype):
    """The every-minimum kernel in lockstep: the CPU op's counts, statuses and solutions."""
    X, x, K, w = family_batch("planar", 6, 8, noise=1.0, seed=3)
    X4, x4, K4, w4 = family_batch("minimal", 6, 4, noise=0.5, seed=4)
    for (Xb, xb, Kb, wb) in ((X, x, K, w), (X4, x4, K4, w4)):
        B, N = Xb.shape[:2]
        k = 4
        Xd, xd, wd = (a.to(dtype).contiguous() for a in (Xb, xb, wb))
        Kd = Kb.to(dtype).double().contiguous()
        nan = lambda *s: torch.full(s, math.nan, dtype=dtype)  # noqa: E731
        R, t, cost, cov = nan(B, k, 3, 3), nan(B, k, 3), nan(B, k), nan(B, k, 6, 6)
        state = torch.full((B, k, 48), math.nan, dtype=torch.float64)
        iters, status = (torch.full((B, k), -7, dtype=torch.int32) for _ in range(2))
        count = torch.full((B,), -7, dtype=torch.int32)
        fn = emulated.minima_f64 if dtype == torch.float64 else emulated.minima_f32
        rc = fn(ptr(Xd), ptr(xd), ptr(wd), ptr(Kd), ctypes.c_int64(B), ctypes.c_int64(N), ctypes.c_int32(k),
                ptr(R), ptr(t), ptr(cost), ptr(iters), ptr(status), ptr(cov), ptr(state), ptr(count))
        assert rc == 0, rc
        ref = pyfacepnp.solve_pnp_minima(Xd, xd, Kb.to(dtype), wd, num_solutions=k)
        assert torch.equal(count, ref.num_solutions) and torch.equal(status, ref.status)
        assert (count >= 1).all() and (count >= 2).any()
        tol = 1e-9 if dtype == torch.float64 else 1e-4
        ok = ref.converged
        torch.testing.assert_close(R[ok], ref.R[ok], rtol=tol, atol=tol)
        torch.testing.assert_close(t[ok], ref.t[ok], rtol=tol, atol=tol)


LOSS_KINDS = {"l2": 0, "huber": 1, "cauchy": 2, "geman_mcclure": 3}


@pytest.mark.parametrize("loss,lens", [("l2", None), ("huber", None), ("cauchy", None),
                                       ("geman_mcclure", None), ("l2", "pinhole"), ("huber", "fisheye")])
def test_emulated_hessian_and_its_backward_match_cpu(emulated, loss, lens):
    """pnp_hessian's kernels (forward and the third-derivative backward) against the CPU op, at
    each problem's solution, with a bad problem and a point behind the camera among them."""
    from pyfacepnp._ext import ops

    B, n = 8, 37
    X, x, K, w = family_batch("random", B, n, noise=2.0, seed=4)
    g = torch.Generator().manual_seed(5)
    w = w * (0.5 + torch.rand(w.shape, generator=g, dtype=w.dtype))
    D, model, schema = None, 0, 0
    if lens == "pinhole":
        D, model = torch.tensor([0.05, -0.02, 0.001, 0.002, 0.01], dtype=X.dtype).expand(B, 5), 1
    elif lens == "fisheye":
        D, model, schema = torch.tensor([0.05, -0.02, 0.01, 0.003], dtype=X.dtype).expand(B, 4), 2, 1
    res = pyfacepnp.solve_pnp(X, x, K, w, loss=loss, loss_scale=2.0, distortion=D,
                              camera_model="fisheye" if schema else "pinhole")
    R, t = res.R.clone(), res.t.clone()
    X = X.clone()
    X[1, 2, 0] = math.nan  # invalid: not valid, zero gradients
    t[2, 2] = -t[2, 2]  # the points behind the camera
    gH = torch.randn(B, 6, 6, generator=g, dtype=torch.float64)
    H, valid = ops.pnp_hessian(R, t, X, x, K, w, loss, 2.0, None, D, schema)
    cpu = [H, valid, *ops.pnp_hessian_backward(gH, R, t, X, x, K, w, valid, loss, 2.0, None, D, schema)]
    c = lambda a: a.detach().to(torch.float64).contiguous()  # noqa: E731
    nan = lambda *s: torch.full(s, math.nan, dtype=torch.float64)  # noqa: E731
    Dp = None if D is None else torch.nn.functional.pad(c(D), (0, 12 - D.shape[1]))
    out = [nan(B, 6, 6), torch.zeros(B, dtype=torch.bool), nan(B, 3, 3), nan(B, 3), nan(B, n, 3),
           nan(B, n, 2), nan(B, 3, 3), nan(B, n, 2), None if D is None else nan(B, 12)]
    keep = [c(a) for a in (R, t, X, x, w, K)]
    rc = emulated.hessian_f64(*map(ptr, keep), ctypes.c_int64(B), ctypes.c_int64(n),
                              ctypes.c_int32(LOSS_KINDS[loss]), ctypes.c_double(2.0), ptr(Dp),
                              ctypes.c_int32(model), ptr(out[0]), ptr(out[1]), ptr(c(gH)),
                              *map(ptr, out[2:]))
    assert rc == 0, rc
    assert valid.tolist() == [True, False, False] + [True] * (B - 3)
    assert out[1].tolist() == valid.tolist()
    if D is not None:
        out[8] = out[8][:, :D.shape[1]]
    for name, e, r in zip(["H", "valid", "R", "t", "X", "x", "K", "w", "D"], out, cpu):
        if name == "valid" or r is None or r.numel() == 0:
            continue
        assert torch.isfinite(e).all(), name
        scale = r.abs().amax(dim=tuple(range(1, r.dim())), keepdim=True).clamp_min(1e-300)
        torch.testing.assert_close(e / scale, r / scale, rtol=0, atol=1e-11, msg=name)
