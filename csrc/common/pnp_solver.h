// The per-problem PnP driver, shared verbatim by the CPU and CUDA kernels.
//
// All sums over a problem's points go through an accumulator object `acc` supplied by the
// kernel: the CPU kernel loops over points serially, the CUDA kernel reduces across the
// threads that cooperate on the problem and hands every thread the same totals, so the
// control flow below stays uniform. The accumulator provides:
//   bool check(int& n_active)                       inputs finite, weights >= 0
//   void centroid(T* mean)                          weighted mean of the active points
//   void omega(const T* mean, const RayMap<T>& rays, OmegaAccum<T>& out)
//   bool normal_eq(const Pose<T>&, bool exact, NormalEq<T>& out)   false: a point at z <= 0
//   PointObs<T> load(int64_t n); void for_each_point(F f); void reduce(double* v, int n)
//                                                   (see common/pnp_batch.h)
#pragma once
#include <type_traits>

#include "common/pnp_init.h"
#include "common/pnp_point.h"

namespace pfp {

template <typename T>
struct SolverParams {
  Robust<T> rob;
  int32_t max_iterations;
  T tolerance;  // on the LM step: |dw|_inf <= tol and |dt|_inf <= tol * |t|
  T pd_tol;     // pivot floor of the unit-diagonal-scaled Hessian (positive definiteness)
};

template <typename T>
struct ProblemResult {
  Pose<T> pose;
  T cost;
  int32_t iterations;
  int32_t status;
  T cov[36];
};

template <typename T>
PFP_HD void apply_step(const Pose<T>& P, const T* d, Pose<T>& out) {
  for (int i = 0; i < 9; ++i) out.R[i] = P.R[i];
  rotate_left(d, out.R);
  for (int k = 0; k < 3; ++k) out.t[k] = P.t[k] + d[3 + k];
}

// The Cholesky factor of an SPD 6x6 matrix's unit-diagonal scaling D H D (s: the diagonal of D,
// 1 / sqrt(H_ii)); false when the scaled matrix has a pivot below pd_tol (not positive
// definite, pose not determined).
template <typename T>
PFP_HD bool spd_factor6(const T* H, T pd_tol, T* L, T* s) {
  for (int i = 0; i < 6; ++i) {
    if (!(H[7 * i] > T(0)) || !is_finite(H[7 * i])) return false;
    s[i] = T(1) / sqrt(H[7 * i]);
  }
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) L[6 * i + j] = H[6 * i + j] * s[i] * s[j];
  return cholesky<T, 6>(L, pd_tol);
}

// Inverse of an SPD 6x6 matrix through its unit-diagonal scaling; false as spd_factor6.
template <typename T>
PFP_HD bool spd_inverse6(const T* H, T pd_tol, T* inv) {
  T s[6], L[36];
  if (!spd_factor6(H, pd_tol, L, s)) return false;
  cholesky_inverse<T, 6>(L, inv);
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) inv[6 * i + j] *= s[i] * s[j];
  return true;
}

// The Newton step d = -H^-1 g of an SPD 6x6 H (one solve, not the inverse); false as
// spd_factor6.
template <typename T>
PFP_HD bool spd_newton_step6(const T* H, const T* g, T pd_tol, T* d) {
  T s[6], L[36];
  if (!spd_factor6(H, pd_tol, L, s)) return false;
  for (int i = 0; i < 6; ++i) d[i] = -g[i] * s[i];
  cholesky_solve<T, 6>(L, d);
  for (int i = 0; i < 6; ++i) d[i] *= s[i];
  return true;
}

// Solve (H + lambda diag(H)) d = -g (Marquardt scaling); false when not solvable.
template <typename T>
PFP_HD bool damped_step(const NormalEq<T>& eq, T lambda, T* d) {
  T A[36], dmax = T(0);
  for (int i = 0; i < 6; ++i) dmax = tmax(dmax, eq.H[7 * i]);
  for (int i = 0; i < 36; ++i) A[i] = eq.H[i];
  for (int i = 0; i < 6; ++i) A[7 * i] += lambda * tmax(eq.H[7 * i], T(1e-12) * dmax);
  if (!cholesky<T, 6>(A, T(1e-15))) return false;
  for (int i = 0; i < 6; ++i) d[i] = -eq.g[i];
  cholesky_solve<T, 6>(A, d);
  for (int i = 0; i < 6; ++i)
    if (!is_finite(d[i])) return false;
  return true;
}

