// Step skipping (skip_step_update_), shared by both backends: OLMo-core's rule
// (olmo_core.optim.SkipStepOptimizer.get_step_factor; Levanter's skipstep is the same). A step is
// kept when both
//     loss - mean(earlier losses) <= sigma * std(earlier losses)
//     norm - mean(earlier norms)  <= sigma * std(earlier norms)
// (one-sided, unbiased std, NaN compares false so it skips), over the last `window` values before
// this one, and always kept while fewer than max(2, window / 2) values are known (this one
// included). Every value enters the history, kept or skipped.
//
// Default mode differs in two places, both where OLMo-core's comparison would be against a NaN:
// a non-finite loss or norm skips its step and enters no history (in OLMo-core one NaN makes the
// mean NaN and skips every step until it leaves the window), and a decision with fewer than two
// earlier values (windows of 5 or less) keeps the step (their unbiased std is undefined).
// reference=true is OLMo-core's rule, NaN entering the history (in float64: OLMo-core's statistics
// follow the values' dtype, so a value within rounding of the bound may be decided differently).
//
// The statistics are float64, summed in one fixed order on both backends (skip_step_lane_sum,
// skip_step_fold): the CPU op and the CUDA kernel give the same bits.
#pragma once

#include "clip_outcome.h"

namespace fastclip {

// History rows: float64[skip_step_series::count, window], the losses then the norms, a ring buffer.
namespace skip_step_series {
enum : int64_t { loss = 0, norm = 1, count = 2 };
}

// The fixed summation order: lane l (of kSkipStepLanes) adds the values l, l + lanes, l + 2 lanes,
// ... (oldest first) one after the other; then the lanes' partials are folded pairwise,
// p[t] += p[t + stride] for stride = lanes / 2, ..., 1, so p[0] is the sum. The CUDA kernel runs a
// lane per thread and each stride's folds in parallel; the CPU runs the same additions in turn.
constexpr int kSkipStepLanes = 256;

struct SkipStepConfig {
  int64_t window;  // >= 1
  double sigma;    // > 0
  bool reference;
};

// The history as a step reads it, before it changes anything: `count` earlier values (at most
// window), the next one written at `head`.
struct SkipStepHistory {
  const double* values;  // [skip_step_series::count, window]
  int64_t window;
  int64_t count;
  int64_t head;

  // The i-th oldest value (0 <= i < count) of `series`.
  FASTCLIP_HD double at(int64_t series, int64_t i) const {
    int64_t position = head - count + i;
    if (position < 0) position += window;
    return values[series * window + position];
  }
};

// Counters out of range (only a raw op call on a GPU can pass them: the CPU op refuses them) are
// clamped, so no access leaves the history.
FASTCLIP_HD SkipStepHistory skip_step_history(const double* values, int64_t window, const int64_t* counters) {
  int64_t count = counters[skip_step_counter::filled];
  int64_t head = counters[skip_step_counter::head];
  count = count < 0 ? 0 : (count > window ? window : count);
  head = head < 0 || head >= window ? 0 : head;
  return SkipStepHistory{values, window, count, head};
}

// Lane `lane`'s share of a sum over the earlier values of `series`: the values themselves, or
// (squares) their squared deviations from `center`.
FASTCLIP_HD double skip_step_lane_sum(const SkipStepHistory& h, int64_t series, int lane, double center, bool squares) {
  double sum = 0.0;
  for (int64_t i = lane; i < h.count; i += kSkipStepLanes) {
    const double x = h.at(series, i);
    const double d = x - center;
    sum += squares ? d * d : x;
  }
  return sum;
}

// One fold of the partials: p[t] += p[t + stride].
FASTCLIP_HD void skip_step_fold(double* partials, int stride, int t) { partials[t] += partials[t + stride]; }

FASTCLIP_HD double skip_step_mean(double sum, int64_t n) { return n >= 1 ? sum / static_cast<double>(n) : fc_nan(); }

// The unbiased standard deviation (torch.std_mean's) from the sum of squared deviations.
FASTCLIP_HD double skip_step_std(double squares, int64_t n) {
  return n >= 2 ? fc_sqrt(squares / static_cast<double>(n - 1)) : fc_nan();
}

// The decision on this step's loss and norm, from the earlier values' means and stds, written to
// `result` (float32[skip_step_result::count]); then the values enter the history (unless default
// mode keeps a non-finite one out) and the counters advance. `h` is the history as read before.
FASTCLIP_HD void skip_step_finish(const SkipStepConfig& c, const SkipStepHistory& h, double* history, int64_t* counters,
                                  float* result, double loss, double norm, const double* mean, const double* std) {
  const int64_t n = h.count;
  const bool finite = fc_isfinite(loss) && fc_isfinite(norm);
  const int64_t needed = c.window / 2 > 2 ? c.window / 2 : 2;  // values known, this one included
  bool keep;
  if (!c.reference && !finite) {
    keep = false;
  } else if (n + 1 < needed || (!c.reference && n < 2)) {
    keep = true;
  } else {
    keep = loss - mean[skip_step_series::loss] <= c.sigma * std[skip_step_series::loss] &&
           norm - mean[skip_step_series::norm] <= c.sigma * std[skip_step_series::norm];
  }
  result[skip_step_result::factor] = keep ? 1.0f : 0.0f;
  result[skip_step_result::skipped] = keep ? 0.0f : 1.0f;
  result[skip_step_result::nonfinite] = finite ? 0.0f : 1.0f;
  result[skip_step_result::loss_mean] = static_cast<float>(mean[skip_step_series::loss]);
  result[skip_step_result::loss_std] = static_cast<float>(std[skip_step_series::loss]);
  result[skip_step_result::norm_mean] = static_cast<float>(mean[skip_step_series::norm]);
  result[skip_step_result::norm_std] = static_cast<float>(std[skip_step_series::norm]);
  if (c.reference || finite) {
    history[skip_step_series::loss * h.window + h.head] = loss;
    history[skip_step_series::norm * h.window + h.head] = norm;
    counters[skip_step_counter::head] = h.head + 1 == h.window ? 0 : h.head + 1;
    counters[skip_step_counter::filled] = n < h.window ? n + 1 : h.window;
  }
  counters[skip_step_counter::steps] += 1;
  if (!keep) counters[skip_step_counter::skipped] += 1;
}

// The whole step on the host, the CUDA kernel's additions in the same order one after the other
// (the CPU op; the layer's self-test compares the kernel with it bit for bit).
inline void skip_step_host(const SkipStepConfig& c, double* history, int64_t* counters, float* result, double loss,
                           double norm) {
  const SkipStepHistory h = skip_step_history(history, c.window, counters);
  double partials[skip_step_series::count][kSkipStepLanes];
  double mean[skip_step_series::count], std[skip_step_series::count];
  for (int pass = 0; pass < 2; ++pass) {
    const bool squares = pass == 1;
    for (int64_t s = 0; s < skip_step_series::count; ++s) {
      for (int lane = 0; lane < kSkipStepLanes; ++lane) {
        partials[s][lane] = skip_step_lane_sum(h, s, lane, squares ? mean[s] : 0.0, squares);
      }
      for (int stride = kSkipStepLanes / 2; stride > 0; stride /= 2) {
        for (int t = 0; t < stride; ++t) skip_step_fold(partials[s], stride, t);
      }
      if (squares) {
        std[s] = skip_step_std(partials[s][0], h.count);
      } else {
        mean[s] = skip_step_mean(partials[s][0], h.count);
      }
    }
  }
  skip_step_finish(c, h, history, counters, result, loss, norm, mean, std);
}

}  // namespace fastclip
