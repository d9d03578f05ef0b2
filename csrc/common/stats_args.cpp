#include "stats_args.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "list_plan.h"

namespace fastclip {

NonfinitePolicy parse_nonfinite_policy(const std::string& value) {
  if (value == "skip") return NonfinitePolicy::kSkip;
  if (value == "zero") return NonfinitePolicy::kZero;
  if (value == "propagate") return NonfinitePolicy::kPropagate;
  TORCH_CHECK(false, "fastclip: on_nonfinite must be 'skip', 'zero' or 'propagate' in the op ('error' is handled by "
              "the Python clipper), got '", value, "'");
}

void check_state_tensor(const at::Tensor& t, const char* arg, at::ScalarType dtype, const at::Device& device,
                        int64_t numel) {
  TORCH_CHECK(t.defined(), "fastclip: ", arg, " is undefined");
  TORCH_CHECK(t.layout() == at::kStrided, "fastclip: ", arg, " must be a dense (strided) tensor");
  TORCH_CHECK(t.scalar_type() == dtype, "fastclip: ", arg, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == device, "fastclip: ", arg, " is on ", t.device(), " but the norms are on ", device);
  TORCH_CHECK(t.is_contiguous(), "fastclip: ", arg, " must be contiguous");
  TORCH_CHECK(numel < 0 || t.numel() == numel, "fastclip: ", arg, " must hold ", numel, " elements, got shape ",
              t.sizes());
}

namespace {

void check_norm_tensor(const at::Tensor& t, const char* arg, int64_t numel) {
  TORCH_CHECK(t.defined(), "fastclip: ", arg, " is undefined");
  TORCH_CHECK(t.layout() == at::kStrided, "fastclip: ", arg, " must be a dense (strided) tensor");
  TORCH_CHECK(is_supported_dtype(t.scalar_type()), "fastclip: ", arg,
              " must be float32, float16, bfloat16 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "fastclip: ", arg, " must be contiguous");
  TORCH_CHECK(numel < 0 || t.numel() == numel, "fastclip: ", arg, " must hold ", numel, " elements, got shape ",
              t.sizes());
}

void check_finite_positive(double value, const char* arg) {
  TORCH_CHECK(std::isfinite(value) && value > 0.0, "fastclip: ", arg, " must be finite and > 0, got ", value);
}

void check_unit_interval(double value, const char* arg) {
  TORCH_CHECK(value > 0.0 && value < 1.0, "fastclip: ", arg, " must lie in (0, 1), got ", value);
}

}  // namespace

ZClipConfig zclip_config(const at::Tensor& norm, const at::Tensor& state, const at::Tensor& result, double alpha,
                         double z_thresh, std::optional<double> max_grad_norm, double eps, int64_t warmup_steps,
                         const std::string& mode, const std::string& clip_option, double clip_factor,
                         bool skip_update_on_spike, const std::string& on_nonfinite, bool reference) {
  check_norm_tensor(norm, "norm", 1);
  TORCH_CHECK(warmup_steps >= 0, "fastclip: warmup_steps must be >= 0, got ", warmup_steps);
  const int64_t warmup = warmup_steps < 1 ? 1 : warmup_steps;
  check_state_tensor(state, "state", at::kDouble, norm.device(), zclip_state::header_size + warmup);
  check_state_tensor(result, "result", at::kFloat, norm.device(), result_slot::count);
  check_unit_interval(alpha, "alpha");
  TORCH_CHECK(std::isfinite(z_thresh) && z_thresh > 0.0, "fastclip: z_thresh must be finite and > 0, got ", z_thresh);
  TORCH_CHECK(!max_grad_norm || (*max_grad_norm > 0.0 && !std::isnan(*max_grad_norm)),
              "fastclip: max_grad_norm must be > 0 or None, got ", max_grad_norm.value_or(0.0));
  TORCH_CHECK(std::isfinite(eps) && eps >= 0.0, "fastclip: eps must be finite and >= 0, got ", eps);
  check_finite_positive(clip_factor, "clip_factor");
  TORCH_CHECK(mode == "zscore" || mode == "percentile", "fastclip: mode must be 'zscore' or 'percentile', got '", mode,
              "'");
  TORCH_CHECK(clip_option == "adaptive_scaling" || clip_option == "mean",
              "fastclip: clip_option must be 'adaptive_scaling' or 'mean', got '", clip_option, "'");
  ZClipConfig c{};
  c.alpha = alpha;
  c.z_thresh = z_thresh;
  c.max_grad_norm = max_grad_norm.value_or(0.0);
  c.has_max_grad_norm = max_grad_norm.has_value();
  c.eps = eps;
  c.clip_factor = clip_factor;
  c.warmup_steps = warmup;
  c.percentile_mode = mode == "percentile";
  c.clip_to_mean = clip_option == "mean";
  c.skip_update_on_spike = skip_update_on_spike;
  c.reference = reference;
  c.policy = parse_nonfinite_policy(on_nonfinite);
  return c;
}

void check_per_entry_args(const at::Tensor& total_norm, const at::Tensor& norms, const at::Tensor& rows,
                          const at::Tensor& result, const at::Tensor& coef, const at::Tensor& threshold,
                          int64_t num_rows) {
  check_norm_tensor(total_norm, "total_norm", 1);
  check_norm_tensor(norms, "norms", -1);
  TORCH_CHECK(norms.dim() == 1, "fastclip: norms must be 1-d, got shape ", norms.sizes());
  const at::Device device = total_norm.device();
  TORCH_CHECK(norms.device() == device, "fastclip: norms is on ", norms.device(), " but total_norm is on ", device);
  check_state_tensor(rows, "rows", at::kLong, device, norms.numel());
  check_state_tensor(result, "result", at::kFloat, device, result_slot::count);
  check_state_tensor(coef, "coef", at::kFloat, device, norms.numel());
  check_state_tensor(threshold, "threshold", at::kFloat, device, norms.numel());
  if (rows.is_cpu() && rows.numel() > 0) {  // on a GPU this would sync; the kernels ignore rows out of range
    TORCH_CHECK(rows.min().item<int64_t>() >= 0 && rows.max().item<int64_t>() < num_rows,
                "fastclip: rows must lie in [0, ", num_rows, ")");
  }
}

AutoClipConfig autoclip_config(const at::Tensor& total_norm, const at::Tensor& norms, const at::Tensor& rows,
                               const at::Tensor& lower, const at::Tensor& upper, const at::Tensor& window,
                               const at::Tensor& counters, const at::Tensor& result, const at::Tensor& coef,
                               const at::Tensor& threshold, double percentile, bool lag,
                               const std::string& on_nonfinite, bool reference) {
  TORCH_CHECK(counters.dim() == 2 && counters.size(1) == autoclip_counter::count,
              "fastclip: counters must have shape [histories, ", autoclip_counter::count, "], got ", counters.sizes());
  const int64_t histories = counters.size(0);
  check_per_entry_args(total_norm, norms, rows, result, coef, threshold, histories);
  const at::Device device = total_norm.device();
  check_state_tensor(counters, "counters", at::kLong, device, -1);
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{lower, "lower"}, {upper, "upper"},
                                {window, "window"}}) {
    check_state_tensor(t, name, at::kFloat, device, -1);
    TORCH_CHECK(t.dim() == 2 && t.size(0) == histories, "fastclip: ", name, " must have shape [", histories,
                ", n], got ", t.sizes());
  }
  TORCH_CHECK(percentile >= 0.0 && percentile <= 100.0, "fastclip: percentile must lie in [0, 100], got ",
              percentile);
  AutoClipConfig c{};
  c.q = percentile / 100.0;
  c.whole_history = window.size(1) == 0;
  c.lag = lag;
  c.reference = reference;
  c.policy = parse_nonfinite_policy(on_nonfinite);
  return c;
}