template <typename T>
PFP_HD bool step_is_small(const T* d, const Pose<T>& P, T tol) {
  const T tn = sqrt(dot3(P.t, P.t));
  for (int i = 0; i < 3; ++i)
    if (tabs(d[i]) > tol || tabs(d[3 + i]) > tol * tn) return false;
  return true;
}

// Levenberg-Marquardt (Nielsen's damping update) from `pose`, whose Gauss-Newton normal
// equations are `eq`, until a step is below `tol` (or no decrease is possible at machine
// precision: true) or `iters` reaches max_iterations (false). `iters` counts proposals and
// carries over between calls.
template <typename T, typename Acc>
PFP_HD bool lm_refine(Acc& acc, const SolverParams<T>& prm, T tol, Pose<T>& pose,
                      NormalEq<T>& eq, int32_t& iters) {
  T lambda = T(1e-3), nu = T(2);
  while (iters < prm.max_iterations) {
    ++iters;
    T d[6];
    if (!damped_step(eq, lambda, d)) {
      lambda *= nu;
      nu *= T(2);
      if (lambda > T(1e16)) return true;
      continue;
    }
    const bool small = step_is_small(d, pose, tol);
    if (small && lambda < T(1e3)) return true;
    T pred = T(0);  // predicted decrease -(g.d + d.H.d/2)
    for (int i = 0; i < 6; ++i) {
      T hd = T(0);
      for (int j = 0; j < 6; ++j) hd += eq.H[6 * i + j] * d[j];
      pred -= d[i] * (eq.g[i] + T(0.5) * hd);
    }
    Pose<T> cand;
    apply_step(pose, d, cand);
    NormalEq<T> ec;
    const bool ok = acc.normal_eq(cand, false, ec);
    if (ok && is_finite(ec.cost) && ec.cost < eq.cost && pred > T(0)) {
      const T rho = (eq.cost - ec.cost) / pred;
      pose = cand;
      eq = ec;
      const T q = T(2) * rho - T(1);
      lambda *= tmax(T(1) / T(3), T(1) - q * q * q);
      nu = T(2);
      if (small) return true;
    } else {
      if (small) return true;  // no decrease even along a tiny step: at the minimum
      lambda *= nu;
      nu *= T(2);
      if (lambda > T(1e16)) return true;
    }
  }
  return false;
}

// Newton iterations with the exact Hessian from `pose`, whose exact normal equations are
// `ex`: quadratic convergence to the point where the exact gradient vanishes, which the
// implicit backward assumes. True when a step is below prm.tolerance; that step is taken
// too and `ex`, one step behind, stays the exact normal equations of the pose before it.
// Every step counts in `iters`, which stops at `limit`; at most five steps. False (the pose
// the last accepted step reached, and its `ex`) when the Hessian is not definite, a step
// does not contract or raises the cost, or a point would go behind the camera.
template <typename T, typename Acc>
PFP_HD bool newton_steps(Acc& acc, const SolverParams<T>& prm, Pose<T>& pose, NormalEq<T>& ex,
                         int32_t& iters, int32_t limit) {
  T prev = T(-1);
  for (int it = 0; it < 5 && iters < limit; ++it) {
    ++iters;
    T d[6];
    if (!spd_newton_step6(ex.H, ex.g, prm.pd_tol, d)) return false;
    if (step_is_small(d, pose, prm.tolerance)) {
      // The last step moves the pose by at most the tolerance, onto the point where the
      // gradient vanishes to second order; `ex` differs from its value there by O(|d|).
      Pose<T> last;
      apply_step(pose, d, last);
      pose = last;
      return true;
    }
    const T tn = sqrt(dot3(pose.t, pose.t));
    T size = T(0);
    for (int i = 0; i < 3; ++i) size = tmax(size, tmax(tabs(d[i]), tabs(d[3 + i]) / tn));
    // Near the optimum the cost changes by less than its rounding error, so a step is
    // judged by contraction (Newton steps shrink quadratically) and a cost that does not
    // rise beyond rounding.
    if (prev >= T(0) && size > T(0.5) * prev) return false;
    Pose<T> cand;
    apply_step(pose, d, cand);
    NormalEq<T> ec;
    if (!acc.normal_eq(cand, true, ec)) return false;
    if (!(ec.cost <= ex.cost + T(1e-11) * tabs(ex.cost))) return false;
    pose = cand;
    ex = ec;
    prev = size;
  }
  return false;
}

