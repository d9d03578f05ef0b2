// AutoClip's norm histories, shared by both backends: the percentile of everything seen so far,
// or of the last N norms.
//
// Whole history: two heaps split the history at the rank the percentile needs, a max-heap of the
// lowest k+1 norms and a min-heap of the rest, so each step costs O(log T) and the two values to
// interpolate are the heaps' roots. The rank k = floor(q (T-1)) grows by at most one per step, so
// one element crosses over per insertion. Window of N: a ring buffer and a radix select, O(N).
// Histories are float (the norms they hold are float already, so a step kept costs 4 bytes);
// each has its counters (layouts.h's autoclip_counter).
#pragma once

#include "clip_outcome.h"

namespace fastclip {

// torch.lerp and numpy's percentile interpolate alike: from the nearer end.
FASTCLIP_HD double quantile_lerp(double lo, double hi, double w) {
  return w < 0.5 ? lo + w * (hi - lo) : hi - (hi - lo) * (1.0 - w);
}

FASTCLIP_HD int64_t quantile_rank(double q, int64_t count) {
  return static_cast<int64_t>(::floor(q * static_cast<double>(count - 1)));
}

template <bool kMaxHeap>
FASTCLIP_HD bool heap_before(float a, float b) {
  return kMaxHeap ? a > b : a < b;
}

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
  int64_t* counters;  // this history's autoclip_counter row
};

// Sizes that fit the buffers (anything else comes from a corrupt state and is never indexed).
FASTCLIP_HD bool split_heaps_consistent(const SplitHeaps& h) {
  return h.counters[autoclip_counter::lower_size] >= 0 && h.counters[autoclip_counter::upper_size] >= 0 &&
         h.counters[autoclip_counter::lower_size] <= h.lower_capacity &&
         h.counters[autoclip_counter::upper_size] <= h.upper_capacity;
}

FASTCLIP_HD void split_heaps_insert(const SplitHeaps& h, double q, float x) {
  int64_t& lower_size = h.counters[autoclip_counter::lower_size];
  int64_t& upper_size = h.counters[autoclip_counter::upper_size];
  if (!split_heaps_consistent(h)) {
    h.counters[autoclip_counter::stopped] = autoclip_stopped::full;
    return;
  }
  const int64_t count = lower_size + upper_size + 1;
  const bool lower_grows = quantile_rank(q, count) + 1 > lower_size;
  if (lower_grows ? lower_size >= h.lower_capacity : upper_size >= h.upper_capacity) {
    // Never write past the buffers, whatever state was loaded.
    h.counters[autoclip_counter::stopped] = autoclip_stopped::full;
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
  const int64_t lower_size = h.counters[autoclip_counter::lower_size];
  const int64_t upper_size = h.counters[autoclip_counter::upper_size];
  const int64_t count = lower_size + upper_size;
  if (count == 0) return fc_inf();
  if (lower_size == 0) return fc_nan();  // unreachable from a consistent history
  const double lo = h.lower[0];
  const double hi = upper_size > 0 ? static_cast<double>(h.upper[0]) : lo;
  return quantile_lerp(lo, hi, q * static_cast<double>(count - 1) - static_cast<double>(lower_size - 1));
}

// Ring buffer of the last `capacity` norms.
struct WindowHistory {
  float* values;
  int64_t capacity;
  int64_t* counters;  // this history's autoclip_counter row
};

FASTCLIP_HD void window_insert(const WindowHistory& w, float x) {
  int64_t& count = w.counters[autoclip_counter::window_count];
  int64_t& head = w.counters[autoclip_counter::window_head];
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
  if (count <= 16) {  // a short window: the value with k below it and k+1 at or below, by counting
    for (int64_t i = 0; i < count; ++i) {
      const uint32_t key = order_key(values[i]);
      int64_t below = 0, at_or_below = 0;
      for (int64_t j = 0; j < count; ++j) {
        const uint32_t other = order_key(values[j]);
        below += other < key;
        at_or_below += other <= key;
      }
      if (below <= k && k < at_or_below) return from_order_key(key);
    }
  }
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
  const int64_t filled = w.counters[autoclip_counter::window_count];
  const int64_t count = filled < w.capacity ? filled : w.capacity;
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

}  // namespace fastclip
