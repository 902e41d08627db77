// The Autograd-key kernels of solve_pnp and of its backward (whose own backward is an error),
// in C++: a Python autograd.Function (pyfacepnp/_autograd.py holds the other ops' formulas)
// costs about as much as a small problem's solve. Both ops are called through the dispatcher,
// so tracing (torch.compile, opcheck) sees them as they are.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<Tensor>;

using SolvePnPSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
    const OptTensor&, c10::string_view, double, int64_t, double, const OptTensor&,
    const OptTensor&, int64_t);
using BackwardSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(
    const OptTensor&, const OptTensor&, const OptTensor&, const Tensor&, const Tensor&,
    const Tensor&, const OptTensor&, const Tensor&, const Tensor&, c10::string_view, double,
    const OptTensor&, const OptTensor&, int64_t);

const auto& solve_pnp_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pyfacepnp::solve_pnp", "")
                             .typed<SolvePnPSig>();
  return op;
}
const auto& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pyfacepnp::solve_pnp_backward", "")
                             .typed<BackwardSig>();
  return op;
}

OptTensor optional(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

bool requires_grad(const Tensor& t) { return t.requires_grad(); }
bool requires_grad(const OptTensor& t) { return t && t->requires_grad(); }
// Whether a call needs a graph node; without one the op is called directly (a Function would
// still allocate its node).
template <typename... Ts>
bool needs_grad(const Ts&... ts) {
  return at::GradMode::is_enabled() && (requires_grad(ts) || ...);
}

variable_list as_list(const std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>& o) {
  return {std::get<0>(o), std::get<1>(o), std::get<2>(o), std::get<3>(o),
          std::get<4>(o), std::get<5>(o), std::get<6>(o)};
}

struct SolvePnP : public torch::autograd::Function<SolvePnP> {
  static variable_list forward(AutogradContext* ctx, const Tensor& X, const Tensor& x,
                               const Tensor& K, const OptTensor& w, const OptTensor& init_R,
                               const OptTensor& init_t, c10::string_view loss, double scale,
                               int64_t max_iterations, double tolerance, const OptTensor& scales,
                               const OptTensor& D, int64_t model) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto out = as_list(solve_pnp_op().call(X, x, K, w, init_R, init_t, loss, scale,
                                           max_iterations, tolerance, scales, D, model));
    const Tensor none;
    ctx->save_for_backward({X, x, K, w.value_or(none), out[6], out[4], scales.value_or(none),
                            D.value_or(none)});
    ctx->saved_data["loss"] = std::string(loss);
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["model"] = model;
    // The covariance is a by-product (third derivatives would be needed to differentiate it).
    ctx->mark_non_differentiable({out[3], out[4], out[5], out[6]});
    // Absent upstream gradients stay undefined: the backward op reads them as zeros.
    ctx->set_materialize_grads(false);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [gX, gx, gK, gw, gD] = backward_op().call(
        optional(grads[0]), optional(grads[1]), optional(grads[2]), s[0], s[1], s[2],
        optional(s[3]), s[4], s[5], ctx->saved_data["loss"].toStringRef(),
        ctx->saved_data["scale"].toDouble(), optional(s[6]), optional(s[7]),
        ctx->saved_data["model"].toInt());
    // One entry per forward argument; none for absent weights and distortion.
    const Tensor none;
    return {gX,   gx,   gK,   s[3].defined() ? gw : none, none, none, none, none, none, none,
            none, s[7].defined() ? gD : none, none};
  }
};

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> solve_pnp_autograd(
    const Tensor& X, const Tensor& x, const Tensor& K, const OptTensor& w,
    const OptTensor& init_R, const OptTensor& init_t, c10::string_view loss, double scale,
    int64_t max_iterations, double tolerance, const OptTensor& scales, const OptTensor& D,
    int64_t model) {
  if (!needs_grad(X, x, K, w, D)) {
    at::AutoDispatchBelowADInplaceOrView below;
    return solve_pnp_op().call(X, x, K, w, init_R, init_t, loss, scale, max_iterations,
                               tolerance, scales, D, model);
  }
  auto o = SolvePnP::apply(X, x, K, w, init_R, init_t, loss, scale, max_iterations, tolerance,
                           scales, D, model);
  return {o[0], o[1], o[2], o[3], o[4], o[5], o[6]};
}

// The backward is not differentiable: under create_graph its outputs get a node that
// raises when reached.
struct NoDoubleBackward : public torch::autograd::Function<NoDoubleBackward> {
  template <typename... Args>
  static variable_list forward(AutogradContext*, Args&&... args) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [gX, gx, gK, gw, gD] = backward_op().call(std::forward<Args>(args)...);
    return {gX, gx, gK, gw, gD};
  }
  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false, "pyfacepnp: differentiating solve_pnp_backward (double backward) is not "
                       "supported");
  }
};

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> solve_pnp_backward_autograd(
    const OptTensor& gR, const OptTensor& gt, const OptTensor& gc, const Tensor& X,
    const Tensor& x, const Tensor& K, const OptTensor& w, const Tensor& state,
    const Tensor& status, c10::string_view loss, double scale, const OptTensor& scales,
    const OptTensor& D, int64_t model) {
  if (!needs_grad(gR, gt, gc, X, x, K, w, D)) {
    at::AutoDispatchBelowADInplaceOrView below;
    return backward_op().call(gR, gt, gc, X, x, K, w, state, status, loss, scale, scales, D,
                              model);
  }
  auto o = NoDoubleBackward::apply(gR, gt, gc, X, x, K, w, state, status, loss, scale, scales,
                                   D, model);
  return {o[0], o[1], o[2], o[3], o[4]};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyfacepnp, Autograd, m) {
  m.impl("solve_pnp", &solve_pnp_autograd);
  m.impl("solve_pnp_backward", &solve_pnp_backward_autograd);
}