// The polish of a pose near the optimum (the LM's): its exact normal equations, then
// newton_steps (not counted as iterations).
template <typename T, typename Acc>
PFP_HD bool newton_polish(Acc& acc, const SolverParams<T>& prm, Pose<T>& pose, NormalEq<T>& ex) {
  acc.normal_eq(pose, true, ex);
  int32_t steps = 0;
  return newton_steps(acc, prm, pose, ex, steps, 5);
}

// Finish a pose that LM brought within max(tolerance, 1e-6): exact Newton (about two passes
// over the points instead of several linear-rate LM iterations); if the Newton iterations
// do not contract, LM resumes at the full tolerance. True when converged; `ex` holds the
// exact normal equations at the final pose.
template <typename T, typename Acc>
PFP_HD bool finish_to_tolerance(Acc& acc, const SolverParams<T>& prm, Pose<T>& pose,
                                NormalEq<T>& ex, int32_t& iters) {
  if (newton_polish(acc, prm, pose, ex)) return true;
  NormalEq<T> eq;
  acc.normal_eq(pose, false, eq);
  const bool conv = lm_refine(acc, prm, prm.tolerance, pose, eq, iters);
  if (conv)
    newton_polish(acc, prm, pose, ex);
  else
    acc.normal_eq(pose, true, ex);
  return conv;
}

// max |R^T R - I|, entrywise.
template <typename T>
PFP_HD T orthonormality_error(const T* R) {
  T err = T(0);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      T s = T(0);
      for (int k = 0; k < 3; ++k) s += R[3 * k + i] * R[3 * k + j];
      err = tmax(err, tabs(s - (i == j ? T(1) : T(0))));
    }
  return err;
}

// How far a user's init rotation may be from SO(3) (|R^T R - I| entrywise): float32
// rounding and accumulated products pass, a scaled or sheared matrix does not.
constexpr double kInitRotationTol = 1e-3;

// A user init: finite and a rotation up to kInitRotationTol, then projected onto SO(3).
template <typename T>
PFP_HD bool prepare_init(Pose<T>& P) {
  for (int i = 0; i < 9; ++i)
    if (!is_finite(P.R[i])) return false;
  for (int i = 0; i < 3; ++i)
    if (!is_finite(P.t[i])) return false;
  if (!(det3(P.R) > T(0)) || !(orthonormality_error(P.R) <= T(kInitRotationTol))) return false;
  // From within 1e-3 the polar iteration converges quadratically: 4 steps reach rounding.
  if (!orthonormalize3(P.R, 4)) return false;
  return orthonormality_error(P.R) < T(1e-12);
}

constexpr int kMaxCandidates = 4;  // starting poses refined by the LM, at most

// The 24 descents (pnp_init.h): every accumulator provides
//   void descend_starts(const QuarticForm<T>& F)   every start's descent
//   T start_minimum(int k, T* R, bool& dup)        start k's end point, its error, and whether
//                                                  it ended in an earlier group's basin
// (the CPU: the starts of a group in the lanes of a vectorised loop, pnp/pnp_cpu_starts.h;
// the CUDA kernel: one start per lane of the warp).

// Minima of the object-space error over SO(3) from the 24 cube-group starts, distinct and
// sorted by error, each with its optimal translation. Returns their number (0 when the
// problem has no valid rays). `ferr` receives their object-space errors.
template <typename T, typename Acc>
PFP_HD int object_space_minima(Acc& acc, const Camera<T>& cam, Pose<T>* mins, T* ferr) {
  RayMap<T> rays;
  if (!cam.prepare_rays(rays)) return 0;
  T mean[3];
  acc.centroid(mean);
  OmegaAccum<T> om;
  acc.omega(mean, rays, om);
  T Omega[81], P[27];
  if (!omega_finish(om, Omega, P)) return 0;
  QuarticForm<T> F;
  quartic_form(Omega, F);
  acc.descend_starts(F);
  int n = 0;
  for (int k = 0; k < kNumStarts; ++k) {
    T R[9];
    bool dup = false;  // the same minimum reached from another start
    const T f = acc.start_minimum(k, R, dup);
    if (!is_finite(f) || dup) continue;
    for (int c = 0; c < n && !dup; ++c) dup = rot_distance(R, mins[c].R) < T(1e-5);
    if (dup) continue;
    int pos = n++;  // insertion sort by f
    while (pos > 0 && f < ferr[pos - 1]) {
      ferr[pos] = ferr[pos - 1];
      mins[pos] = mins[pos - 1];
      --pos;
    }
    ferr[pos] = f;
    for (int i = 0; i < 9; ++i) mins[pos].R[i] = R[i];
  }
  for (int c = 0; c < n; ++c) {  // t = P r in centred coordinates, minus R mean
    T Rm[3];
    matvec3(mins[c].R, mean, Rm);
    for (int i = 0; i < 3; ++i) {
      T s = T(0);
      for (int j = 0; j < 9; ++j) s += P[9 * i + j] * mins[c].R[j];
      mins[c].t[i] = s - Rm[i];
    }
  }
  return n;
}

