// Every operator schema of the pyfacepnp library, declared once. Device kernels are
// registered per device key in csrc/<op>/*_cpu.cpp and csrc/<op>/*_cuda.cpp.
#include <torch/library.h>

TORCH_LIBRARY(pyfacepnp, m) {
  // Batched PnP. Inputs are already broadcast and flattened by the Python wrapper:
  // points3d (B,N,3), points2d (B,N,2), K (B,3,3), optional weights (B,N,2) (None: unit
  // weights, read as such without a tensor), optional init (B,3,3)+(B,3).
  // loss_scales (B) float64, optional, replaces huber_delta per problem (the robust kernel's
  // scale; a problem whose scale is outside [1e-150, 1e150] is INVALID_INPUT). distortion
  // (B, D) in the points' dtype, optional: OpenCV's lens coefficients (camera_model 0, D in
  // {4, 5, 8, 12}) or the fisheye's k1..k4 (camera_model 1); see csrc/common/distortion.h.
  m.def(
      "solve_pnp(Tensor points3d, Tensor points2d, Tensor K, Tensor? weights, Tensor? init_R, "
      "Tensor? init_t, str loss, float huber_delta, int max_iterations, float tolerance, "
      "Tensor? loss_scales=None, Tensor? distortion=None, int camera_model=0) -> "
      "(Tensor R, Tensor t, Tensor cost, Tensor iterations, Tensor status, Tensor covariance, "
      "Tensor state)");
  // Implicit-function backward of solve_pnp at its solution. `state` (B,48) float64 is the
  // forward's solution R, t and inverse exact Hessian in double, whatever the input dtype, so
  // float32 inputs get the gradient of the float64 solution. An absent upstream gradient is
  // zero. grad_weights is (B, N, 2), the gradient at unit weights when weights is None;
  // grad_distortion is (B, D), or (B, 0) without distortion.
  m.def(
      "solve_pnp_backward(Tensor? grad_R, Tensor? grad_t, Tensor? grad_cost, Tensor points3d, "
      "Tensor points2d, Tensor K, Tensor? weights, Tensor state, Tensor status, "
      "str loss, float huber_delta, Tensor? loss_scales=None, Tensor? distortion=None, "
      "int camera_model=0) -> (Tensor grad_points3d, Tensor grad_points2d, Tensor grad_K, "
      "Tensor grad_weights, Tensor grad_distortion)");
  // Batched LO-RANSAC PnP (csrc/common/pnp_ransac.h): the solve_pnp outputs of the finish on
  // the final inlier set, then inliers (B,N) bool, num_inliers (B) and trials (B) int32. Its
  // backward is solve_pnp_backward with the weights masked by the inliers.
  m.def(
      "solve_pnp_ransac(Tensor points3d, Tensor points2d, Tensor K, Tensor? weights, str loss, "
      "float loss_scale, float threshold, float confidence, int max_trials, int seed, "
      "int max_iterations, float tolerance, Tensor? loss_scales=None, Tensor? distortion=None, "
      "int camera_model=0) -> (Tensor R, Tensor t, "
      "Tensor cost, "
      "Tensor iterations, Tensor status, Tensor covariance, Tensor state, Tensor inliers, "
      "Tensor num_inliers, Tensor trials)");
  // Every minimum the global start finds, each refined (csrc/common/pnp_solver.h,
  // solve_minima): the solve_pnp outputs per solution, (B, k, ...) sorted by cost, then the
  // number found (B) int32. Each solution's backward is solve_pnp_backward on its state.
  m.def(
      "solve_pnp_minima(Tensor points3d, Tensor points2d, Tensor K, Tensor? weights, str loss, "
      "float loss_scale, int num_solutions, int max_iterations, float tolerance, "
      "Tensor? loss_scales=None, Tensor? distortion=None, int camera_model=0) -> (Tensor R, "
      "Tensor t, Tensor cost, Tensor iterations, Tensor status, Tensor covariance, Tensor state, "
      "Tensor num_solutions)");
  // The exact Hessian (B,6,6) float64 of solve_pnp's objective in its local pose coordinates
  // at the given poses R (B,3,3), t (B,3), with valid (B) bool: false where it does not exist
  // (invalid inputs, camera or scale; an active point on or behind the camera plane), and H
  // zero there (csrc/common/pnp_hessian.h). Its backward gives the gradients of every input
  // (third derivatives of the objective), in the points' dtype; grad_weights is (B, N, 2)
  // (at unit weights when weights is None), grad_distortion (B, D) or (B, 0).
  m.def(
      "pnp_hessian(Tensor R, Tensor t, Tensor points3d, Tensor points2d, Tensor K, "
      "Tensor? weights, str loss, float loss_scale, Tensor? loss_scales=None, "
      "Tensor? distortion=None, int camera_model=0) -> (Tensor hessian, Tensor valid)");
  m.def(
      "pnp_hessian_backward(Tensor grad_hessian, Tensor R, Tensor t, Tensor points3d, "
      "Tensor points2d, Tensor K, Tensor? weights, Tensor valid, str loss, float loss_scale, "
      "Tensor? loss_scales=None, Tensor? distortion=None, int camera_model=0) -> "
      "(Tensor grad_R, Tensor grad_t, Tensor grad_points3d, Tensor grad_points2d, "
      "Tensor grad_K, Tensor grad_weights, Tensor grad_distortion)");
  // Affine warp of 2D points: points (B,N,2), affine (B,2,3) -> (B,N,2).
  m.def("warp_points(Tensor points, Tensor affine) -> Tensor");
  m.def(
      "warp_points_backward(Tensor grad_out, Tensor points, Tensor affine) -> "
      "(Tensor grad_points, Tensor grad_affine)");
  // Z-buffered textured mesh rasteriser (no autograd): camera-frame vertices (V,3), faces
  // (F,3) int64, texcoords (V,2), texture (Ht,Wt,3), K (3,3), background (H,W,3), lights
  // (L,6), material (5) -> image (H,W,3), depth (H,W), triangle id (H,W) int64.
  m.def(
      "render_mesh(Tensor vertices, Tensor faces, Tensor texcoords, Tensor texture, Tensor K, "
      "Tensor background, Tensor lights, Tensor material) -> "
      "(Tensor image, Tensor depth, Tensor triangle)");
}
