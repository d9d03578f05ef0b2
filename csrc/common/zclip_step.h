// ZClip's step (zclip 1.0.0), shared by both backends: an EMA of the total norm's mean and
// variance after a warm-up of plain clipping; z-score spikes are clipped.
#pragma once

#include "clip_outcome.h"

namespace fastclip {

// zclip's mode: a spike is a z-score above z_thresh ("zscore"), or a norm above
// mean + z_thresh * std ("percentile").
enum class ZClipThresholdMode : int32_t { kZScore = 0, kPercentile = 1 };
// zclip's clip_option, for z-score spikes: clip to the adaptive bound ("adaptive_scaling") or to
// the mean ("mean").
enum class ZClipClipOption : int32_t { kAdaptiveScaling = 0, kMean = 1 };

struct ZClipConfig {
  double alpha, z_thresh, max_grad_norm, eps, clip_factor;
  int64_t warmup_steps;  // >= 1 (zclip initialises after its first step even when asked for 0)
  ZClipThresholdMode threshold_mode;
  ZClipClipOption clip_option;
  bool has_max_grad_norm, skip_update_on_spike, reference;
  NonfinitePolicy policy;
};

// state: layouts.h's zclip_state header, then the warm-up buffer of warmup_steps norms.
FASTCLIP_HD void zclip_step(const ZClipConfig& c, double* state, double norm, float* result) {
  double& mean = state[zclip_state::mean];
  double& var = state[zclip_state::var];
  double& collected = state[zclip_state::collected];
  double& initialized = state[zclip_state::initialized];
  double* buffer = state + zclip_state::header_size;
  const bool finite = fc_isfinite(norm);
  if (!finite && !c.reference) {
    write_outcome(result, norm, fc_nan(), nonfinite_coef(c.policy, norm), true, c.policy);
    return;
  }
  if (initialized == 0.0) {
    // Warm-up: collect, clip exactly as torch.nn.utils.clip_grad_norm_(params, max_grad_norm).
    // (A count outside the buffer, NaN included, can only come from a corrupt state: restart.)
    if (!(collected >= 0.0 && collected < static_cast<double>(c.warmup_steps))) collected = 0.0;
    buffer[static_cast<int64_t>(collected)] = norm;
    collected += 1.0;
    if (collected >= static_cast<double>(c.warmup_steps)) {
      const int64_t n = static_cast<int64_t>(collected);
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) sum += buffer[i];
      mean = sum / static_cast<double>(n);
      double sq = 0.0;
      for (int64_t i = 0; i < n; ++i) sq += (buffer[i] - mean) * (buffer[i] - mean);
      var = sq / static_cast<double>(n);
      initialized = 1.0;
      collected = 0.0;
    }
    const float coef = c.has_max_grad_norm
                           ? clip_coefficient<float>(static_cast<float>(c.max_grad_norm), static_cast<float>(norm))
                           : 1.0f;
    write_outcome(result, norm, c.has_max_grad_norm ? c.max_grad_norm : fc_inf(), coef, !finite, c.policy);
    return;
  }
  const double sd = fc_sqrt(var);
  const double z = (norm - mean) / (sd + c.eps);
  bool spike = false;
  double clip_val = 0.0;
  if (c.threshold_mode == ZClipThresholdMode::kPercentile) {
    const double bound = mean + c.z_thresh * sd;
    if (norm > bound) {
      spike = true;
      clip_val = bound;
    }
  } else if (z > c.z_thresh) {
    spike = true;
    clip_val =
        c.clip_option == ZClipClipOption::kMean ? mean : (mean + (c.z_thresh * sd) / (z / c.z_thresh)) * c.clip_factor;
  }
  const double adaptive = spike ? clip_val : norm;
  const double effective = c.has_max_grad_norm ? py_min(adaptive, c.max_grad_norm) : adaptive;
  // zclip's own rule: strict '>', plain division in double, no clamp.
  const float coef = norm > effective ? static_cast<float>(effective / (norm + kClipEps)) : 1.0f;
  write_outcome(result, norm, effective, coef, !finite, c.policy);
  result[result_slot::zscore] = static_cast<float>(z);
  result[result_slot::mean] = static_cast<float>(mean);
  result[result_slot::std] = static_cast<float>(sd);
  if (!(spike && c.skip_update_on_spike)) {
    const double x = spike ? clip_val : norm;  // the max_grad_norm cap never feeds the statistics
    mean = c.alpha * mean + (1.0 - c.alpha) * x;
    var = c.alpha * var + (1.0 - c.alpha) * (x - mean) * (x - mean);  // updated mean: zclip's quirk
  }
}

}  // namespace fastclip
