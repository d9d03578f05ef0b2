// NormClip's step, shared by both backends: torch's clip coefficient from a fixed max_norm, in
// float32 as torch computes it from a float32 norm, and the non-finite policy.
#pragma once

#include "clip_outcome.h"

namespace fastclip {

struct NormClipConfig {
  double max_norm;
  NonfinitePolicy policy;
};

// `norm` is the total as stored (the grads' promoted dtype), read in float32 as the clipper
// reports it: a float64 norm beyond float32's range counts as non-finite.
FASTCLIP_HD void normclip_step(const NormClipConfig& c, double norm, float* result) {
  const float norm32 = static_cast<float>(norm);
  const bool finite = fc_isfinite(norm32);
  // "propagate" is torch's arithmetic on any norm (a NaN norm gives NaN, an infinite one 0).
  const float coef = finite || c.policy == NonfinitePolicy::kPropagate
                         ? clip_coefficient<float>(static_cast<float>(c.max_norm), norm32)
                         : nonfinite_coef(c.policy, norm32);
  write_outcome(result, norm32, c.max_norm, coef, !finite, c.policy);
}

}  // namespace fastclip
