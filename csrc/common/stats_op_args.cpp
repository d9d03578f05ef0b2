#include "stats_op_args.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "list_plan.h"
#include "stats_checks.h"

namespace fastclip {

namespace {

// Checks the per-entry inputs of the per-tensor ops: norms (a float dtype, 1-d) and total_norm,
// both given or both absent; rows (int64, one per entry, each < num_rows, distinct), coef/threshold
// (float32, one per entry), result. Returns the device the op runs on.
at::Device check_per_entry_args(const PerEntryTensors& t) {
  const at::Device device = stats_device(t.grads, t.total_norm, "total_norm");
  TORCH_CHECK(t.total_norm.has_value() == t.norms.has_value(),
              "fastclip: total_norm and norms must both be given or both be None");
  if (t.norms_given()) {
    const at::Tensor& norms = *t.norms;
    check_norm_tensor(*t.total_norm, "total_norm", 1);
    check_norm_tensor(norms, "norms", -1);
    TORCH_CHECK(norms.dim() == 1, "fastclip: norms must be 1-d, got shape ", norms.sizes());
    TORCH_CHECK(norms.device() == device, "fastclip: norms is on ", norms.device(), " but total_norm is on ", device);
  }
  const int64_t entries = t.num_entries();
  check_rows(t.rows, entries, t.num_rows, device, /*distinct=*/true);
  check_entry_outputs(t.result, t.coef, t.threshold, entries, device);
  return device;
}

}  // namespace

at::Device stats_device(at::TensorList grads, const std::optional<at::Tensor>& norm, const char* norm_arg) {
  if (norm.has_value()) {
    TORCH_CHECK(norm->defined(), "fastclip: ", norm_arg, " is undefined");
    return norm->device();
  }
  TORCH_CHECK(!grads.empty(), "fastclip: grads must not be empty when ", norm_arg,
              " is None (the op computes the norm of the grads)");
  TORCH_CHECK(grads[0].defined(), "fastclip: grads[0] is undefined");
  return grads[0].device();
}

GradsUpdate grads_update(at::TensorList grads, const at::Device& device, bool scale_grads, NonfinitePolicy policy,
                         bool per_tensor_factors) {
  const bool zero = policy == NonfinitePolicy::kZero;
  return GradsUpdate{.grads = check_grads_on(grads, /*mutated=*/true, device),
                     .active = !grads.empty() && (scale_grads || zero),
                     .per_tensor = scale_grads && per_tensor_factors,
                     .zero_where_set = !scale_grads,
                     .clear_on_zero = zero};
}

GradsUpdate entry_grads_update(const PerEntryTensors& t, bool scale_grads, NonfinitePolicy policy) {
  if (scale_grads && t.per_tensor && !t.grads.empty()) {
    TORCH_CHECK(static_cast<int64_t>(t.grads.size()) == t.num_entries(), "fastclip: grads has ", t.grads.size(),
                " tensors but there are ", t.num_entries(), " norms: one per grad");
  }
  return grads_update(t.grads, t.result.device(), scale_grads, policy, t.per_tensor);
}

ZClipConfig zclip_config(const ZClipTensors& t, double alpha, double z_thresh, std::optional<double> max_grad_norm,
                         double eps, int64_t warmup_steps, c10::string_view threshold_mode,
                         c10::string_view clip_option, double clip_factor, bool skip_update_on_spike,
                         c10::string_view on_nonfinite, bool reference) {
  const at::Device device = stats_device(t.grads, t.norm, "norm");
  if (t.norm.has_value()) check_norm_tensor(*t.norm, "norm", 1);
  check_nonnegative_count(warmup_steps, "warmup_steps");
  const int64_t warmup = warmup_steps < 1 ? 1 : warmup_steps;
  check_state_tensor(t.state, "state", at::kDouble, device, zclip_state::header_size + warmup);
  check_state_tensor(t.result, "result", at::kFloat, device, result_slot::count);
  check_open_unit_interval(alpha, "alpha");
  check_finite_positive(z_thresh, "z_thresh");
  TORCH_CHECK(!max_grad_norm || (*max_grad_norm > 0.0 && !std::isnan(*max_grad_norm)),
              "fastclip: max_grad_norm must be > 0 or None, got ", max_grad_norm.value_or(0.0));
  check_finite_nonnegative(eps, "eps");
  check_finite_positive(clip_factor, "clip_factor");
  const ZClipThresholdMode mode = parse_zclip_threshold_mode(threshold_mode);
  const ZClipClipOption option = parse_zclip_clip_option(clip_option);
  return ZClipConfig{.alpha = alpha,
                     .z_thresh = z_thresh,
                     .max_grad_norm = max_grad_norm.value_or(0.0),
                     .eps = eps,
                     .clip_factor = clip_factor,
                     .warmup_steps = warmup,
                     .threshold_mode = mode,
                     .clip_option = option,
                     .has_max_grad_norm = max_grad_norm.has_value(),
                     .skip_update_on_spike = skip_update_on_spike,
                     .reference = reference,
                     .policy = parse_nonfinite_policy(on_nonfinite)};
}

NormClipConfig normclip_config(const NormClipTensors& t, double max_norm, double norm_type,
                               c10::string_view on_nonfinite) {
  const at::Device device = stats_device(t.grads, t.norm, "norm");
  if (t.norm.has_value()) check_norm_tensor(*t.norm, "norm", 1);
  check_state_tensor(t.result, "result", at::kFloat, device, result_slot::count);
  check_nonnegative(max_norm, "max_norm");
  check_norm_type(norm_type);
  return NormClipConfig{.max_norm = max_norm, .policy = parse_nonfinite_policy(on_nonfinite)};
}

AutoClipConfig autoclip_config(const AutoClipTensors& t, double percentile, bool lag, c10::string_view on_nonfinite,
                               bool reference) {
  const at::Tensor& counters = t.counters;
  TORCH_CHECK(counters.dim() == 2 && counters.size(1) == autoclip_counter::count,
              "fastclip: counters must have shape [histories, ", autoclip_counter::count, "], got ", counters.sizes());
  const int64_t histories = counters.size(0);
  const at::Device device = check_per_entry_args(t.entries);
  check_state_tensor(counters, "counters", at::kLong, device, -1);
  for (const auto& [history, name] :
       {std::pair<const at::Tensor&, const char*>{t.lower, "lower"}, {t.upper, "upper"}, {t.window, "window"}}) {
    check_state_tensor(history, name, at::kFloat, device, -1);
    TORCH_CHECK(history.dim() == 2 && history.size(0) == histories, "fastclip: ", name, " must have shape [", histories,
                ", n], got ", history.sizes());
  }
  TORCH_CHECK(percentile >= 0.0 && percentile <= 100.0, "fastclip: percentile must lie in [0, 100], got ", percentile);
  return AutoClipConfig{.q = percentile / 100.0,
                        .whole_history = t.window.size(1) == 0,
                        .lag = lag,
                        .reference = reference,
                        .policy = parse_nonfinite_policy(on_nonfinite)};
}

AutoClipBuffers autoclip_buffers(const AutoClipTensors& t) {
  return AutoClipBuffers{t.lower.data_ptr<float>(),  t.lower.size(1),  t.upper.data_ptr<float>(),     t.upper.size(1),
                         t.window.data_ptr<float>(), t.window.size(1), t.counters.data_ptr<int64_t>()};
}

EntryOutputs entry_outputs(const PerEntryTensors& t) {
  return EntryOutputs{t.rows.const_data_ptr<int64_t>(), t.num_rows, t.coef.data_ptr<float>(),
                      t.threshold.data_ptr<float>()};
}

AdaGCConfig adagc_config(const AdaGCTensors& t, double lambda_abs, double lambda_rel, double beta, int64_t warmup_steps,
                         double eps, c10::string_view on_nonfinite, bool reference) {
  TORCH_CHECK(t.gamma.dim() == 2 && t.gamma.size(1) == adagc_gamma::count, "fastclip: gamma must have shape [tensors, ",
              adagc_gamma::count, "], got ", t.gamma.sizes());
  const at::Device device = check_per_entry_args(t.entries);
  check_state_tensor(t.gamma, "gamma", at::kDouble, device, -1);
  check_state_tensor(t.steps, "steps", at::kDouble, device, 1);
  check_finite_positive(lambda_abs, "lambda_abs");
  check_finite_positive(lambda_rel, "lambda_rel");
  check_open_unit_interval(beta, "beta");
  check_nonnegative_count(warmup_steps, "warmup_steps");
  check_finite_nonnegative(eps, "eps");
  return AdaGCConfig{.lambda_abs = lambda_abs,
                     .lambda_rel = lambda_rel,
                     .beta = beta,
                     .eps = eps,
                     .warmup_steps = warmup_steps,
                     .reference = reference,
                     .policy = parse_nonfinite_policy(on_nonfinite)};
}

SkipStepConfig skip_step_config(const SkipStepTensors& t, int64_t window, double sigma, bool reference) {
  TORCH_CHECK(window >= 1, "fastclip: window must be >= 1, got ", window);
  check_finite_positive(sigma, "sigma");
  TORCH_CHECK(t.history.defined(), "fastclip: history is undefined");
  const at::Device device = t.history.device();
  for (const auto& [value, name] : {std::pair<const at::Tensor&, const char*>{t.loss, "loss"}, {t.norm, "norm"}}) {
    check_norm_tensor(value, name, 1);
    TORCH_CHECK(value.device() == device, "fastclip: ", name, " is on ", value.device(), " but history is on ", device);
  }
  TORCH_CHECK(t.history.dim() == 2 && t.history.size(0) == skip_step_series::count && t.history.size(1) == window,
              "fastclip: history must have shape [", skip_step_series::count, ", window] = [", skip_step_series::count,
              ", ", window, "], got ", t.history.sizes());
  check_state_tensor(t.history, "history", at::kDouble, device, -1, "history is");
  check_state_tensor(t.counters, "counters", at::kLong, device, skip_step_counter::count, "history is");
  check_state_tensor(t.result, "result", at::kFloat, device, skip_step_result::count, "history is");
  if (t.counters.is_cpu()) {  // on a GPU this would sync; the kernel clamps counters out of range
    const int64_t* counters = t.counters.const_data_ptr<int64_t>();
    const int64_t count = counters[skip_step_counter::filled], head = counters[skip_step_counter::head];
    TORCH_CHECK(count >= 0 && count <= window && head >= 0 && head < window, "fastclip: counters hold count ", count,
                " and head ", head, "; they must lie in [0, window] and [0, window) (window ", window, ")");
  }
  return SkipStepConfig{.window = window, .sigma = sigma, .reference = reference};
}

}  // namespace fastclip
