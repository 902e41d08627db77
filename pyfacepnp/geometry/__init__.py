"""Geometry in one place: every other module imports it rather than writing a formula again.

- :mod:`~pyfacepnp.geometry.transforms`: rigid transforms ``x_cam = R X + t``.
- :mod:`~pyfacepnp.geometry.camera`: the pixel convention, WCPA and crop intrinsics, projection
  (with lens distortion).
- :mod:`~pyfacepnp.geometry.distortion`: OpenCV's pinhole and fisheye lens distortion, its
  inverse and the checks of its coefficients.
- :mod:`~pyfacepnp.geometry.rotation`: the SO(3) exponential and logarithm (Rodrigues vectors,
  OpenCV's ``rvec``), quaternions, rotation error (degrees), nearest rotation, Euler angles.
- :mod:`~pyfacepnp.geometry.conventions`: WCPA / OpenGL ``R_t`` <-> OpenCV ``(R, t)``.
- :mod:`~pyfacepnp.geometry.crop`: crop affines from landmarks, their jitter and composition,
  resampling an image by an affine.
- :mod:`~pyfacepnp.geometry.mesh`: mesh topology (edges, boundary loop, vertex counts).
"""

from pyfacepnp.geometry.camera import (
    crop_intrinsics, normalized_to_pixels, pixels_to_normalized, project_points, project_to_crop,
    resize_affine, wcpa_intrinsics,
)
from pyfacepnp.geometry.conventions import opencv_to_wcpa, wcpa_rotation_from_euler, wcpa_to_opencv
from pyfacepnp.geometry.crop import compose_affines, crop_affine_from_landmarks, jitter_affine, resize_image, warp_image
from pyfacepnp.geometry.distortion import (
    CAMERA_MODELS, DISTORTION_LENGTHS, check_distortion, distort, distort_with_jacobian, undistort,
)
from pyfacepnp.geometry.mesh import NUM_LANDMARKS, NUM_VERTICES, boundary_loop, edges_from_triangles
from pyfacepnp.geometry.rotation import (
    matrix_to_rvec, nearest_rotation, quaternion_to_matrix, rotation_angle, rotation_error_deg, rotation_from_euler,
    rvec_to_matrix,
)
from pyfacepnp.geometry.transforms import transform_points

__all__ = [
    "CAMERA_MODELS", "DISTORTION_LENGTHS", "NUM_LANDMARKS", "NUM_VERTICES", "boundary_loop", "check_distortion",
    "compose_affines", "crop_affine_from_landmarks", "crop_intrinsics", "distort", "distort_with_jacobian",
    "edges_from_triangles", "jitter_affine", "matrix_to_rvec", "nearest_rotation", "normalized_to_pixels",
    "opencv_to_wcpa", "pixels_to_normalized", "project_points", "project_to_crop", "quaternion_to_matrix",
    "resize_affine",
    "resize_image", "rotation_angle", "rotation_error_deg", "rotation_from_euler", "rvec_to_matrix",
    "transform_points", "undistort", "warp_image", "wcpa_intrinsics", "wcpa_rotation_from_euler", "wcpa_to_opencv",
]
