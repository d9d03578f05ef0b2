// AdaGC's step (Wang et al. 2025), shared by both backends: per-tensor thresholds from an EMA of
// each tensor's clipped norm, after a global warm-up.
#pragma once

#include "clip_outcome.h"

namespace fastclip {

struct AdaGCConfig {
  double lambda_abs, lambda_rel, beta, eps;
  int64_t warmup_steps;
  bool reference;
  NonfinitePolicy policy;
};

// The global factor of a warm-up step: lambda_abs / (n + eps), applied only when below 1.
FASTCLIP_HD double adagc_warmup_coef(const AdaGCConfig& c, double total_norm) {
  const double coef = c.lambda_abs / (total_norm + c.eps);
  return coef < 1.0 ? coef : 1.0;
}

// One tensor's step on its adagc_gamma row (layouts.h). Returns the factor for this tensor and its threshold.
FASTCLIP_HD float adagc_tensor_step(const AdaGCConfig& c, double* gamma, bool warmup, double warmup_coef, double norm,
                                    double* threshold) {
  double& value = gamma[adagc_gamma::value];
  double& seen = gamma[adagc_gamma::seen];
  if (warmup) {
    const double clipped_norm = norm * warmup_coef;
    value = seen == 0.0 ? clipped_norm : py_min(value, clipped_norm);
    seen = 1.0;
    *threshold = c.lambda_abs;
    return static_cast<float>(warmup_coef);
  }
  if (seen == 0.0) {  // first grad of this tensor after warm-up: nothing to compare against yet
    value = norm;
    seen = 1.0;
    *threshold = fc_inf();
    return 1.0f;
  }
  const double bound = c.lambda_rel * value;
  *threshold = bound;
  float coef = 1.0f;
  double kept = norm;
  if (norm > bound) {
    coef = static_cast<float>(bound / (norm + c.eps));
    kept = bound;
  }
  value = c.beta * value + (1.0 - c.beta) * kept;
  return coef;
}

FASTCLIP_HD void adagc_entry(const AdaGCConfig& c, double* gamma, double finite_steps, const EntryOutputs& out,
                             int64_t j, double norm, double total_norm) {
  if (!entry_row_valid(out, j)) return;
  if (skips_statistics(c.reference, total_norm)) return write_skipped_entry(out, j, c.policy, total_norm);
  const bool warmup = finite_steps < static_cast<double>(c.warmup_steps);
  double threshold = 0.0;
  out.coef[j] = adagc_tensor_step(c, gamma + adagc_gamma::count * out.rows[j], warmup, adagc_warmup_coef(c, total_norm),
                                  norm, &threshold);
  out.threshold[j] = static_cast<float>(threshold);
}

// After every entry of an AdaGC step: the step counter and the result slots.
FASTCLIP_HD void adagc_finish(const AdaGCConfig& c, double* steps, float* result, const EntryOutputs& out,
                              int64_t num_entries, double total_norm) {
  if (skips_statistics(c.reference, total_norm)) {
    const float coef = nonfinite_coef(c.policy, total_norm);
    write_outcome(result, total_norm, fc_nan(), coef, true, c.policy);
    return;
  }
  const bool warmup = steps[0] < static_cast<double>(c.warmup_steps);
  const float uniform = warmup ? static_cast<float>(adagc_warmup_coef(c, total_norm)) : 1.0f;
  write_entries_result(result, out, num_entries, total_norm, c.policy, uniform, warmup ? c.lambda_abs : fc_nan());
  if (num_entries == 1 && warmup) result[result_slot::threshold] = static_cast<float>(c.lambda_abs);
  steps[0] += 1.0;
}

}  // namespace fastclip
