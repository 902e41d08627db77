// Robust PnP: LO-RANSAC per problem, shared by the CPU and CUDA kernels.
//
// Per problem: hypotheses from P3P (Lambda Twist, common/p3p.h) on three sampled points, MSAC
// scoring (sum of min(s_i, threshold^2) over the weighted points, s_i the weighted squared
// residual, a point behind the camera counting threshold^2), adaptive stopping from the best
// inlier ratio and the confidence, and a local optimisation whenever the best improves: the
// inliers of the new best refit by Gauss-Newton (L2), re-scored, twice. The finish is
// solve_problem on the final inlier set from the best pose (the LM and exact Newton of
// solve_pnp, on the caller's robust kernel), so its backward is solve_pnp's with the inlier
// set held fixed.
//
// Deterministic: the samples come from a counter-based generator keyed by (seed, problem
// index, draw), so a problem gets the same answer whatever its batch, the thread count or the
// device. The accumulator (see pnp_solver.h, pnp_batch.h) also provides
//   PointObs load_raw(i)                      point i without the inlier mask
//   void msac(P, thr2, bound, write, score&, n&, changed&)
//       MSAC score and inlier count of pose P; with `write`, the inlier mask := inliers of P
//       and `changed` := the number of entries that changed.
//       Without `write` it may stop early once the score exceeds `bound` (then only
//       `score > bound` is meaningful).
//   void clear_mask()                         the mask := false
//   bool use_mask                             whether load() applies the mask
#pragma once
#include "common/p3p.h"
#include "common/pnp_batch.h"