AdaGCConfig adagc_config(const at::Tensor& total_norm, const at::Tensor& norms, const at::Tensor& rows,
                         const at::Tensor& gamma, const at::Tensor& steps, const at::Tensor& result,
                         const at::Tensor& coef, const at::Tensor& threshold, double lambda_abs, double lambda_rel,
                         double beta, int64_t warmup_steps, double eps, const std::string& on_nonfinite,
                         bool reference) {
  TORCH_CHECK(gamma.dim() == 2 && gamma.size(1) == 2, "fastclip: gamma must have shape [tensors, 2], got ",
              gamma.sizes());
  check_per_entry_args(total_norm, norms, rows, result, coef, threshold, gamma.size(0));
  check_state_tensor(gamma, "gamma", at::kDouble, total_norm.device(), -1);
  check_state_tensor(steps, "steps", at::kDouble, total_norm.device(), 1);
  check_finite_positive(lambda_abs, "lambda_abs");
  check_finite_positive(lambda_rel, "lambda_rel");
  check_unit_interval(beta, "beta");
  TORCH_CHECK(warmup_steps >= 0, "fastclip: warmup_steps must be >= 0, got ", warmup_steps);
  TORCH_CHECK(std::isfinite(eps) && eps >= 0.0, "fastclip: eps must be finite and >= 0, got ", eps);
  AdaGCConfig c{};
  c.lambda_abs = lambda_abs;
  c.lambda_rel = lambda_rel;
  c.beta = beta;
  c.eps = eps;
  c.warmup_steps = warmup_steps;
  c.reference = reference;
  c.policy = parse_nonfinite_policy(on_nonfinite);
  return c;
}

void check_agc_args(at::TensorList grads, at::TensorList params, double clip_factor, double eps) {
  check_tensor_list(grads, "grads", /*mutated=*/true);
  check_tensor_list(params, "params", /*mutated=*/false);
  TORCH_CHECK(grads.size() == params.size(), "fastclip: grads and params must have the same length, got ",
              grads.size(), " and ", params.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    TORCH_CHECK(grads[i].sizes() == params[i].sizes(), "fastclip: grads[", i, "] has shape ", grads[i].sizes(),
                " but params[", i, "] has shape ", params[i].sizes());
    TORCH_CHECK(grads[i].device() == params[i].device(), "fastclip: grads[", i, "] is on ", grads[i].device(),
                " but params[", i, "] is on ", params[i].device());
  }
  check_finite_positive(clip_factor, "clip_factor");
  TORCH_CHECK(std::isfinite(eps) && eps >= 0.0, "fastclip: eps must be finite and >= 0, got ", eps);
}

}  // namespace fastclip
