// AutoClip's step (the paper's percentile clipping; autoclip's QuantileClip with lag), shared by
// both backends: the CPU op loops over the entries, the CUDA kernel gives each entry a thread.
#pragma once

#include "autoclip_history.h"

namespace fastclip {

struct AutoClipConfig {
  double q;            // percentile / 100
  bool whole_history;  // else a window of `window` norms
  bool lag;            // threshold from the previous norms only (autoclip's QuantileClip)
  bool reference;
  NonfinitePolicy policy;
};

struct AutoClipHistory {
  SplitHeaps heaps;
  WindowHistory window;
};

FASTCLIP_HD double autoclip_quantile(const AutoClipConfig& c, const AutoClipHistory& h) {
  if (h.heaps.counters[autoclip_counter::stopped] == autoclip_stopped::poisoned) return fc_nan();
  return c.whole_history ? split_heaps_quantile(h.heaps, c.q) : window_quantile(h.window, c.q);
}

FASTCLIP_HD void autoclip_insert(const AutoClipConfig& c, const AutoClipHistory& h, float norm) {
  // A poisoned history stays poisoned, even once full.
  if (h.heaps.counters[autoclip_counter::stopped] == autoclip_stopped::poisoned) return;
  if (norm != norm) {
    h.heaps.counters[autoclip_counter::stopped] = autoclip_stopped::poisoned;
    return;
  }
  if (c.whole_history) split_heaps_insert(h.heaps, c.q, norm);
  else window_insert(h.window, norm);
}

// One history's step in a run that is not skipped: returns the threshold and updates the history.
FASTCLIP_HD double autoclip_step(const AutoClipConfig& c, const AutoClipHistory& h, float norm) {
  if (c.lag) {
    const double threshold = autoclip_quantile(c, h);
    autoclip_insert(c, h, norm);
    return threshold;
  }
  autoclip_insert(c, h, norm);
  return autoclip_quantile(c, h);
}

struct AutoClipBuffers {
  float* lower;
  int64_t lower_capacity;
  float* upper;
  int64_t upper_capacity;
  float* window;
  int64_t window_size;
  int64_t* counters;  // [num_rows, autoclip_counter::count]
};

FASTCLIP_HD void autoclip_entry(const AutoClipConfig& c, const AutoClipBuffers& b, const EntryOutputs& out, int64_t j,
                                double norm, double total_norm) {
  if (!entry_row_valid(out, j)) return;
  if (skips_statistics(c.reference, total_norm)) return write_skipped_entry(out, j, c.policy, total_norm);
  const int64_t row = out.rows[j];
  int64_t* counters = b.counters + row * autoclip_counter::count;
  const AutoClipHistory history{SplitHeaps{b.lower + row * b.lower_capacity, b.upper + row * b.upper_capacity,
                                           b.lower_capacity, b.upper_capacity, counters},
                                WindowHistory{b.window + row * b.window_size, b.window_size, counters}};
  const float norm_f = static_cast<float>(norm);
  const double threshold = autoclip_step(c, history, norm_f);
  out.threshold[j] = static_cast<float>(threshold);
  out.coef[j] = clip_coefficient<float>(static_cast<float>(threshold), norm_f);
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
