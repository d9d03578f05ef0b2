// The per-step arithmetic of the stateful clippers (ZClip, AutoClip, AdaGC), shared by the CPU
// and CUDA backends: statistics update, threshold and coefficient. Every function works on raw
// pointers into small state tensors so the CPU ops and the one-block CUDA kernels call the very
// same code, and the CPU tests exercise what the GPU runs.
//
// Statistics are double (the peers keep them as Python floats); histories are float (the norms
// they hold are float already, so nothing is lost and a step kept costs 4 bytes).
#pragma once

#include "norm_math.h"

namespace fastclip {

enum class NonfinitePolicy : int32_t {
  kSkip = 0,       // grads untouched; an attached optimizer skips the step (found_inf = 1)
  kZero = 1,       // grads set to zero
  kPropagate = 2,  // torch's behaviour: a NaN norm makes every grad NaN, an inf norm zeroes them
};

// Layout of the float32 `result` tensor every stats op writes (one step's outcome).
enum ResultSlot : int32_t {
  kResNorm = 0,       // pre-clip total norm
  kResThreshold = 1,  // the clip value in force (NaN for per-tensor clippers: see the per-tensor outputs)
  kResCoef = 2,       // factor applied to every grad (1 for per-tensor clippers: see the per-tensor outputs)
  kResClipped = 3,    // 1 if some grad was scaled by a factor below 1
  kResNonfinite = 4,  // 1 if the total norm was NaN or inf
  kResGradScale = 5,  // what an attached fused optimizer divides the grads by (1 / coef)
  kResFoundInf = 6,   // what an attached fused optimizer reads to skip the step
  kResZScore = 7,     // ZClip only (NaN elsewhere, and during warm-up)
  kResMean = 8,       // ZClip only
  kResStd = 9,        // ZClip only
  kNumResultSlots = 10,
};

FASTCLIP_HD double fc_nan() { return __builtin_nan(""); }
FASTCLIP_HD double fc_inf() { return __builtin_inf(); }
FASTCLIP_HD bool fc_isfinite(double x) { return x - x == 0.0; }  // false for NaN and +-inf

// Python's min(a, b): b only if b < a, so min(nan, 1.0) is nan (ZClip's reference quirk).
FASTCLIP_HD double py_min(double a, double b) { return b < a ? b : a; }

// torch.lerp and numpy's percentile interpolate alike: from the nearer end.
FASTCLIP_HD double quantile_lerp(double lo, double hi, double w) {
  return w < 0.5 ? lo + w * (hi - lo) : hi - (hi - lo) * (1.0 - w);
}

// The coefficient a non-finite step applies under each policy (statistics are not touched).
FASTCLIP_HD float nonfinite_coef(NonfinitePolicy policy, double norm) {
  if (policy == NonfinitePolicy::kZero) return 0.0f;
  if (policy == NonfinitePolicy::kPropagate) return norm != norm ? __builtin_nanf("") : 0.0f;
  return 1.0f;
}

// Writes the slots every clipper shares, from the coefficient it applies to the whole list.
FASTCLIP_HD void write_outcome(float* result, double norm, double threshold, float coef, bool nonfinite,
                               NonfinitePolicy policy) {
  result[kResNorm] = static_cast<float>(norm);
  result[kResThreshold] = static_cast<float>(threshold);
  result[kResCoef] = coef;
  result[kResClipped] = coef < 1.0f ? 1.0f : 0.0f;
  result[kResNonfinite] = nonfinite ? 1.0f : 0.0f;
  result[kResGradScale] = 1.0f / coef;
  result[kResFoundInf] = nonfinite && policy == NonfinitePolicy::kSkip ? 1.0f : 0.0f;
  result[kResZScore] = static_cast<float>(fc_nan());
  result[kResMean] = static_cast<float>(fc_nan());
  result[kResStd] = static_cast<float>(fc_nan());
}

// ---------------------------------------------------------------------------------------------
// ZClip (zclip 1.0.0): EMA of the norm's mean and variance after a warm-up of plain clipping.

struct ZClipConfig {
  double alpha, z_thresh, max_grad_norm, eps, clip_factor;
  int64_t warmup_steps;  // >= 1 (zclip initialises after its first step even when asked for 0)
  bool has_max_grad_norm, percentile_mode, clip_to_mean, skip_update_on_spike, reference;
  NonfinitePolicy policy;
};

// state: [mean, var, collected, initialized, buffer[warmup_steps]]
constexpr int64_t kZClipHeader = 4;

FASTCLIP_HD void zclip_step(const ZClipConfig& c, double* state, double norm, float* result) {
  double& mean = state[0];
  double& var = state[1];
  double& collected = state[2];
  double& initialized = state[3];
  double* buffer = state + kZClipHeader;
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
  if (c.percentile_mode) {
    const double bound = mean + c.z_thresh * sd;
    if (norm > bound) {
      spike = true;
      clip_val = bound;
    }
  } else if (z > c.z_thresh) {
    spike = true;
    clip_val = c.clip_to_mean ? mean : (mean + (c.z_thresh * sd) / (z / c.z_thresh)) * c.clip_factor;
  }
  const double adaptive = spike ? clip_val : norm;
  const double effective = c.has_max_grad_norm ? py_min(adaptive, c.max_grad_norm) : adaptive;
  // zclip's own rule: strict '>', plain division in double, no clamp.
  const float coef = norm > effective ? static_cast<float>(effective / (norm + kClipEps)) : 1.0f;
  write_outcome(result, norm, effective, coef, !finite, c.policy);
  result[kResZScore] = static_cast<float>(z);
  result[kResMean] = static_cast<float>(mean);
  result[kResStd] = static_cast<float>(sd);
  if (!(spike && c.skip_update_on_spike)) {
    const double x = spike ? clip_val : norm;  // the max_grad_norm cap never feeds the statistics
    mean = c.alpha * mean + (1.0 - c.alpha) * x;
    var = c.alpha * var + (1.0 - c.alpha) * (x - mean) * (x - mean);  // updated mean: zclip's quirk
  }
}

// ---------------------------------------------------------------------------------------------
// AutoClip: the percentile of the norm history.
//
// Whole history: two heaps split the history at the rank the percentile needs, a max-heap of the
// lowest k+1 norms and a min-heap of the rest, so each step costs O(log T) and the two values to
// interpolate are the heaps' roots. The rank k = floor(q (T-1)) grows by at most one per step, so
// one element crosses over per insertion. Window of N: a ring buffer and a radix select, O(N).

// Per-history counters (int64): [lower_size, upper_size, poisoned, window_count, window_head].
constexpr int64_t kHistoryCounters = 5;

FASTCLIP_HD int64_t quantile_rank(double q, int64_t count) {
  return static_cast<int64_t>(::floor(q * static_cast<double>(count - 1)));
}

template <bool kMaxHeap>
FASTCLIP_HD bool heap_before(float a, float b) { return kMaxHeap ? a > b : a < b; }

template <bool kMaxHeap>
FASTCLIP_HD void heap_sift_down(float* heap, int64_t size, int64_t i) {
  const float x = heap[i];
  while (true) {
    int64_t child = 2 * i + 1;
    if (child >= size) break;
    if (child + 1 < size && heap_before<kMaxHeap>(heap[child + 1], heap[child])) ++child;
    if (!heap_before<kMaxHeap>(heap[child], x)) break;
    heap[i] = heap[child];
    i = child;
  }
  heap[i] = x;
}

template <bool kMaxHeap>
FASTCLIP_HD void heap_push(float* heap, int64_t& size, float x) {
  int64_t i = size++;
  while (i > 0) {
    const int64_t parent = (i - 1) / 2;
    if (!heap_before<kMaxHeap>(x, heap[parent])) break;
    heap[i] = heap[parent];
    i = parent;
  }
  heap[i] = x;
}

// Replaces the root with x and returns the old root.
template <bool kMaxHeap>
FASTCLIP_HD float heap_replace_root(float* heap, int64_t size, float x) {
  const float root = heap[0];
  heap[0] = x;
  heap_sift_down<kMaxHeap>(heap, size, 0);
  return root;
}

struct SplitHeaps {
  float* lower;  // max-heap
  float* upper;  // min-heap
  int64_t lower_capacity, upper_capacity;
  int64_t* counters;
};

// counters[2]: why the history stopped changing.
constexpr int64_t kHistoryPoisoned = 1;  // reference mode: a NaN entered; every threshold is NaN
constexpr int64_t kHistoryFull = 2;      // the host did not grow the heaps in time; norms are dropped

// Sizes that fit the buffers (anything else comes from a corrupt state and is never indexed).
FASTCLIP_HD bool split_heaps_consistent(const SplitHeaps& h) {
  return h.counters[0] >= 0 && h.counters[1] >= 0 && h.counters[0] <= h.lower_capacity &&
         h.counters[1] <= h.upper_capacity;
}

FASTCLIP_HD void split_heaps_insert(const SplitHeaps& h, double q, float x) {
  int64_t& lower_size = h.counters[0];
  int64_t& upper_size = h.counters[1];
  if (!split_heaps_consistent(h)) {
    h.counters[2] = kHistoryFull;
    return;
  }
  const int64_t count = lower_size + upper_size + 1;
  const bool lower_grows = quantile_rank(q, count) + 1 > lower_size;
  if (lower_grows ? lower_size >= h.lower_capacity : upper_size >= h.upper_capacity) {
    h.counters[2] = kHistoryFull;  // never write past the buffers, whatever state was loaded
    return;
  }
  if (lower_grows) {
    if (upper_size > 0 && x > h.upper[0]) x = heap_replace_root<false>(h.upper, upper_size, x);
    heap_push<true>(h.lower, lower_size, x);
  } else {
    if (lower_size > 0 && x < h.lower[0]) x = heap_replace_root<true>(h.lower, lower_size, x);
    heap_push<false>(h.upper, upper_size, x);
  }
}

// The q-quantile (linear interpolation) of the whole history; +inf when it is empty.
FASTCLIP_HD double split_heaps_quantile(const SplitHeaps& h, double q) {
  if (!split_heaps_consistent(h)) return fc_nan();
  const int64_t lower_size = h.counters[0];
  const int64_t count = lower_size + h.counters[1];
  if (count == 0) return fc_inf();
  if (lower_size == 0) return fc_nan();  // unreachable from a consistent history
  const double lo = h.lower[0];
  const double hi = h.counters[1] > 0 ? static_cast<double>(h.upper[0]) : lo;
  return quantile_lerp(lo, hi, q * static_cast<double>(count - 1) - static_cast<double>(lower_size - 1));
}

// Ring buffer of the last `capacity` norms.
struct WindowHistory {
  float* values;
  int64_t capacity;
  int64_t* counters;  // [.., .., .., count, head]
};

FASTCLIP_HD void window_insert(const WindowHistory& w, float x) {
  int64_t& count = w.counters[3];
  int64_t& head = w.counters[4];
  if (head < 0 || head >= w.capacity) head = 0;  // never write outside the ring, whatever was loaded
  w.values[head] = x;
  head = head + 1 == w.capacity ? 0 : head + 1;
  if (count < w.capacity) ++count;
}

// Norms are >= 0 (inf allowed), so their bit patterns sort as the values do.
FASTCLIP_HD uint32_t order_key(float x) {
  uint32_t bits;
  __builtin_memcpy(&bits, &x, sizeof(bits));
  return bits & 0x7fffffffu;  // -0.0 sorts as 0.0
}
FASTCLIP_HD float from_order_key(uint32_t key) {
  float x;
  __builtin_memcpy(&x, &key, sizeof(x));
  return x;
}

// The k-th smallest (0-based) of values[0, count): a radix select, eight passes of 4 bits (a
// 16-counter histogram: small enough for a GPU thread's registers or a tiny stack frame).
FASTCLIP_HD float radix_select(const float* values, int64_t count, int64_t k) {
  uint32_t prefix = 0;
  int64_t histogram[16];
  for (int shift = 28; shift >= 0; shift -= 4) {
    const uint32_t high_mask = shift == 28 ? 0u : ~((1u << (shift + 4)) - 1u);
    for (int d = 0; d < 16; ++d) histogram[d] = 0;
    for (int64_t i = 0; i < count; ++i) {
      const uint32_t key = order_key(values[i]);
      if ((key & high_mask) == prefix) ++histogram[(key >> shift) & 0xfu];
    }
    uint32_t digit = 0;
    while (digit < 15 && k >= histogram[digit]) k -= histogram[digit++];
    prefix |= digit << shift;
  }
  return from_order_key(prefix);
}

// The smallest value of values[0, count) strictly above `x`, or x when there is none.
FASTCLIP_HD float next_above(const float* values, int64_t count, float x) {
  float best = x;
  bool found = false;
  for (int64_t i = 0; i < count; ++i) {
    if (values[i] > x && (!found || values[i] < best)) {
      best = values[i];
      found = true;
    }
  }
  return best;
}

FASTCLIP_HD double window_quantile(const WindowHistory& w, double q) {
  const int64_t count = w.counters[3] < w.capacity ? w.counters[3] : w.capacity;
  if (count <= 0) return fc_inf();
  const int64_t k = quantile_rank(q, count);
  const float lo = radix_select(w.values, count, k);
  float hi = lo;
  if (k + 1 < count) {
    int64_t at_most_lo = 0;
    for (int64_t i = 0; i < count; ++i) at_most_lo += order_key(w.values[i]) <= order_key(lo);
    if (at_most_lo <= k + 1) hi = next_above(w.values, count, lo);
  }
  return quantile_lerp(lo, hi, q * static_cast<double>(count - 1) - static_cast<double>(k));
}

struct AutoClipConfig {
  double q;             // percentile / 100
  bool whole_history;   // else a window of `window` norms
  bool lag;             // threshold from the previous norms only (autoclip's QuantileClip)
  bool reference;
  NonfinitePolicy policy;
};

struct AutoClipHistory {
  SplitHeaps heaps;
  WindowHistory window;
};

FASTCLIP_HD double autoclip_quantile(const AutoClipConfig& c, const AutoClipHistory& h) {
  if (h.heaps.counters[2] == kHistoryPoisoned) return fc_nan();
  return c.whole_history ? split_heaps_quantile(h.heaps, c.q) : window_quantile(h.window, c.q);
}

FASTCLIP_HD void autoclip_insert(const AutoClipConfig& c, const AutoClipHistory& h, float norm) {
  if (h.heaps.counters[2] == kHistoryPoisoned) return;  // stays poisoned, even once full
  if (norm != norm) {
    h.heaps.counters[2] = kHistoryPoisoned;
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

// ---------------------------------------------------------------------------------------------
// AdaGC: per-tensor thresholds from an EMA of each tensor's clipped norm.

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

// One tensor's step. gamma: [value, seen]. Returns the factor for this tensor and its threshold.
FASTCLIP_HD float adagc_tensor_step(const AdaGCConfig& c, double* gamma, bool warmup, double warmup_coef,
                                    double norm, double* threshold) {
  double& value = gamma[0];
  double& seen = gamma[1];
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

}  // namespace fastclip