// The initialiser seam: where the LM starts. kStartGiven is one pose from the caller (the
// user's init; a robust estimator's best hypothesis), kStartGlobal the object-space minima.
// A given start that puts a point behind the camera, or does not converge, is followed by
// the global start (solve_problem).
enum StartSource : int32_t { kStartGiven = 0, kStartGlobal = 1 };

template <typename T, typename Acc>
PFP_HD int starting_poses(Acc& acc, const Camera<T>& cam, StartSource src, const Pose<T>* given,
                          Pose<T>* starts, T* ferr) {
  if (src == kStartGlobal) return object_space_minima(acc, cam, starts, ferr);
  starts[0] = *given;
  ferr[0] = T(0);
  return 1;
}

// The best refined result over a list of starts.
template <typename T>
struct Candidate {
  bool have = false;      // some start could be refined (it had every point in front)
  bool conv = false;      // its refinement converged
  bool finished = false;  // converged to the full tolerance by Newton: `ex` is the polish's
  Pose<T> pose;
  T cost = T(0);
  NormalEq<T> ex;  // when finished: the exact normal equations one step behind `pose`
};

// Refine a start whose every weighted point is in front, from its normal equations `eq`.
// When they are the exact ones (`exact`), Newton steps first: a start at the object-space
// minimum is usually in Newton's quadratic basin already, so two or three exact passes
// replace the LM's two to four Gauss-Newton passes and the polish's two. Where they do not
// converge, and from a start moved in front of the camera (Gauss-Newton's `eq`), the LM to
// max(tolerance, 1e-6), for finish_candidate to polish.
template <typename T, typename Acc>
PFP_HD void refine_start(Acc& acc, const SolverParams<T>& prm, Pose<T> pose, NormalEq<T>& eq,
                         bool exact, int32_t& iters, Candidate<T>& out) {
  out.have = true;
  out.finished = exact && newton_steps(acc, prm, pose, eq, iters, prm.max_iterations);
  out.conv = out.finished;
  if (out.finished) {
    out.ex = eq;
  } else {
    if (exact && iters < prm.max_iterations) acc.normal_eq(pose, false, eq);
    out.conv = lm_refine(acc, prm, tmax(prm.tolerance, T(1e-6)), pose, eq, iters);
  }
  out.pose = pose;
  out.cost = eq.cost;
}

// The mean over the active points of |X - mean|_inf: the object's size, in its units.
template <typename T, typename Acc>
PFP_HD T mean_spread(Acc& acc, const T* mean) {
  double s[2] = {0.0, 0.0};
  acc.for_each_point([&](int64_t n) {
    const PointObs<double> o = acc.load(n);
    if (!o.active()) return;
    double d = 0.0;
    for (int k = 0; k < 3; ++k) d = tmax(d, tabs(o.X[k] - double(mean[k])));
    s[0] += d;
    s[1] += 1.0;
  });
  acc.reduce(s, 2);
  return T(s[0] / tmax(s[1], 1.0));
}

// Move a start that puts a weighted point behind the camera back along its optical axis
// (t_z grows: by the centroid's depth deficit plus the object's size, doubling) until every
// point is in front, and evaluate it there. The reprojection error is infinite at the camera
// plane, so the LM from there keeps every point in front. False when no shift does it.
template <typename T, typename Acc>
PFP_HD bool move_in_front(Acc& acc, Pose<T>& pose, NormalEq<T>& eq) {
  T mean[3], Rm[3];
  acc.centroid(mean);
  matvec3(pose.R, mean, Rm);
  T shift = tmax(-(Rm[2] + pose.t[2]), T(0)) + mean_spread(acc, mean);
  if (!(shift > T(0)) || !is_finite(shift)) return false;
  const T tz = pose.t[2];
  for (int k = 0; k < 64 && is_finite(shift); ++k, shift *= T(2)) {
    pose.t[2] = tz + shift;
    if (acc.normal_eq(pose, false, eq) && is_finite(eq.cost)) return true;
  }
  return false;
}

