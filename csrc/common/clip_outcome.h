// What every stateful clipper's step shares, on both backends: the non-finite policies, the
// result slots a step writes (layouts.h), and the per-entry outputs of the per-tensor clippers.
// Statistics are double (the peers keep them as Python floats).
#pragma once

#include "layouts.h"
#include "norm_math.h"

namespace fastclip {

enum class NonfinitePolicy : int32_t {
  kSkip = 0,       // grads untouched; an attached optimizer skips the step (found_inf = 1)
  kZero = 1,       // grads set to zero
  kPropagate = 2,  // torch's behaviour: a NaN norm makes every grad NaN, an inf norm zeroes them
};

FASTCLIP_HD double fc_nan() { return __builtin_nan(""); }
FASTCLIP_HD double fc_inf() { return __builtin_inf(); }
FASTCLIP_HD bool fc_isfinite(double x) { return x - x == 0.0; }  // false for NaN and +-inf

// Python's min(a, b): b only if b < a, so min(nan, 1.0) is nan (ZClip's reference quirk).
FASTCLIP_HD double py_min(double a, double b) { return b < a ? b : a; }

// The coefficient a non-finite step applies under each policy (statistics are not touched).
FASTCLIP_HD float nonfinite_coef(NonfinitePolicy policy, double norm) {
  if (policy == NonfinitePolicy::kZero) return 0.0f;
  if (policy == NonfinitePolicy::kPropagate) return norm != norm ? __builtin_nanf("") : 0.0f;
  return 1.0f;
}

// Writes the slots every clipper shares, from the coefficient it applies to the whole list.
FASTCLIP_HD void write_outcome(float* result, double norm, double threshold, float coef, bool nonfinite,
                               NonfinitePolicy policy) {
  result[result_slot::norm] = static_cast<float>(norm);
  result[result_slot::threshold] = static_cast<float>(threshold);
  result[result_slot::coef] = coef;
  result[result_slot::clipped] = coef < 1.0f ? 1.0f : 0.0f;
  result[result_slot::nonfinite] = nonfinite ? 1.0f : 0.0f;
  result[result_slot::grad_scale] = 1.0f / coef;
  result[result_slot::found_inf] = nonfinite && policy == NonfinitePolicy::kSkip ? 1.0f : 0.0f;
  result[result_slot::zscore] = static_cast<float>(fc_nan());
  result[result_slot::mean] = static_cast<float>(fc_nan());
  result[result_slot::std] = static_cast<float>(fc_nan());
}

// Per-entry outputs and the row each entry's statistics live in.
struct EntryOutputs {
  const int64_t* rows;
  int64_t num_rows;
  float* coef;
  float* threshold;
};

// An entry whose row is out of range (only a raw op call can pass one; the GPU cannot check
// without a sync) is left unclipped and updates nothing.
FASTCLIP_HD bool entry_row_valid(const EntryOutputs& out, int64_t j) {
  if (out.rows[j] >= 0 && out.rows[j] < out.num_rows) return true;
  out.coef[j] = 1.0f;
  out.threshold[j] = static_cast<float>(fc_nan());
  return false;
}

// A non-finite total norm outside reference mode: every statistic stays as it was.
FASTCLIP_HD bool skips_statistics(bool reference, double total_norm) { return !reference && !fc_isfinite(total_norm); }

FASTCLIP_HD void write_skipped_entry(const EntryOutputs& out, int64_t j, NonfinitePolicy policy, double total_norm) {
  out.coef[j] = nonfinite_coef(policy, total_norm);
  out.threshold[j] = static_cast<float>(fc_nan());
}

// The result slots of a per-entry step, written once every entry is done. With a single entry
// (AutoClip's global scope, or one tensor) threshold and coef are that entry's.
FASTCLIP_HD void write_entries_result(float* result, const EntryOutputs& out, int64_t num_entries, double total_norm,
                                      NonfinitePolicy policy, float uniform_coef, double uniform_threshold) {
  bool clipped = false;
  for (int64_t j = 0; j < num_entries; ++j) clipped = clipped || out.coef[j] < 1.0f;
  const bool single = num_entries == 1;
  write_outcome(result, total_norm, single ? static_cast<double>(out.threshold[0]) : uniform_threshold,
                single ? out.coef[0] : uniform_coef, !fc_isfinite(total_norm), policy);
  result[result_slot::clipped] = clipped ? 1.0f : 0.0f;
  if (!single) result[result_slot::grad_scale] = 1.0f / uniform_coef;
}

}  // namespace fastclip