namespace pfp {

// A point's MSAC term at pose P: min(s, thr2) (thr2 behind the camera); `in` when s < thr2.
template <typename T>
PFP_HD T msac_term(const Pose<T>& P, const Camera<T>& cam, const PointObs<T>& o, T thr2,
                   bool& in) {
  PointEval<T> e;
  in = eval_point(P, cam, o, e) && e.s < thr2;
  return in ? e.s : thr2;
}

// Point i's share of an accumulator's msac(): adds its term, counts it as an inlier and, with
// `write`, sets its mask entry (counting a change).
template <typename T, typename Acc>
PFP_HD void msac_add(const Acc& acc, const Pose<T>& P, T thr2, bool write, int64_t i, T& score,
                     int32_t& n, int32_t& changed) {
  const auto o = acc.load_raw(i);
  bool in = false;
  if (o.active()) {
    score += msac_term(P, acc.cam, o, thr2, in);
    n += in ? 1 : 0;
  }
  if (write) {
    changed += acc.mask[i] != in ? 1 : 0;
    acc.mask[i] = in;
  }
}

// SplitMix64 on a counter: the k-th draw of a stream is a pure function of (key, k).
PFP_HD uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

struct Draws {
  uint64_t key;
  uint64_t count = 0;
  PFP_HD int64_t below(int64_t n) { return int64_t(mix64(key + count++) % uint64_t(n)); }
};

// Trials after which an all-inlier sample of 3 has been drawn with probability `confidence`.
PFP_HD int32_t trials_needed(double inlier_ratio, double confidence, int32_t max_trials) {
  const double p = inlier_ratio * inlier_ratio * inlier_ratio;
  if (!(p > 0.0)) return max_trials;
  if (p >= 1.0) return 1;
  const double n = log(1.0 - confidence) / log(1.0 - p);
  return n < double(max_trials) ? int32_t(ceil(n)) : max_trials;
}

// Three distinct points with both weights positive; false when the draws run out (too few
// such points).
template <typename Acc>
PFP_HD bool draw_sample(const Acc& acc, Draws& d, int64_t N, int64_t* idx) {
  for (int k = 0; k < 3; ++k) {
    bool found = false;
    for (int attempt = 0; attempt < 64 && !found; ++attempt) {
      const int64_t i = d.below(N);
      const auto o = acc.load_raw(i);
      found = o.w[0] > 0.0 && o.w[1] > 0.0;
      for (int j = 0; j < k; ++j) found = found && idx[j] != i;
      if (found) idx[k] = i;
    }
    if (!found) return false;
  }
  return true;
}

struct RansacBest {
  Pose<double> pose;
  double score;
  int32_t inliers = 0;
  int32_t trials = 0;
};

// Local optimisation of a new best: refit on its inliers (L2 Gauss-Newton), keep the refit
// when it scores better, twice. Leaves the mask unspecified.
template <typename Acc>
PFP_HD void local_optimisation(Acc& acc, const RansacParams& rp, RansacBest& best) {
  SolverParams<double> lo;
  lo.rob = Robust<double>{kLossL2, 1.0};
  lo.max_iterations = 10;
  lo.tolerance = 1e-8;
  lo.pd_tol = 1e-10;
  for (int round = 0; round < 2; ++round) {
    double s;
    int32_t n, changed;
    acc.msac(best.pose, rp.threshold2, 0.0, true, s, n, changed);  // the mask := its inliers
    if (n < 6) return;
    Pose<double> p = best.pose;
    NormalEq<double> eq;
    acc.use_mask = true;
    int32_t iters = 0;
    const bool front = acc.normal_eq(p, false, eq);
    if (front) lm_refine(acc, lo, lo.tolerance, p, eq, iters);
    acc.use_mask = false;
    if (!front) return;
    acc.msac(p, rp.threshold2, best.score, false, s, n, changed);
    if (!(s < best.score)) return;
    best.pose = p;
    best.score = s;
    best.inliers = n;
  }
}

// The RANSAC search of one problem; `n_active` points have a positive weight. False when no
// hypothesis was found.
template <typename Acc>
PFP_HD bool ransac_search(Acc& acc, const Camera<double>& cam, const RansacParams& rp,
                          int64_t problem, int n_active, RansacBest& best) {
  RayMap<double> rays;
  if (!cam.prepare_rays(rays)) return false;
  Draws draws{mix64(rp.seed) ^ mix64(uint64_t(problem) + 0x5bd1e995ull)};
  best.score = DtypeMax<double>::value;
  bool have = false;
  int32_t needed = rp.max_trials;
  for (best.trials = 0; best.trials < needed; ++best.trials) {
    int64_t idx[3];
    if (!draw_sample(acc, draws, acc.N, idx)) break;
    double X[3][3], y[3][3];
    for (int k = 0; k < 3; ++k) {
      const auto o = acc.load_raw(idx[k]);
      double m[3];
      Camera<double>::ray(rays, o.x, m);
      const double inv = 1.0 / sqrt(dot3(m, m));
      for (int c = 0; c < 3; ++c) {
        X[k][c] = o.X[c];
        y[k][c] = m[c] * inv;
      }
    }
    Pose<double> hyp[kMaxP3PSolutions];
    int32_t unused;
    const int nh = p3p_lambda_twist<double>(X, y, hyp);
    for (int h = 0; h < nh; ++h) {
      double s;
      int32_t n;
      acc.msac(hyp[h], rp.threshold2, best.score, false, s, n, unused);
      if (!(s < best.score)) continue;
      have = true;
      best.pose = hyp[h];
      best.score = s;
      best.inliers = n;
      local_optimisation(acc, rp, best);
      needed = trials_needed(double(best.inliers) / double(n_active), rp.confidence, rp.max_trials);
    }
  }
  return have;
}

// Solve problem b robustly and store every output; the inlier mask is the accumulator's (the
// caller points it at the problem's row of the `inliers` output).
template <typename scalar_t, typename Acc>
PFP_HD void ransac_problem(Acc& acc, const PnPRansacArgs<scalar_t>& ra, int64_t b,
                           const Camera<double>& cam, int lane, int lanes) {
  const PnPForwardArgs<scalar_t>& a = ra.f;
  const RansacParams& rp = ra.rp;
  ProblemResult<double> res;
  set_invalid(res);
  res.iterations = 0;
  int n_active = 0;
  RansacBest best;
  int32_t n_in = 0;
  acc.use_mask = false;
  const bool valid = problem_robust(a.prm.rob, a.scales, b, acc.rob) && acc.check(n_active) &&
                     n_active >= 4 && cam.valid();
  const bool found = valid && ransac_search(acc, cam, rp, b, n_active, best) && best.inliers >= 4;
  if (found) {
    double s;
    int32_t changed;
    acc.msac(best.pose, rp.threshold2, 0.0, true, s, n_in, changed);
    // Solve on the inliers of the start; while the solution's own inlier set differs (a
    // point just across the threshold), solve again on it, at most twice. The mask left is
    // always the one the returned solution was solved on.
    Pose<double> start = best.pose;
    for (int round = 0;; ++round) {
      acc.use_mask = true;
      solve_problem(acc, cam, &start, a.prm, res);
      acc.use_mask = false;
      if (round == 2 || !(res.status == kConverged || res.status == kMaxIterations)) break;
      int32_t n2;
      acc.msac(res.pose, rp.threshold2, 0.0, true, s, n2, changed);
      if (changed == 0) break;
      n_in = n2;
      start = res.pose;
    }
    make_representable<scalar_t>(res);
  } else if (valid) {
    res.status = kDegenerate;  // no hypothesis with 4 inliers (outputs as INVALID_INPUT's)
  }
  if (!found || res.status == kInvalidInput) {
    acc.clear_mask();
    n_in = 0;
  }
  store_result(a, b, res, lane, lanes);
  if (lane == 0) {
    ra.num_inliers[b] = n_in;
    ra.trials[b] = best.trials;
  }
}

}  // namespace pfp
