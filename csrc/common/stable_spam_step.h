// Stable-SPAM's gradient stabilisers (Huang et al. 2025, "Stable-SPAM: How to Train in 4-Bit More
// Stably than 16-Bit Adam"), shared by both backends. Per tensor, in the reference code's order:
// AdaClip rescales the elements above a bias-corrected EMA of the tensor's largest magnitude,
// then AdaGN scales the tensor to m_hat / (sqrt(v_hat) + eps) over its norm, from EMAs of that
// norm and of its square. The step reads each tensor's statistics from two passes over the
// grads (stable_spam_norms), so that on every rank it sees the maxima and norms of whole tensors.
#pragma once

#include "clip_outcome.h"

namespace fastclip {

struct StableSPAMConfig {
  double gamma1, gamma2, gamma3, eps, eta_min;
  int64_t total_steps;  // the cosine decay's length; 0: none (s = 1)
  int64_t reset_every;  // the momentum reset's period; 0: none
  bool reference;
  NonfinitePolicy policy;
};

// What the grads' update applies to one tensor: elements above `threshold` in magnitude are
// multiplied by clipped_factor (AdaClip's ratio times AdaGN's factor), the others by `factor`.
struct SpamApply {
  double threshold, clipped_factor, factor;
};

// The step's transcendental functions are computed here from + and * alone, in a fixed order,
// rather than by the math libraries (CUDA's double pow and cos are 2-ulp accurate, glibc's
// 1-ulp): so both backends store the same bits in the state, and a run resumes bit for bit on
// either. base^t for a whole number t >= 0, by squaring.
FASTCLIP_HD double whole_power(double base, double t) {
  double result = 1.0;
  for (int64_t e = static_cast<int64_t>(t); e > 0; e >>= 1) {
    if (e & 1) result *= base;
    base *= base;
  }
  return result;
}

// cos(x) for x >= 0: reduced to [-pi, pi] (fmod is exact), then its Taylor series in Horner form,
// whose 22 terms leave a truncation error below 1e-19 there.
FASTCLIP_HD double series_cos(double x) {
  const double pi = 3.14159265358979323846;
  x = ::fmod(x, 2.0 * pi);
  if (x > pi) x -= 2.0 * pi;
  const double x2 = x * x;
  double sum = 1.0;
  for (int n = 21; n > 0; --n) sum = 1.0 - x2 / static_cast<double>((2 * n) * (2 * n - 1)) * sum;
  return sum;
}

// The reference's CosineDecay(1, total_steps, eta_min) at optimizer step k: torch's
// CosineAnnealingLR with T_max = total_steps + 1 (no guard past total_steps: it rises again).
FASTCLIP_HD double stable_spam_decay(const StableSPAMConfig& c, double k) {
  if (c.total_steps <= 0) return 1.0;
  const double pi = 3.14159265358979323846;
  return c.eta_min + (1.0 - c.eta_min) * (1.0 + series_cos(pi * k / static_cast<double>(c.total_steps + 1))) / 2.0;
}

// AdaClip's threshold m_max_hat for a tensor whose state row is `row` and whose largest
// magnitude this step is max_abs. The passes and the step all call this, so they agree on which
// elements are rescaled.
FASTCLIP_HD double adaclip_threshold(const StableSPAMConfig& c, const double* row, double max_abs) {
  const double t = row[stable_spam_row::steps] + 1.0;
  const double m_max = c.gamma3 * row[stable_spam_row::m_max] + (1.0 - c.gamma3) * max_abs;
  return m_max / (1.0 - whole_power(c.gamma3, t));
}

// Whether an element of magnitude `magnitude` is rescaled (false for NaN either side, as in the
// reference's mask).
template <typename T>
FASTCLIP_HD bool adaclip_rescales(T magnitude, T threshold) {
  return magnitude > threshold;
}

// The float that float elements are compared with: |x| > threshold exactly when |x| > this, for
// every float x (the largest float at most threshold; NaN stays NaN), so float32, float16 and
// bfloat16 data are tested in float, the same way on both backends.
FASTCLIP_HD float adaclip_float_threshold(double threshold) {
  float below = static_cast<float>(threshold);
  if (static_cast<double>(below) > threshold) below = ::nextafterf(below, -__builtin_inff());
  return below;
}

// A tensor's two statistics from its chunks' [begin, begin + count) partials, in chunk order (the
// same on both backends): without split, the largest magnitude and the sum of squares; with it,
// the two sums of squares.
FASTCLIP_HD void fold_stable_spam_chunks(bool split, const double* first, const double* second, int64_t begin,
                                         int64_t count, double* out_first, double* out_second) {
  *out_first = split ? blocked_combine<NormKind::kL2>(first + begin, count)
                     : blocked_combine<NormKind::kInf>(first + begin, count);
  *out_second = blocked_combine<NormKind::kL2>(second + begin, count);
}

// The step's pre-clip total L2 norm, from the tensors' sums of squares.
FASTCLIP_HD double stable_spam_total(const double* sum_squares, int64_t n) {
  return ::sqrt(blocked_combine<NormKind::kL2>(sum_squares, n));
}

// One tensor's step. max_abs and sum_squares are its largest magnitude and sum of squares;
// below/above its sums of squares over the elements at most and above the AdaClip threshold
// (stable_spam_norms' second pass, all zero when nothing is rescaled). s is this step's decay.
FASTCLIP_HD void stable_spam_entry(const StableSPAMConfig& c, double* state, double k, double s,
                                   const EntryOutputs& out, SpamApply* apply, int64_t j, double max_abs,
                                   double sum_squares, double below, double above, double total_norm) {
  if (!entry_row_valid(out, j)) {
    apply[j] = SpamApply{fc_inf(), 1.0, 1.0};
    return;
  }
  if (skips_statistics(c.reference, total_norm)) {
    write_skipped_entry(out, j, c.policy, total_norm);
    apply[j] = SpamApply{fc_inf(), 1.0, static_cast<double>(out.coef[j])};
    return;
  }
  double* row = state + stable_spam_row::count * out.rows[j];
  const double threshold = adaclip_threshold(c, row, max_abs);
  const bool rescaled = adaclip_rescales(max_abs, threshold);
  const double ratio = rescaled ? threshold / max_abs : 1.0;
  const double norm = ::sqrt(rescaled ? below + ratio * ratio * above : sum_squares);

  const double t = row[stable_spam_row::steps] + 1.0;
  const double g1 = c.gamma1 * s;
  row[stable_spam_row::m_max] = c.gamma3 * row[stable_spam_row::m_max] + (1.0 - c.gamma3) * max_abs;
  row[stable_spam_row::m_norm] = g1 * row[stable_spam_row::m_norm] + (1.0 - g1) * norm;
  row[stable_spam_row::v_norm] = c.gamma2 * row[stable_spam_row::v_norm] + (1.0 - c.gamma2) * norm * norm;
  const double m_hat = row[stable_spam_row::m_norm] / (1.0 - whole_power(g1, t));
  const double v_hat = row[stable_spam_row::v_norm] / (1.0 - whole_power(c.gamma2, t));
  const double target = m_hat / (::sqrt(v_hat) + c.eps);
  const double factor = norm > 0.0 ? target / norm : 1.0;  // a zero norm leaves the tensor as it is
  // The reference shares this counter with Adam's, whose momentum reset restarts it at 1.
  const bool reset = c.reference && c.reset_every > 0 && ::fmod(k, static_cast<double>(c.reset_every)) == 0.0;
  row[stable_spam_row::steps] = reset ? 1.0 : t;

  out.coef[j] = static_cast<float>(factor);
  out.threshold[j] = static_cast<float>(threshold);
  apply[j] = SpamApply{rescaled ? threshold : fc_inf(), ratio * factor, factor};
}

// After every entry: the result slots (norm: the pre-clip total; clipped: whether AdaClip
// rescaled any element) and the step counter, which counts every call (the cosine decay's k).
FASTCLIP_HD void stable_spam_finish(const StableSPAMConfig& c, double* steps, float* result, const EntryOutputs& out,
                                    const SpamApply* apply, int64_t num_entries, double total_norm) {
  steps[0] += 1.0;
  if (skips_statistics(c.reference, total_norm)) {
    write_outcome(result, total_norm, fc_nan(), nonfinite_coef(c.policy, total_norm), true, c.policy);
    return;
  }
  write_entries_result(result, out, num_entries, total_norm, c.policy, 1.0f, fc_nan());
  bool rescaled = false;
  for (int64_t j = 0; j < num_entries; ++j) rescaled = rescaled || apply[j].threshold < fc_inf();
  result[result_slot::clipped] = rescaled ? 1.0f : 0.0f;
  result[result_slot::coef] = 1.0f;
  result[result_slot::grad_scale] = 1.0f;
}

}  // namespace fastclip