// Refine the starts (refine_start) and keep the lowest cost: the first start that puts every
// point in front, then those whose object-space error is within a factor 4 of it (up to
// kMaxCandidates; small-N and planar problems have several comparable minima, e.g. the planar
// two-fold ambiguity). When no global start has every weighted point in front (a network's
// early output, pixels that fit best with the scene behind the camera), the same starts are
// moved in front (move_in_front) and refined: the answer is then the best front-facing
// minimum the LM reaches from them, never a problem discarded.
template <typename T, typename Acc>
PFP_HD void refine_starts(Acc& acc, const SolverParams<T>& prm, const Pose<T>* starts,
                          const T* ferr, int n_starts, bool global, Candidate<T>& best,
                          int32_t& iters) {
  for (int pass = 0; pass < (global ? 2 : 1) && !best.have; ++pass) {
    int used = 0;
    T limit = T(0);
    for (int c = 0; c < n_starts && used < kMaxCandidates; ++c) {
      if (used > 0 && ferr[c] > limit) break;
      Pose<T> pose = starts[c];
      NormalEq<T> eq;
      bool front = acc.normal_eq(pose, true, eq) && is_finite(eq.cost), moved = false;
      if (!front && pass == 1) front = moved = move_in_front(acc, pose, eq);
      if (!front) continue;
      if (used == 0) limit = T(4) * tmax(ferr[c], T(0)) + T(1e-12) * tabs(ferr[n_starts - 1]);
      ++used;
      Candidate<T> r;
      refine_start(acc, prm, pose, eq, !moved, iters, r);  // moved: eq is Gauss-Newton's
      if (!best.have || r.cost < best.cost) best = r;
    }
  }
}

// A problem's result before solving: R = I, t = 0, no covariance, INVALID_INPUT.
template <typename T>
PFP_HD void solve_problem_prologue(ProblemResult<T>& res) {
  for (int i = 0; i < 9; ++i) res.pose.R[i] = (i % 4 == 0) ? T(1) : T(0);
  for (int i = 0; i < 3; ++i) res.pose.t[i] = T(0);
  for (int i = 0; i < 36; ++i) res.cov[i] = T(0);
  res.cost = T(0);
  res.iterations = 0;
  res.status = kInvalidInput;
}

// The finish of a refined start: the exact-Newton polish to the tolerance, the covariance
// and the status. Not converged takes precedence: away from a minimum the Hessian says
// nothing; only a converged problem has a covariance (and gradients).
template <typename T, typename Acc>
PFP_HD void finish_candidate(Acc& acc, const SolverParams<T>& prm, const Candidate<T>& cand,
                             int32_t iters, ProblemResult<T>& res) {
  NormalEq<T> ex;
  Pose<T> pose = cand.pose;
  bool conv = cand.conv;
  if (cand.finished)
    ex = cand.ex;
  else if (conv)
    conv = finish_to_tolerance(acc, prm, pose, ex, iters);
  else
    acc.normal_eq(pose, true, ex);
  res.iterations = iters;
  res.pose = pose;
  res.cost = ex.cost;
  const bool definite = spd_inverse6(ex.H, prm.pd_tol, res.cov);
  res.status = !conv ? kMaxIterations : (definite ? kConverged : kDegenerate);
  if (res.status != kConverged)
    for (int i = 0; i < 36; ++i) res.cov[i] = T(0);
}

