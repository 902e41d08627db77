// The global start's 24 descents on the CPU (common/pnp_init.h), kStartLanes at a time.
//
// A descent is a short chain of dependent steps (about 8 trust-region Newton iterations of a
// few hundred flops each), so one at a time leaves the core waiting on latencies. Here the
// descents of a group of starts run side by side, one per lane of a loop whose body is the
// common per-descent math with every branch turned into a selection, which GCC vectorises:
// a group costs about what one descent costs. A lane whose descent has ended keeps computing
// (its results are discarded), so a group takes as many iterations as its longest descent.
// The groups and their early stops are pnp_init.h's (descend_starts_serial).
#pragma once
#include "common/pnp_init.h"

namespace pyfacepnp {

// A group's descents, lane-major: entry k of lane l is x[k][l]. kStartLanes: one vector's
// doubles (4 with AVX2, 8 with AVX-512), which measured fastest for either.
template <int kStartLanes>
struct DescentLanes {
  double q[4][kStartLanes];
  double m[pfp::kNumMonomials][kStartLanes], H[10][kStartLanes], g[4][kStartLanes];
  double f[kStartLanes], radius[kStartLanes];
  double gr[3][kStartLanes], Hr[9][kStartLanes];  // the iteration's Newton system
  double live[kStartLanes];     // 1 while the lane's descent goes on
  double pending[kStartLanes];  // 1 while its iteration has no accepted step yet
  double dn[3][kStartLanes], dc[3][kStartLanes], newton[kStartLanes];  // an attempt's steps
};

template <typename Lanes>
__attribute__((always_inline)) inline void lane_load(const Lanes& s, int l, double* q,
                                                     pfp::QuarticEval<double>& e) {
  PFP_UNROLL
  for (int a = 0; a < 4; ++a) q[a] = s.q[a][l];
  PFP_UNROLL
  for (int k = 0; k < pfp::kNumMonomials; ++k) e.m[k] = s.m[k][l];
  PFP_UNROLL
  for (int k = 0; k < 10; ++k) e.H[k] = s.H[k][l];
  PFP_UNROLL
  for (int a = 0; a < 4; ++a) e.g[a] = s.g[a][l];
  e.f = s.f[l];
}

// Lane l's point and form become (q, e) where `take` is 1.
template <typename Lanes>
__attribute__((always_inline)) inline void lane_store(Lanes& s, int l, double take,
                                                      const double* q,
                                                      const pfp::QuarticEval<double>& e) {
  PFP_UNROLL
  for (int a = 0; a < 4; ++a) s.q[a][l] = take > 0.0 ? q[a] : s.q[a][l];
  PFP_UNROLL
  for (int k = 0; k < pfp::kNumMonomials; ++k) s.m[k][l] = take > 0.0 ? e.m[k] : s.m[k][l];
  PFP_UNROLL
  for (int k = 0; k < 10; ++k) s.H[k][l] = take > 0.0 ? e.H[k] : s.H[k][l];
  PFP_UNROLL
  for (int a = 0; a < 4; ++a) s.g[a][l] = take > 0.0 ? e.g[a] : s.g[a][l];
  s.f[l] = take > 0.0 ? e.f : s.f[l];
}

// Lane l's Newton system.
template <typename Lanes>
__attribute__((always_inline)) inline void lane_system(const Lanes& s, int l, double* gr,
                                                       double* Hr) {
  PFP_UNROLL
  for (int k = 0; k < 3; ++k) gr[k] = s.gr[k][l];
  PFP_UNROLL
  for (int k = 0; k < 9; ++k) Hr[k] = s.Hr[k][l];
}

// The trust-region steps of every lane (pnp_init.h's trust_region_step, in parts): the Newton
// steps, and Steihaug's only when a pending lane cannot take its Newton step (near the minima,
// where most iterations are, none): the selection is the same either way.
template <int kStartLanes>
__attribute__((always_inline)) inline void lanes_region_steps(DescentLanes<kStartLanes>& s) {
  double cg = 0.0;
  for (int l = 0; l < kStartLanes; ++l) {
    double gr[3], Hr[9], dn[3];
    lane_system(s, l, gr, Hr);
    const double newton = pfp::region_newton_step(gr, Hr, s.radius[l], dn);
    PFP_UNROLL
    for (int k = 0; k < 3; ++k) s.dn[k][l] = dn[k];
    s.newton[l] = newton;
    cg += s.pending[l] * (1.0 - newton);
  }
  if (!(cg > 0.0)) return;  // dc is read only where newton is 0, in lanes not pending
  for (int l = 0; l < kStartLanes; ++l) {
    double gr[3], Hr[9], dc[3];
    lane_system(s, l, gr, Hr);
    pfp::steihaug_step(gr, Hr, s.radius[l], dc);
    PFP_UNROLL
    for (int k = 0; k < 3; ++k) s.dc[k][l] = dc[k];
  }
}

// One trial step of every pending lane: pnp_init.h's sphere_newton_iteration, one attempt,
// as selections. Returns the number of lanes still pending.
template <int kStartLanes>
__attribute__((always_inline)) inline int lanes_attempt(const pfp::QuarticForm<double>& F,
                                                        DescentLanes<kStartLanes>& s) {
  lanes_region_steps(s);
  double still = 0.0;
  for (int l = 0; l < kStartLanes; ++l) {
    double q[4], gr[3], Hr[9];
    pfp::QuarticEval<double> e;
    lane_load(s, l, q, e);
    lane_system(s, l, gr, Hr);
    const double radius = s.radius[l], pend = s.pending[l];
    double d[3], step_n[3], step_c[3];
    PFP_UNROLL
    for (int k = 0; k < 3; ++k) {
      step_n[k] = s.dn[k][l];
      step_c[k] = s.dc[k][l];
    }
    const double newton = s.newton[l];
    const double pred = pfp::region_select(gr, Hr, newton, step_n, step_c, d);
    const double dn = std::sqrt(pfp::dot3(d, d));
    // A step below rounding or no predicted decrease: the descent is over.
    const double stuck = (dn >= 5e-10 ? 0.0 : 1.0) + (pred > 0.0 ? 0.0 : 1.0) > 0.0 ? 1.0 : 0.0;
    double qn[4];
    pfp::sphere_step(q, d, qn);
    pfp::QuarticEval<double> en;
    pfp::quartic_eval(F, qn, en);
    const double gain = e.f - en.f;
    const double accept = pend * (1.0 - stuck) * (gain >= 0.0 ? 1.0 : 0.0);
    const double rho = gain / pred;
    const double grow = (rho > 0.75 ? 1.0 : 0.0) * (dn > 0.99 * radius ? 1.0 : 0.0);
    const double r_acc = rho < 0.25 ? 0.25 * dn : grow > 0.0 ? pfp::tmin(2.0 * radius, pfp::kMaxRadius)
                                                             : radius;
    // Rejected (pending, not stuck, no gain): a smaller region, and another attempt.
    const double reject = pend * (1.0 - stuck) * (1.0 - accept);
    s.radius[l] = accept > 0.0 ? r_acc : reject > 0.0 ? 0.25 * dn : radius;
    lane_store(s, l, accept, qn, en);
    // After an accepted step the descent goes on unless the gain or a Newton step was
    // below rounding (sphere_newton_iteration's return).
    const double more = (gain > 1e-12 * en.f ? 1.0 : 0.0) *
                        (newton > 0.0 && dn < pfp::kNewtonStop ? 0.0 : 1.0);
    s.live[l] = accept > 0.0 ? more : pend * stuck > 0.0 ? 0.0 : s.live[l];
    s.pending[l] = reject;
    still += reject;
  }
  return int(still);
}

// The Newton system of every live lane at its point; they all become pending.
template <int kStartLanes>
__attribute__((always_inline)) inline void lanes_system(DescentLanes<kStartLanes>& s) {
  for (int l = 0; l < kStartLanes; ++l) {
    double q[4], gr[3], Hr[9];
    pfp::QuarticEval<double> e;
    lane_load(s, l, q, e);
    pfp::sphere_newton_system(e, q, gr, Hr);
    PFP_UNROLL
    for (int k = 0; k < 3; ++k) s.gr[k][l] = gr[k];
    PFP_UNROLL
    for (int k = 0; k < 9; ++k) s.Hr[k][l] = Hr[k];
    s.pending[l] = s.live[l];
  }
}

// Every start's descent, group by group (pnp_init.h's descend_starts_serial, whose end points
// it gives bit for bit), each group in batches of kStartLanes side by side.
template <int kStartLanes>
__attribute__((always_inline)) inline void descend_start_lanes(const pfp::QuarticForm<double>& F,
                                                               pfp::StartEnds<double>& out) {
  static_assert(pfp::kStartGroup % kStartLanes == 0, "a batch never straddles two groups");
  double known[pfp::kNumStarts][9];
  int n_known = 0;
  for (int g = 0; g * pfp::kStartGroup < pfp::kNumStarts; ++g) {
    for (int k0 = g * pfp::kStartGroup; k0 < (g + 1) * pfp::kStartGroup; k0 += kStartLanes) {
      DescentLanes<kStartLanes> s;
      for (int l = 0; l < kStartLanes; ++l) {
        double R[9], q[4];
        pfp::cube_rotation(k0 + l, R);
        pfp::quat_from_rotation(R, q);
        pfp::QuarticEval<double> e;
        pfp::quartic_eval(F, q, e);
        lane_store(s, l, 1.0, q, e);
        s.radius[l] = pfp::kStartRadius;
        s.live[l] = 1.0;
        for (int k = 0; k < 3; ++k) s.dc[k][l] = 0.0;  // finite where no Steihaug step is taken
      }
      bool dup[kStartLanes] = {};
      for (int it = 0; it < pfp::kStartIterations; ++it) {
        int live = 0;
        for (int l = 0; l < kStartLanes; ++l) live += s.live[l] > 0.0 ? 1 : 0;
        if (live == 0) break;
        lanes_system(s);
        for (int attempt = 0; attempt < 8 && lanes_attempt(F, s) > 0; ++attempt) {
        }
        for (int l = 0; l < kStartLanes; ++l) {
          s.live[l] = s.pending[l] > 0.0 ? 0.0 : s.live[l];  // 8 attempts rejected: over
          if (!(s.live[l] > 0.0) || n_known == 0) continue;
          double R[9], m[pfp::kNumMonomials];
          for (int k = 0; k < pfp::kNumMonomials; ++k) m[k] = s.m[k][l];
          pfp::rotation_from_monomials(m, R);
          dup[l] = pfp::in_known_basin(R, known[0], n_known, 9);
          if (dup[l]) s.live[l] = 0.0;
        }
      }
      for (int l = 0; l < kStartLanes; ++l) {
        double m[pfp::kNumMonomials];
        for (int i = 0; i < pfp::kNumMonomials; ++i) m[i] = s.m[i][l];
        pfp::rotation_from_monomials(m, out.R[k0 + l]);
        out.f[k0 + l] = s.f[l];
        out.dup[k0 + l] = dup[l];
      }
    }
    pfp::add_known_ends(out, g, known, n_known);
  }
}

}  // namespace pyfacepnp
