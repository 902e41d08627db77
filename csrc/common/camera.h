// The camera policy of the solver: everything the per-point math and the global start need
// to know about the camera, behind one struct shared by the CPU and CUDA kernels.
//
// A camera model provides
//   bool valid()                                  finite, well-formed parameters
//   bool project(Xc, u, du, iz)                   pixel u (2) of a camera-frame point, its
//                                                 Jacobian du_a/dXc (2x3) and 1/z; false when
//                                                 the point is not in front of the camera
//   void param_jacobian(Xc, iz, a, out)           d u_a / d (the parameters of row a)
//   bool prepare_rays(RayMap&)                    per problem, what ray() needs
//   void ray(RayMap, x, m)                        back-projection of pixel x to a ray m (z = 1)
// Today the only model is the pinhole, `u_a = (k_a . Xc) / z` with k_a rows 0 and 1 of K. The
// second derivatives of the projection, used by the exact Hessian and the backward, are the
// pinhole's closed forms in common/pnp_point.h; a lens-distortion model implements this
// interface and its own curvature terms there.
#pragma once
#include "common/linalg.h"

namespace pfp {

template <typename T>
struct RayMap {
  T Kinv[9];
};

template <typename T>
struct Camera {
  const T* K;  // row-major 3x3, last row [0, 0, 1]

  // Finite, last row exactly [0, 0, 1] and a non-singular 2x2 focal block.
  PFP_HD bool valid() const {
    for (int i = 0; i < 9; ++i)
      if (!is_finite(K[i])) return false;
    if (K[6] != T(0) || K[7] != T(0) || K[8] != T(1)) return false;
    const T d = K[0] * K[4] - K[1] * K[3];
    const T sc = tmax(tabs(K[0]), tmax(tabs(K[1]), tmax(tabs(K[3]), tabs(K[4]))));
    return tabs(d) > T(1e-12) * sc * sc;
  }

  PFP_HD bool project(const T* Xc, T* u, T (*du)[3], T& iz) const {
    const T z = Xc[2];
    if (!(z > T(0))) return false;
    iz = T(1) / z;
    for (int a = 0; a < 2; ++a) {
      const T* k = K + 3 * a;
      u[a] = dot3(k, Xc) * iz;
      du[a][0] = k[0] * iz;
      du[a][1] = k[1] * iz;
      du[a][2] = (k[2] - u[a]) * iz;
    }
    return true;
  }

  // d u_a / d k_a = Xc / z (the same for both rows).
  PFP_HD void param_jacobian(const T* Xc, T iz, int /*a*/, T* out) const {
    for (int k = 0; k < 3; ++k) out[k] = Xc[k] * iz;
  }

  PFP_HD bool prepare_rays(RayMap<T>& map) const { return inv3(K, map.Kinv); }

  PFP_HD static void ray(const RayMap<T>& map, const T* x, T* m) {
    const T xh[3] = {x[0], x[1], T(1)};
    matvec3(map.Kinv, xh, m);
  }
};

}  // namespace pfp
