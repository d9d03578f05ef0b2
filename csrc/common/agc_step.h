// NFNets AGC's per-row decision, shared by both backends (timm's adaptive_clip_grad).
#pragma once

#include "norm_math.h"

namespace fastclip {

// Output rows: dim 0 of a 2-d+ tensor; a 0-d/1-d tensor is one row. An empty tensor has none.
FASTCLIP_HD int64_t agc_num_rows(int64_t dim, int64_t numel, int64_t size0) {
  if (numel == 0) return 0;
  return dim <= 1 ? 1 : size0;
}

// The factor for one row: 1 when ||g|| < clip_factor * max(||p||, eps), else
// that bound / max(||g||, 1e-6). In float (double for float64 data), as timm computes it.
template <typename acc_t>
FASTCLIP_HD double agc_factor(double param_norm, double grad_norm, double clip_factor, double eps) {
  const acc_t p = static_cast<acc_t>(param_norm);
  const acc_t g = static_cast<acc_t>(grad_norm);
  const acc_t bound = (p < static_cast<acc_t>(eps) ? static_cast<acc_t>(eps) : p) * static_cast<acc_t>(clip_factor);
  if (g < bound) return 1.0;
  const acc_t floor = static_cast<acc_t>(1e-6);
  return static_cast<double>(bound / (g < floor ? floor : g));
}

}  // namespace fastclip
