// One clipper step as the stats ops run it, entry by entry, on both backends: the CPU ops loop
// over the entries (in parallel), the CUDA kernels give each entry a thread of one block. The
// statistics themselves live in clip_stats.h.
#pragma once

#include "clip_stats.h"

namespace fastclip {

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
FASTCLIP_HD bool skips_statistics(bool reference, double total_norm) {
  return !reference && !fc_isfinite(total_norm);
}

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
  result[kResClipped] = clipped ? 1.0f : 0.0f;
  if (!single) result[kResGradScale] = 1.0f / uniform_coef;
}

struct AutoClipBuffers {
  float* lower;
  int64_t lower_capacity;
  float* upper;
  int64_t upper_capacity;
  float* window;
  int64_t window_size;
  int64_t* counters;  // [num_rows, kHistoryCounters]
};

FASTCLIP_HD void autoclip_entry(const AutoClipConfig& c, const AutoClipBuffers& b, const EntryOutputs& out, int64_t j,
                                double norm, double total_norm) {
  if (!entry_row_valid(out, j)) return;
  if (skips_statistics(c.reference, total_norm)) return write_skipped_entry(out, j, c.policy, total_norm);
  const int64_t row = out.rows[j];
  int64_t* counters = b.counters + row * kHistoryCounters;
  const AutoClipHistory history{SplitHeaps{b.lower + row * b.lower_capacity, b.upper + row * b.upper_capacity,
                                           b.lower_capacity, b.upper_capacity, counters},
                                WindowHistory{b.window + row * b.window_size, b.window_size, counters}};
  const float norm_f = static_cast<float>(norm);
  const double threshold = autoclip_step(c, history, norm_f);
  out.threshold[j] = static_cast<float>(threshold);
  out.coef[j] = clip_coefficient<float>(static_cast<float>(threshold), norm_f);
}

FASTCLIP_HD void adagc_entry(const AdaGCConfig& c, double* gamma, double finite_steps, const EntryOutputs& out,
                             int64_t j, double norm, double total_norm) {
  if (!entry_row_valid(out, j)) return;
  if (skips_statistics(c.reference, total_norm)) return write_skipped_entry(out, j, c.policy, total_norm);
  const bool warmup = finite_steps < static_cast<double>(c.warmup_steps);
  double threshold = 0.0;
  out.coef[j] = adagc_tensor_step(c, gamma + 2 * out.rows[j], warmup, adagc_warmup_coef(c, total_norm), norm, &threshold);
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
  if (num_entries == 1 && warmup) result[kResThreshold] = static_cast<float>(c.lambda_abs);
  steps[0] += 1.0;
}

FASTCLIP_HD void autoclip_finish(const AutoClipConfig& c, float* result, const EntryOutputs& out, int64_t num_entries,
                                 double total_norm) {
  if (skips_statistics(c.reference, total_norm)) {
    write_outcome(result, total_norm, fc_nan(), nonfinite_coef(c.policy, total_norm), true, c.policy);
    return;
  }
  write_entries_result(result, out, num_entries, total_norm, c.policy, 1.0f, fc_nan());
}

}  // namespace fastclip
