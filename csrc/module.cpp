// The _C extension module: importing it loads the library, which registers the ops
// (TORCH_LIBRARY static initialisers), and exposes build facts for `pyfacepnp info`.
#include <pybind11/pybind11.h>

#ifndef PYFACEPNP_WITH_CUDA
#define PYFACEPNP_WITH_CUDA 0
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyfacepnp compiled operators (registered under torch.ops.pyfacepnp)";
  m.attr("with_cuda") = bool(PYFACEPNP_WITH_CUDA);
  m.attr("torch_version") = PYFACEPNP_TORCH_VERSION;
#ifdef __VERSION__
  m.attr("compiler") = __VERSION__;
#endif
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
}
