#include "stats_op_args.h"

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

namespace {

// A small state/output tensor: defined, contiguous, of `dtype`, on `device`, with `numel` elements
// (or, when numel < 0, any size).
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

void check_norm_tensor(const at::Tensor& t, const char* arg, int64_t numel) {
  TORCH_CHECK(t.defined(), "fastclip: ", arg, " is undefined");
  TORCH_CHECK(t.layout() == at::kStrided, "fastclip: ", arg, " must be a dense (strided) tensor");
  TORCH_CHECK(is_supported_dtype(t.scalar_type()), "fastclip: ", arg,
              " must be float32, float16, bfloat16 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "fastclip: ", arg, " must be contiguous");
  TORCH_CHECK(numel < 0 || t.numel() == numel, "fastclip: ", arg, " must hold ", numel, " elements, got shape ",
              t.sizes());
}

void check_unit_interval(double value, const char* arg) {
  TORCH_CHECK(value > 0.0 && value < 1.0, "fastclip: ", arg, " must lie in (0, 1), got ", value);
}

// Checks the per-entry inputs of the per-tensor ops: norms (float32 or float64, 1-d), rows (int64,
// one per norm, each < num_rows), coef/threshold (float32, one per norm), result.
void check_per_entry_args(const PerEntryTensors& t) {
  const auto& [total_norm, norms, rows, result, coef, threshold, num_rows] = t;
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

}  // namespace

ZClipConfig zclip_config(const ZClipTensors& t, double alpha, double z_thresh, std::optional<double> max_grad_norm,
                         double eps, int64_t warmup_steps, const std::string& mode, const std::string& clip_option,
                         double clip_factor, bool skip_update_on_spike, const std::string& on_nonfinite,
                         bool reference) {
  const at::Tensor& norm = t.norm;
  check_norm_tensor(norm, "norm", 1);
  TORCH_CHECK(warmup_steps >= 0, "fastclip: warmup_steps must be >= 0, got ", warmup_steps);
  const int64_t warmup = warmup_steps < 1 ? 1 : warmup_steps;
  check_state_tensor(t.state, "state", at::kDouble, norm.device(), zclip_state::header_size + warmup);
  check_state_tensor(t.result, "result", at::kFloat, norm.device(), result_slot::count);
  check_unit_interval(alpha, "alpha");
  TORCH_CHECK(std::isfinite(z_thresh) && z_thresh > 0.0, "fastclip: z_thresh must be finite and > 0, got ", z_thresh);
  TORCH_CHECK(!max_grad_norm || (*max_grad_norm > 0.0 && !std::isnan(*max_grad_norm)),
              "fastclip: max_grad_norm must be > 0 or None, got ", max_grad_norm.value_or(0.0));
  check_finite_nonnegative(eps, "eps");
  check_finite_positive(clip_factor, "clip_factor");
  TORCH_CHECK(mode == "zscore" || mode == "percentile", "fastclip: mode must be 'zscore' or 'percentile', got '", mode,
              "'");
  TORCH_CHECK(clip_option == "adaptive_scaling" || clip_option == "mean",
              "fastclip: clip_option must be 'adaptive_scaling' or 'mean', got '", clip_option, "'");
  return ZClipConfig{.alpha = alpha,
                     .z_thresh = z_thresh,
                     .max_grad_norm = max_grad_norm.value_or(0.0),
                     .eps = eps,
                     .clip_factor = clip_factor,
                     .warmup_steps = warmup,
                     .has_max_grad_norm = max_grad_norm.has_value(),
                     .percentile_mode = mode == "percentile",
                     .clip_to_mean = clip_option == "mean",
                     .skip_update_on_spike = skip_update_on_spike,
                     .reference = reference,
                     .policy = parse_nonfinite_policy(on_nonfinite)};
}

AutoClipConfig autoclip_config(const AutoClipTensors& t, double percentile, bool lag, const std::string& on_nonfinite,
                               bool reference) {
  const at::Tensor& counters = t.counters;
  TORCH_CHECK(counters.dim() == 2 && counters.size(1) == autoclip_counter::count,
              "fastclip: counters must have shape [histories, ", autoclip_counter::count, "], got ", counters.sizes());
  const int64_t histories = counters.size(0);
  check_per_entry_args(t.entries);
  const at::Device device = t.entries.total_norm.device();
  check_state_tensor(counters, "counters", at::kLong, device, -1);
  for (const auto& [history, name] : {std::pair<const at::Tensor&, const char*>{t.lower, "lower"},
                                      {t.upper, "upper"}, {t.window, "window"}}) {
    check_state_tensor(history, name, at::kFloat, device, -1);
    TORCH_CHECK(history.dim() == 2 && history.size(0) == histories, "fastclip: ", name, " must have shape [",
                histories, ", n], got ", history.sizes());
  }
  TORCH_CHECK(percentile >= 0.0 && percentile <= 100.0, "fastclip: percentile must lie in [0, 100], got ",
              percentile);
  return AutoClipConfig{.q = percentile / 100.0,
                        .whole_history = t.window.size(1) == 0,
                        .lag = lag,
                        .reference = reference,
                        .policy = parse_nonfinite_policy(on_nonfinite)};
}

AutoClipBuffers autoclip_buffers(const AutoClipTensors& t) {
  return AutoClipBuffers{t.lower.data_ptr<float>(),  t.lower.size(1),  t.upper.data_ptr<float>(),
                         t.upper.size(1),            t.window.data_ptr<float>(), t.window.size(1),
                         t.counters.data_ptr<int64_t>()};
}

EntryOutputs entry_outputs(const PerEntryTensors& t) {
  return EntryOutputs{t.rows.const_data_ptr<int64_t>(), t.num_rows, t.coef.data_ptr<float>(),
                      t.threshold.data_ptr<float>()};
}

AdaGCConfig adagc_config(const AdaGCTensors& t, double lambda_abs, double lambda_rel, double beta,
                         int64_t warmup_steps, double eps, const std::string& on_nonfinite, bool reference) {
  TORCH_CHECK(t.gamma.dim() == 2 && t.gamma.size(1) == adagc_gamma::count, "fastclip: gamma must have shape [tensors, ",
              adagc_gamma::count, "], got ", t.gamma.sizes());
  check_per_entry_args(t.entries);
  check_state_tensor(t.gamma, "gamma", at::kDouble, t.entries.total_norm.device(), -1);
  check_state_tensor(t.steps, "steps", at::kDouble, t.entries.total_norm.device(), 1);
  check_finite_positive(lambda_abs, "lambda_abs");
  check_finite_positive(lambda_rel, "lambda_rel");
  check_unit_interval(beta, "beta");
  TORCH_CHECK(warmup_steps >= 0, "fastclip: warmup_steps must be >= 0, got ", warmup_steps);
  check_finite_nonnegative(eps, "eps");
  return AdaGCConfig{.lambda_abs = lambda_abs,
                     .lambda_rel = lambda_rel,
                     .beta = beta,
                     .eps = eps,
                     .warmup_steps = warmup_steps,
                     .reference = reference,
                     .policy = parse_nonfinite_policy(on_nonfinite)};
}

}  // namespace fastclip
