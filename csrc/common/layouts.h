// The layouts of the small tensors that cross the C++/Python boundary: the result slots every
// stats op writes and the state each clipper keeps. Each is one list below, from which both the
// C++ names (e.g. result_slot::coef) and the table that `fastclip._C.layouts` exports to Python
// (read by fastclip/_layouts.py) are made, so the two sides cannot disagree.
#pragma once

#include <cstdint>

// float32[result_slot::count]: one step's outcome.
//   norm: pre-clip total norm; threshold: the clip value in force (NaN for per-tensor clippers);
//   coef: factor applied to every grad (1 for per-tensor clippers); clipped: 1 if some grad was
//   scaled by a factor below 1; nonfinite: 1 if the total norm was NaN or inf; grad_scale: what an
//   attached fused optimizer divides the grads by (1 / coef); found_inf: what it reads to skip the
//   step; zscore, mean, std: ZClip only (NaN elsewhere, and during warm-up).
#define FASTCLIP_RESULT_SLOTS(X) \
  X(norm) X(threshold) X(coef) X(clipped) X(nonfinite) X(grad_scale) X(found_inf) X(zscore) X(mean) X(std)

// float64[header_size + warmup_steps]: the EMA's mean and variance, the warm-up norms collected so
// far and whether the statistics are initialised; the warm-up buffer follows the header.
#define FASTCLIP_ZCLIP_STATE(X) X(mean) X(var) X(collected) X(initialized)

// int64[histories, count]: per AutoClip history, the two heaps' sizes, why it stopped changing
// (an autoclip_stopped value), and the ring buffer's fill count and next write position.
#define FASTCLIP_AUTOCLIP_COUNTERS(X) X(lower_size) X(upper_size) X(stopped) X(window_count) X(window_head)

// autoclip_counter::stopped: running; poisoned (reference mode: a NaN entered, every threshold is
// NaN); full (the host did not grow the heaps in time, so norms are dropped).
#define FASTCLIP_AUTOCLIP_STOPPED(X) X(running) X(poisoned) X(full)

// float64[tensors, count]: per AdaGC tensor, the EMA of its clipped norm and whether it has one yet.
#define FASTCLIP_ADAGC_GAMMA(X) X(value) X(seen)

// float64[tensors, count]: per Stable-SPAM tensor, AdaClip's EMA of its largest magnitude, AdaGN's
// EMAs of its norm and squared norm, and the steps its bias corrections have counted.
#define FASTCLIP_STABLE_SPAM_ROW(X) X(m_max) X(m_norm) X(v_norm) X(steps)

// float32[skip_step_result::count]: one StepSkipper step's outcome (common/skip_step.h).
//   factor: 1 to keep the step, 0 to skip it; skipped: 1 - factor (what an attached optimizer
//   reads as found_inf); nonfinite: 1 if the loss or the norm was NaN or inf; loss_mean, loss_std,
//   norm_mean, norm_std: the statistics of the earlier values in the history (NaN with fewer than
//   one, for a std two).
#define FASTCLIP_SKIP_STEP_RESULT(X) X(factor) X(skipped) X(nonfinite) X(loss_mean) X(loss_std) X(norm_mean) X(norm_std)

// int64[count]: a StepSkipper's ring buffer of earlier values (how many it holds and its next write
// position) and the steps seen and skipped so far.
#define FASTCLIP_SKIP_STEP_COUNTERS(X) X(filled) X(head) X(steps) X(skipped)

namespace fastclip {

#define FASTCLIP_LAYOUT_ENUMERATOR(name) name,
// namespace space { enum : type { <the list's names>, <then `extra`, e.g. count> }; }
#define FASTCLIP_LAYOUT_NAMESPACE(space, type, list, ...)       \
  namespace space {                                             \
  enum : type { list(FASTCLIP_LAYOUT_ENUMERATOR) __VA_ARGS__ }; \
  }
FASTCLIP_LAYOUT_NAMESPACE(result_slot, int32_t, FASTCLIP_RESULT_SLOTS, count)
FASTCLIP_LAYOUT_NAMESPACE(zclip_state, int64_t, FASTCLIP_ZCLIP_STATE, header_size)
FASTCLIP_LAYOUT_NAMESPACE(autoclip_counter, int64_t, FASTCLIP_AUTOCLIP_COUNTERS, count)
FASTCLIP_LAYOUT_NAMESPACE(autoclip_stopped, int64_t, FASTCLIP_AUTOCLIP_STOPPED)
FASTCLIP_LAYOUT_NAMESPACE(adagc_gamma, int64_t, FASTCLIP_ADAGC_GAMMA, count)
FASTCLIP_LAYOUT_NAMESPACE(stable_spam_row, int64_t, FASTCLIP_STABLE_SPAM_ROW, count)
FASTCLIP_LAYOUT_NAMESPACE(skip_step_result, int32_t, FASTCLIP_SKIP_STEP_RESULT, count)
FASTCLIP_LAYOUT_NAMESPACE(skip_step_counter, int64_t, FASTCLIP_SKIP_STEP_COUNTERS, count)
#undef FASTCLIP_LAYOUT_NAMESPACE
#undef FASTCLIP_LAYOUT_ENUMERATOR

// One named index of one layout, for the Python export.
struct LayoutField {
  const char* layout;
  const char* name;
  int64_t index;
};

// clang-format off: one X-macro table per layout, indented as the list it expands to.
inline constexpr LayoutField kLayoutFields[] = {
#define FASTCLIP_FIELD(name) {"result_slots", #name, result_slot::name},
    FASTCLIP_RESULT_SLOTS(FASTCLIP_FIELD)
#undef FASTCLIP_FIELD
#define FASTCLIP_FIELD(name) {"zclip_state", #name, zclip_state::name},
    FASTCLIP_ZCLIP_STATE(FASTCLIP_FIELD)
#undef FASTCLIP_FIELD
#define FASTCLIP_FIELD(name) {"autoclip_counters", #name, autoclip_counter::name},
    FASTCLIP_AUTOCLIP_COUNTERS(FASTCLIP_FIELD)
#undef FASTCLIP_FIELD
#define FASTCLIP_FIELD(name) {"autoclip_stopped", #name, autoclip_stopped::name},
    FASTCLIP_AUTOCLIP_STOPPED(FASTCLIP_FIELD)
#undef FASTCLIP_FIELD
#define FASTCLIP_FIELD(name) {"adagc_gamma", #name, adagc_gamma::name},
    FASTCLIP_ADAGC_GAMMA(FASTCLIP_FIELD)
#undef FASTCLIP_FIELD
#define FASTCLIP_FIELD(name) {"stable_spam_row", #name, stable_spam_row::name},
    FASTCLIP_STABLE_SPAM_ROW(FASTCLIP_FIELD)
#undef FASTCLIP_FIELD
#define FASTCLIP_FIELD(name) {"skip_step_result", #name, skip_step_result::name},
    FASTCLIP_SKIP_STEP_RESULT(FASTCLIP_FIELD)
#undef FASTCLIP_FIELD
#define FASTCLIP_FIELD(name) {"skip_step_counters", #name, skip_step_counter::name},
    FASTCLIP_SKIP_STEP_COUNTERS(FASTCLIP_FIELD)
#undef FASTCLIP_FIELD
};
// clang-format on

}  // namespace fastclip
