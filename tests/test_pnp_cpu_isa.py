"""The CPU's vectorised passes (csrc/pnp/pnp_cpu_simd.h) and global-start descents
(pnp_cpu_starts.h; serial on the baseline) against each other and against the scalar loop, each
in a process of its own (PYFACEPNP_CPU_ISA is read once): every instruction set gives the same
bits, forward and backward; the vectorised backward gives the scalar
backward's per-point gradients bit for bit and its K gradient to rounding (its sum over points
runs per lane), from the same forward state."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pnp_problems import batch, make_problem

ROOT = Path(__file__).resolve().parents[1]
OPS = torch.ops.pyfacepnp
SCALE = 2.0  # the Huber cases' loss scale


def cpu_flags() -> set:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


FLAGS = cpu_flags()
ISAS = ["baseline"] + (["avx2"] if {"avx2", "fma"} <= FLAGS else []) + (
    ["avx512"] if {"avx2", "fma", "avx512f", "avx512dq", "avx512vl"} <= FLAGS else [])

RUN = r"""
import sys
import torch
sys.path.insert(0, sys.argv[3])
import pyfacepnp  # noqa: F401  (registers the ops)
ops = torch.ops.pyfacepnp
out = []
for c in torch.load(sys.argv[1]):
    fwd = ops.solve_pnp(c["X"], c["x"], c["K"], c["w"], None, None, c["loss"], c["scale"], 100, 1e-10)
    bwd = ops.solve_pnp_backward(c["gR"], c["gt"], c["gc"], c["X"], c["x"], c["K"], c["w"],
                                 c["state"], c["status"], c["loss"], c["scale"], None, None, 0)
    out.append((list(fwd), list(bwd)))
torch.save(out, sys.argv[2])
"""


def make_cases():
    """Batches whose N leave every tail of a block of eight lanes (and a planar one, whose global
    start has two minima), both dtypes and losses, unit
    and explicit weights with zero-weight coordinates and inactive points holding NaN and
    1e300, one problem that cannot converge; the state is this process's forward's."""
    rng = np.random.default_rng(5)
    g = torch.Generator().manual_seed(5)
    cases = []
    for n, family in ((5, "random"), (13, "random"), (68, "random"), (301, "face"), (40, "planar")):
        probs = [make_problem(family, rng, n=n) for _ in range(6)]
        X, x, K = batch(probs)
        X[5] = X[5, :1]  # every point the same: DEGENERATE, zero gradients
        w = torch.rand(6, n, 2, generator=g, dtype=torch.float64) + 0.5
        w[:, ::4, 1] = 0.0
        w[:, 2::5] = 0.0
        Xp, xp = X.clone(), x.clone()
        Xp[:, 2::5, 0] = float("nan")
        xp[:, 2::5, 1] = 1e300
        for dtype in (torch.float64, torch.float32):
            for loss in ("l2", "huber"):
                for Xw, xw, weights in ((X, x, None), (Xp, xp, w)):
                    Xd, xd = Xw.to(dtype), xw.to(dtype)
                    wd = None if weights is None else weights.to(dtype)
                    Kd = K.to(dtype)
                    fwd = OPS.solve_pnp(Xd, xd, Kd, wd, None, None, loss, SCALE, 100, 1e-10)
                    cases.append(dict(
                        X=Xd, x=xd, K=Kd, w=wd, loss=loss, scale=SCALE, state=fwd[6], status=fwd[4],
                        gR=torch.randn(6, 3, 3, generator=g, dtype=torch.float64).to(dtype),
                        gt=torch.randn(6, 3, generator=g, dtype=torch.float64).to(dtype),
                        gc=torch.randn(6, generator=g, dtype=torch.float64).to(dtype)))
    return cases


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{isa: [(forward outputs, backward outputs) per case]} and the cases."""
    tmp = tmp_path_factory.mktemp("cpu_isa")
    cases = make_cases()
    torch.save(cases, tmp / "cases.pt")
    (tmp / "run.py").write_text(RUN)
    out = {}
    for isa in ["scalar"] + ISAS:
        env = dict(os.environ, PYFACEPNP_CPU_ISA=isa)
        subprocess.run([sys.executable, str(tmp / "run.py"), str(tmp / "cases.pt"), str(tmp / f"{isa}.pt"),
                        str(ROOT)], check=True, env=env)
        out[isa] = torch.load(tmp / f"{isa}.pt")
    return out, cases


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns (a signed zero and a NaN's payload count)."""
    if not t.is_floating_point():
        return t
    return t.contiguous().view(torch.int64 if t.element_size() == 8 else torch.int32)


def test_the_cases_are_what_they_claim(runs):
    _, cases = runs
    for c in cases:
        assert c["status"][:5].eq(0).sum() >= 4 and c["status"][5] == 2


@pytest.mark.skipif(len(ISAS) < 2, reason="this CPU runs one instruction set of the passes")
def test_every_instruction_set_gives_the_same_bits(runs):
    out, _ = runs
    for isa in ISAS[1:]:
        for (f0, b0), (f1, b1) in zip(out["baseline"], out[isa]):
            for u, v in zip(f0 + b0, f1 + b1):
                assert torch.equal(bits(u), bits(v)), isa


def test_vectorised_backward_is_the_scalar_backward(runs):
    out, cases = runs
    # The two are different loops: their K gradients differ in the last bits somewhere.
    assert any(not torch.equal(fast[1][2], slow[1][2]) for fast, slow in zip(out[ISAS[-1]], out["scalar"]))
    for c, (_, fast), (_, slow) in zip(cases, out[ISAS[-1]], out["scalar"]):
        gX, gx, gK, gw, _ = fast
        sX, sx, sK, sw, _ = slow
        for u, v in ((gX, sX), (gx, sx), (gw, sw)):  # per point: the same function, same bits
            assert torch.equal(bits(u), bits(v))
        # dL/dK: the same terms summed in another order.
        tol = 1e-12 if gK.dtype == torch.float64 else 1e-6
        scale = sK.abs().flatten(1).amax(1, keepdim=True).clamp_min(1e-300)
        assert ((gK - sK).abs().flatten(1) <= tol * scale).all()
        # Zeros, +0.0 exactly: an unconverged problem's, inactive points', zero weights'.
        conv = c["status"] == 0
        assert bits(gX[~conv]).eq(0).all() and bits(gK[~conv]).eq(0).all()
        if c["w"] is not None:
            inactive = (c["w"] == 0).all(-1)
            assert bits(gX[inactive]).eq(0).all() and bits(gx[inactive]).eq(0).all()
            assert bits(gw[c["w"] == 0]).eq(0).all()
            assert bits(gx[conv][c["w"][conv] != 0]).ne(0).all()  # the others are not all zero