// Solve one problem; `init` may be null. The starts are the user's init if it puts every
// point in front of the camera, else the global start (see refine_starts). The answer always
// has every weighted point in front; a problem is DEGENERATE only when the Hessian there is
// not positive definite, or no start can be put in front of the camera at all.
template <typename T, typename Acc>
PFP_HD void solve_problem(Acc& acc, const Camera<T>& cam, const Pose<T>* init,
                          const SolverParams<T>& prm, ProblemResult<T>& res) {
  solve_problem_prologue(res);
  int n_active = 0;
  if (!acc.check(n_active) || n_active < 4 || !cam.valid()) return;
  Pose<T> given;
  if (init != nullptr) {
    given = *init;
    if (!prepare_init(given)) return;
  }

  Pose<T> starts[kNumStarts];
  T ferr[kNumStarts];
  Candidate<T> best;
  int32_t total_iters = 0, best_iters = 0;
  // A given start that puts a point behind the camera, or whose LM does not converge within
  // max_iterations (a far init), is followed by the global start, on a budget of its own;
  // the lower cost among converged results wins.
  for (int src = init != nullptr ? kStartGiven : kStartGlobal; src <= kStartGlobal; ++src) {
    if (best.have && best.conv) break;
    const int n = starting_poses(acc, cam, StartSource(src), &given, starts, ferr);
    Candidate<T> cand;
    int32_t iters = 0;
    refine_starts(acc, prm, starts, ferr, n, src == kStartGlobal, cand, iters);
    total_iters += iters;
    if (cand.have && (!best.have || (cand.conv && !best.conv) ||
                      (cand.conv == best.conv && cand.cost < best.cost))) {
      best = cand;
      best_iters = iters;
    }
  }
  res.iterations = total_iters;
  res.status = kDegenerate;  // no front-facing starting pose, or Hessian not definite
  if (!best.have) return;

  // The finish continues the winner's own budget; `iterations` counts every source's.
  finish_candidate(acc, prm, best, best_iters, res);
  res.iterations += total_iters - best_iters;
}

// Every minimum the global start finds, as SQPnP and OpenCV's solvePnPGeneric return them
// (the planar two-fold ambiguity, the minima of small N): each distinct object-space minimum,
// moved in front of the camera where it is not (move_in_front), is refined and finished on its
// own iteration budget; results that reach the same pose are merged; the `max_out` lowest costs are kept,
// sorted. Returns their number, 0 for an invalid problem (out[0] then says why).
template <typename T, typename Acc>
PFP_HD int solve_minima(Acc& acc, const Camera<T>& cam, const SolverParams<T>& prm,
                        ProblemResult<T>* out, int max_out) {
  ProblemResult<T>& first = out[0];
  solve_problem_prologue(first);
  int n_active = 0;
  if (!acc.check(n_active) || n_active < 4 || !cam.valid()) return 0;
  first.status = kDegenerate;
  Pose<T> starts[kNumStarts];
  T ferr[kNumStarts];
  const int n = object_space_minima(acc, cam, starts, ferr);
  int count = 0;
  for (int c = 0; c < n; ++c) {
    Candidate<T> cand;
    Pose<T> pose = starts[c];
    NormalEq<T> eq;
    int32_t iters = 0;
    const bool front = acc.normal_eq(pose, true, eq) && is_finite(eq.cost);
    if (!front && !move_in_front(acc, pose, eq)) continue;
    refine_start(acc, prm, pose, eq, front, iters, cand);  // moved: eq is Gauss-Newton's
    ProblemResult<T> r;
    finish_candidate(acc, prm, cand, iters, r);
    int pos = count;  // r's place: merge with a result at the same pose, else sorted insert
    for (int j = 0; j < count; ++j) {
      T dt = T(0), nt = T(0);
      for (int k = 0; k < 3; ++k) {
        dt = tmax(dt, tabs(out[j].pose.t[k] - r.pose.t[k]));
        nt = tmax(nt, tabs(out[j].pose.t[k]));
      }
      if (rot_distance(out[j].pose.R, r.pose.R) < T(1e-7) && dt <= T(1e-7) * nt) {
        pos = -1;
        if (r.cost < out[j].cost) out[j] = r;
        break;
      }
    }
    if (pos < 0) continue;
    if (count < max_out) ++count;
    else if (!(r.cost < out[count - 1].cost)) continue;
    pos = count - 1;
    while (pos > 0 && r.cost < out[pos - 1].cost) {
      out[pos] = out[pos - 1];
      --pos;
    }
    out[pos] = r;
  }
  return count;
}

// dL/dtheta from upstream gradients of R (3x3) and t: with dR = [dw]x R,
// dL/dw_k = tr(G_R^T [e_k]x R), i.e. the axial vector of M - M^T for M = G_R R^T.
template <typename T>
PFP_HD void pose_cotangent(const T* R, const T* gR, const T* gt, T* gtheta) {
  T M[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      M[3 * i + j] = gR[3 * i] * R[3 * j] + gR[3 * i + 1] * R[3 * j + 1] + gR[3 * i + 2] * R[3 * j + 2];
  gtheta[0] = M[7] - M[5];
  gtheta[1] = M[2] - M[6];
  gtheta[2] = M[3] - M[1];
  for (int k = 0; k < 3; ++k) gtheta[3 + k] = gt[k];
}

}  // namespace pfp
