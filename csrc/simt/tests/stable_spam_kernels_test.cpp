// Stable-SPAM's kernels through their launchers, step after step: stable_spam_norms without
// maxima (each tensor's largest magnitude and sum of squares) and with them (the sums of squares
// at most and above AdaClip's threshold, on a state whose rows make AdaClip rescale some tensors
// and not others), against loops in double; then stable_spam_update_'s step and apply kernels,
// against the common/stable_spam_step.h functions called here on a copy of the state (the same
// code on the same inputs: state, step counter, per-entry outputs, result slots and SpamApply
// agree bit for bit), the grads against that SpamApply applied in double, and each tensor's norm
// afterwards against AdaGN's target recomputed from scratch. Then non-finite grads under each
// policy (statistics untouched; grads left, zeroed or made NaN) and NaN poisoning in reference mode.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "../../common/layouts.h"
#include "../../common/stable_spam_step.h"
#include "../../cuda/stable_spam_kernels.h"
#include "selftest.h"

namespace fastclip {
namespace selftest {
namespace {

using cuda::StableSPAMApplyParams;
using cuda::StableSPAMNormsParams;
using cuda::StableSPAMStepParams;
using P = NonfinitePolicy;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kSumRtol = 1e-12;   // sums of squares of stored values, accumulated in double
constexpr float kUnwritten = -7.0f;  // what the per-entry outputs and result slots hold before a step
constexpr int64_t kRow = stable_spam_row::count;

// Same bits, or both NaN (the two builds of the same code may give a NaN another sign).
template <typename T>
bool same_value(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0 || (a != a && b != b);
}
bool same_value(const SpamApply& a, const SpamApply& b) {
  return same_value(a.threshold, b.threshold) && same_value(a.clipped_factor, b.clipped_factor) &&
         same_value(a.factor, b.factor);
}
std::string show(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", v);
  return text;
}
std::string show(const SpamApply& a) {
  return "{" + show(a.threshold) + ", " + show(a.clipped_factor) + ", " + show(a.factor) + "}";
}

// The kernel's n values against the host step's, naming the first that differs.
template <typename T>
void expect_as_host(const T* kernel, const T* host, size_t n, const std::string& what) {
  for (size_t i = 0; i < n; ++i) {
    if (!same_value(kernel[i], host[i])) {
      expect(false, what + "[" + std::to_string(i) + "]: kernel " + show(kernel[i]) + ", host step " + show(host[i]));
      return;
    }
  }
  expect(true, what);
}

// --- the state --------------------------------------------------------------------------------

// The m_max that makes AdaClip's threshold at the row's next step `fraction` times max_abs:
// (g3 m_max + (1 - g3) max_abs) / (1 - g3^t) = fraction max_abs, t = steps + 1.
double m_max_for(double gamma3, double steps, double max_abs, double fraction) {
  const double bias = 1.0 - std::pow(gamma3, steps + 1.0);
  return std::max(0.0, (fraction * max_abs * bias - (1.0 - gamma3) * max_abs) / gamma3);
}

// Tensor j's row: a shuffle of [0, n + 1), so one row (filled with 7s) belongs to no tensor and
// must stay as it is. With bad_rows, entry 1's row is -1 and the last entry's num_rows: out of
// range, as only a raw op call can pass (the passes and the step leave those tensors alone).
// By j % 4 the row makes the first step's threshold 0.6 and 2.5 times the tensor's largest
// magnitude (`maxima`, as the passes will see it), is fresh (zeros: the threshold is the
// magnitude itself, give or take a rounding), or makes it 0.9 times it after two steps.
struct SpamState {
  int64_t num_rows;
  ExactArray<int64_t> rows;
  ExactArray<double> state;
  ExactArray<double> steps;  // the call counter (the cosine decay's k)

  SpamState(const std::vector<double>& maxima, double gamma3, bool bad_rows)
      : num_rows(static_cast<int64_t>(maxima.size()) + 1), state(num_rows * kRow), steps(1) {
    const int64_t n = static_cast<int64_t>(maxima.size());
    std::vector<int64_t> order(num_rows);
    std::iota(order.begin(), order.end(), 0);
    Rng rng(43);
    std::shuffle(order.begin(), order.end(), rng.engine());
    order.resize(n);
    if (bad_rows && n >= 3) order[1] = -1, order[n - 1] = num_rows;
    rows = ExactArray<int64_t>(order);
    std::fill(state.data(), state.data() + state.size(), 7.0);
    for (int64_t j = 0; j < n; ++j) {
      if (!valid(j)) continue;
      double* row = state.data() + kRow * order[j];
      const double m = maxima[j];
      switch (j % 4) {
        case 0: row[0] = m_max_for(gamma3, 40, m, 0.6), row[1] = 1.5, row[2] = 3.0, row[3] = 40; break;
        case 1: row[0] = m_max_for(gamma3, 40, m, 2.5), row[1] = 0.8, row[2] = 1.0, row[3] = 40; break;
        case 2: row[0] = row[1] = row[2] = row[3] = 0.0; break;
        default: row[0] = m_max_for(gamma3, 2, m, 0.9), row[1] = 0.3, row[2] = 0.2, row[3] = 2; break;
      }
    }
  }
  bool valid(int64_t j) const { return rows[j] >= 0 && rows[j] < num_rows; }
  const double* row(int64_t j) const { return state.data() + kRow * rows[j]; }
};

// --- stable_spam_norms --------------------------------------------------------------------------

double max_abs_of(const std::vector<double>& values) {
  double m = 0.0;
  for (const double x : values) m = nan_max(m, std::fabs(x));
  return m;
}

// The two passes' outputs, as the update reads them: stats = [max |x|; sum x^2], split = [sum of
// x^2 at most the threshold; above it]. rescaled[j]: AdaClip rescales tensor j (as the reference
// loop decides).
struct Passes {
  ExactArray<double> stats, split;
  std::vector<bool> rescaled;
};

// Runs the first pass, checks it, and the second with the maxima of the first; with
// `reduced`, tensors j % 3 == 2 get maxima 1.5 times their own (as if another rank held larger
// elements, the all-reduce writing them into stats[0] in place).
Passes run_passes(const TestList& list, const SpamState& st, double gamma3, int grid, bool reduced,
                  const std::string& what) {
  const int64_t n = static_cast<int64_t>(list.size());
  ExactArray<double> chunk_first(list.num_chunks()), chunk_second(list.num_chunks());
  ExactArray<unsigned int> blocks_done(1);
  Passes out{ExactArray<double>(2 * n), ExactArray<double>(2 * n), std::vector<bool>(n, false)};
  StableSPAMNormsParams params{list.list(),        nullptr,
                               st.rows.data(),     st.state.data(),
                               st.num_rows,        gamma3,
                               chunk_first.data(), chunk_second.data(),
                               out.stats.data(),   blocks_done.data()};
  const std::string first_what = what + ": stable_spam_norms";
  expect_launched(cuda::launch_stable_spam_norms(params, grid, nullptr), first_what);
  expect(blocks_done[0] == static_cast<unsigned>(grid), first_what + ": every block takes one ticket");
  const std::vector<std::vector<double>> values = list.values();
  for (int64_t j = 0; j < n; ++j) {
    double sum = 0.0;
    for (const double x : values[j]) sum += x * x;
    const double max_abs = max_abs_of(values[j]);
    expect(same_value(out.stats[j], max_abs),
           first_what + ": max of tensor " + std::to_string(j) + " " + describe(out.stats[j], max_abs));
    expect_close(out.stats[n + j], sum, kSumRtol,
                 [&] { return first_what + ": sum of squares of tensor " + std::to_string(j); });
  }
  list.expect_guards_intact(first_what);

  // The second pass, on the (possibly "reduced") maxima, each in its own exact-size array.
  for (int64_t j = 0; j < n; ++j) {
    if (reduced && j % 3 == 2) out.stats[j] *= 1.5;
  }
  ExactArray<double> maxima(std::vector<double>(out.stats.data(), out.stats.data() + n));
  params.maxima = maxima.data();
  params.out = out.split.data();
  blocks_done[0] = 0;
  const std::string split_what = what + ": stable_spam_norms with maxima";
  expect_launched(cuda::launch_stable_spam_norms(params, grid, nullptr), split_what);
  expect(blocks_done[0] == static_cast<unsigned>(grid), split_what + ": every block takes one ticket");
  StableSPAMConfig config{};
  config.gamma3 = gamma3;
  for (int64_t j = 0; j < n; ++j) {
    const std::string tensor = split_what + ": tensor " + std::to_string(j);
    const double max_abs = maxima[j];
    const double threshold = st.valid(j) ? adaclip_threshold(config, st.row(j), max_abs) : kNaN;
    out.rescaled[j] = st.valid(j) && adaclip_rescales(max_abs, threshold);
    if (!out.rescaled[j]) {
      expect(same_value(out.split[j], 0.0) && same_value(out.split[n + j], 0.0),
             tensor + " is not rescaled, yet split is (" + show(out.split[j]) + ", " + show(out.split[n + j]) + ")");
      continue;
    }
    // Float data is compared in float, with the largest float at most the threshold.
    const DType dtype = list.tensor(j).dtype();
    const double compare =
        dtype == DType::kFloat64 ? threshold : static_cast<double>(adaclip_float_threshold(threshold));
    double below = 0.0, above = 0.0;
    int64_t above_count = 0, disagreements = 0;
    for (const double x : values[j]) {
      (std::fabs(x) > compare ? above : below) += x * x;
      above_count += std::fabs(x) > compare;
      disagreements += (std::fabs(x) > compare) != (std::fabs(x) > threshold);
    }
    // The float comparison decides as the double one does.
    expect(disagreements == 0, tensor + ": the float threshold decides otherwise than the double one for " +
                                   std::to_string(disagreements) + " elements");
    expect_close(out.split[j], below, kSumRtol, [&] { return tensor + ": below"; });
    expect_close(out.split[n + j], above, kSumRtol, [&] { return tensor + ": above"; });
    // (A "reduced" maximum may lie above every local element: then nothing here is above.)
    expect(above_count > 0 || max_abs != max_abs_of(values[j]), tensor + ": rescaled, but no element above");
  }
  list.expect_guards_intact(split_what);
  return out;
}

// --- stable_spam_update_ ----------------------------------------------------------------------

// What a step's checks need from before it.
struct Before {
  std::vector<std::vector<double>> data;
  std::vector<double> state, steps;
};

// The per-entry outputs and result slots the kernels wrote, and the host step's.
struct StepOutputs {
  ExactArray<float> coef, threshold, result;
  ExactArray<SpamApply> apply;
  std::vector<float> host_coef, host_threshold, host_result;
  std::vector<SpamApply> host_apply;
  double total = 0.0;  // the host's pre-clip total norm

  explicit StepOutputs(int64_t n) : coef(n), threshold(n), result(result_slot::count), apply(n), host_apply(n) {
    std::fill(coef.data(), coef.data() + n, kUnwritten);
    std::fill(threshold.data(), threshold.data() + n, kUnwritten);
    std::fill(result.data(), result.data() + result_slot::count, kUnwritten);
    for (int64_t j = 0; j < n; ++j) apply[j] = host_apply[j] = SpamApply{-1.0, -1.0, -1.0};
    host_coef = coef.copy();
    host_threshold = threshold.copy();
    host_result = result.copy();
  }
};

// AdaGN's target norm for tensor j, recomputed from scratch (the paper's formulas with pow and
// cos) from the row before the step, the tensor's maximum `max_abs` and its values; `norm` gets
// the norm after AdaClip. Only for clean (non-reference) finite steps: no momentum reset.
double adagn_target(const StableSPAMConfig& c, const double* row, double k, double max_abs,
                    const std::vector<double>& values, double* norm) {
  const double t = row[stable_spam_row::steps] + 1.0;
  const double m_max = c.gamma3 * row[stable_spam_row::m_max] + (1.0 - c.gamma3) * max_abs;
  const double threshold = m_max / (1.0 - std::pow(c.gamma3, t));
  const double ratio = max_abs > threshold ? threshold / max_abs : 1.0;
  double sum = 0.0;
  for (const double x : values) {
    const double y = std::fabs(x) > threshold ? ratio * x : x;
    sum += y * y;
  }
  *norm = std::sqrt(sum);
  const double pi = 3.14159265358979323846;
  const double s =
      c.total_steps > 0 ? c.eta_min + (1.0 - c.eta_min) * (1.0 + std::cos(pi * k / (c.total_steps + 1.0))) / 2.0 : 1.0;
  const double g1 = c.gamma1 * s;
  const double m_norm = g1 * row[stable_spam_row::m_norm] + (1.0 - g1) * *norm;
  const double v_norm = c.gamma2 * row[stable_spam_row::v_norm] + (1.0 - c.gamma2) * *norm * *norm;
  const double m_hat = m_norm / (1.0 - std::pow(g1, t));
  const double v_hat = v_norm / (1.0 - std::pow(c.gamma2, t));
  return m_hat / (std::sqrt(v_hat) + c.eps);
}

// One step: the update's kernels, the host step on copies, and the grads against the host's
// SpamApply in double. Returns the outputs for the callers' own checks.
StepOutputs run_update(TestList& list, SpamState& st, const Passes& passes, const StableSPAMConfig& c, int grid,
                       const std::string& what, Before* before) {
  const int64_t n = static_cast<int64_t>(list.size());
  before->data = list.values();
  before->state = st.state.copy();
  before->steps = st.steps.copy();
  std::vector<double> host_state = st.state.copy(), host_steps = st.steps.copy();
  StepOutputs out(n);

  const StableSPAMStepParams step{c,
                                  passes.stats.data(),
                                  passes.split.data(),
                                  st.state.data(),
                                  st.steps.data(),
                                  EntryOutputs{st.rows.data(), st.num_rows, out.coef.data(), out.threshold.data()},
                                  out.result.data(),
                                  out.apply.data(),
                                  n};
  const StableSPAMApplyParams apply{list.list(), out.apply.data(), c.policy == P::kZero};
  const std::string update_what = what + ": stable_spam_update";
  expect_launched(cuda::launch_stable_spam_update(step, apply, grid, nullptr), update_what);

  // The host step: as every thread of the step kernel, k from the counter before the step.
  const double k = host_steps[0] + 1.0;
  out.total = stable_spam_total(passes.stats.data() + n, n);
  const double s = stable_spam_decay(c, k);
  const EntryOutputs host_out{st.rows.data(), st.num_rows, out.host_coef.data(), out.host_threshold.data()};
  for (int64_t j = 0; j < n; ++j) {
    stable_spam_entry(c, host_state.data(), k, s, host_out, out.host_apply.data(), j, passes.stats[j],
                      passes.stats[n + j], passes.split[j], passes.split[n + j], out.total);
  }
  stable_spam_finish(c, host_steps.data(), out.host_result.data(), host_out, out.host_apply.data(), n, out.total);
  expect_as_host(st.state.data(), host_state.data(), host_state.size(), update_what + ": state");
  expect_as_host(st.steps.data(), host_steps.data(), 1, update_what + ": steps");
  expect_as_host(out.coef.data(), out.host_coef.data(), n, update_what + ": coef");
  expect_as_host(out.threshold.data(), out.host_threshold.data(), n, update_what + ": threshold");
  expect_as_host(out.result.data(), out.host_result.data(), result_slot::count, update_what + ": result");
  expect_as_host(out.apply.data(), out.host_apply.data(), n, update_what + ": SpamApply");

  // The grads: elements above the threshold times clipped_factor, the others times factor (in
  // float for float data: the factors' rounding to float is within its tolerance); zeros where
  // the policy zeroes; untouched (bit for bit) where the SpamApply is the identity.
  for (int64_t j = 0; j < n; ++j) {
    const SpamApply& a = out.host_apply[j];
    const TensorBuffer& x = list.tensor(j);
    const bool identity = a.factor == 1.0 && !(a.threshold < kInf);
    const bool zero = c.policy == P::kZero && a.factor == 0.0;
    const double rtol = tolerance({x.dtype(), x.dtype() == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32});
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double v = before->data[j][i];
      const double want = zero ? 0.0 : v * (std::fabs(v) > a.threshold ? a.clipped_factor : a.factor);
      const auto where = [&] { return update_what + ": tensor " + std::to_string(j) + "[" + std::to_string(i) + "]"; };
      if (identity) {
        const bool same = same_value(x.get(i), v);
        expect(same, same ? std::string()
                          : where() + " changed, though its SpamApply is the identity: " + describe(x.get(i), v));
      } else {
        expect_close(x.get(i), want, rtol, where);
      }
    }
  }
  list.expect_guards_intact(update_what);

  // Independently of stable_spam_entry: after a clean finite step each tensor's norm is AdaGN's
  // target (a zero norm: left as it was), coef the target over the norm after AdaClip, threshold
  // AdaClip's.
  if (!c.reference && std::isfinite(out.total)) {
    for (int64_t j = 0; j < n; ++j) {
      if (!st.valid(j)) continue;
      const std::string tensor = update_what + ": tensor " + std::to_string(j);
      const double* row = before->state.data() + kRow * st.rows[j];
      double clipped_norm = 0.0;
      const double target = adagn_target(c, row, k, passes.stats[j], before->data[j], &clipped_norm);
      const TensorBuffer& x = list.tensor(j);
      const double rtol = tolerance({x.dtype(), DType::kFloat32});
      if (clipped_norm > 0.0) {
        double sum = 0.0;
        for (int64_t i = 0; i < x.numel(); ++i) sum += x.get(i) * x.get(i);
        expect_close(std::sqrt(sum), target, rtol, [&] { return tensor + ": norm after the step vs AdaGN's target"; });
        expect_close(out.coef[j], target / clipped_norm, tolerance(DType::kFloat32), [&] { return tensor + ": coef"; });
      } else {
        expect(out.coef[j] == 1.0f, tensor + ": a zero norm, yet coef " + show(out.coef[j]));
      }
      const double t = row[stable_spam_row::steps] + 1.0;
      const double threshold =
          (c.gamma3 * row[stable_spam_row::m_max] + (1.0 - c.gamma3) * passes.stats[j]) / (1.0 - std::pow(c.gamma3, t));
      expect_close(out.threshold[j], threshold, tolerance(DType::kFloat32), [&] { return tensor + ": threshold"; });
      expect(same_value(st.state[kRow * st.rows[j] + stable_spam_row::steps], t), tensor + ": the row's steps");
    }
  }
  return out;
}

// --- the cases ----------------------------------------------------------------------------------

// Refills the list's data for the next step; at step 1 tensor 1 spikes (8 times its values).
void refill(TestList& list, Rng& rng, int step) {
  for (size_t j = 0; j < list.size(); ++j) {
    TensorBuffer& x = list.tensor(j);
    x.fill(rng);
    if (step == 1 && j == 1) {
      for (int64_t i = 0; i < x.numel(); ++i) x.set(i, 8.0 * x.get(i));
    }
  }
}

std::vector<double> maxima_of(const TestList& list, bool reduced) {
  std::vector<double> out;
  for (size_t j = 0; j < list.size(); ++j) {
    out.push_back(max_abs_of(list.tensor(j).values()) * (reduced && j % 3 == 2 ? 1.5 : 1.0));
  }
  return out;
}

// The largest value of `dtype` at most `threshold` (> 0, in every dtype's normal range) and the
// next one up.
void dtype_neighbours(DType dtype, double threshold, double* lo, double* hi) {
  const int bits = dtype == DType::kFloat64 ? 52 : dtype == DType::kFloat32 ? 23 : dtype == DType::kFloat16 ? 10 : 7;
  const auto ulp = [&](double r) {
    int e;
    std::frexp(r, &e);
    return std::ldexp(1.0, e - 1 - bits);
  };
  TensorBuffer rounded(dtype, 1, 0);
  rounded.set(0, threshold);
  double r = rounded.get(0);
  if (r > threshold) {
    int e;
    r -= std::frexp(r, &e) == 0.5 ? ulp(r) / 2 : ulp(r);
  }
  *lo = r;
  *hi = r + ulp(r);
}

// In each tensor that the first step's AdaClip rescales, two elements right at its threshold:
// the largest value of the dtype at most the threshold (not rescaled) and, negated, the next
// one up (rescaled), where both lie below the tensor's largest magnitude (which they leave).
// For float data the threshold lies between two floats, and a comparison with the float nearest
// to it instead of adaclip_float_threshold's decides one of them wrong half the time.
void plant_boundaries(TestList& list, const SpamState& st, const std::vector<double>& maxima, double gamma3,
                      const std::string& what) {
  StableSPAMConfig config{};
  config.gamma3 = gamma3;
  int planted = 0;
  for (size_t j = 0; j < list.size(); ++j) {
    TensorBuffer& x = list.tensor(j);
    if (!st.valid(static_cast<int64_t>(j)) || x.numel() < 3) continue;
    const double threshold = adaclip_threshold(config, st.row(static_cast<int64_t>(j)), maxima[j]);
    if (!adaclip_rescales(maxima[j], threshold)) continue;
    double lo = 0.0, hi = 0.0;
    dtype_neighbours(x.dtype(), threshold, &lo, &hi);
    const std::vector<double> values = x.values();
    const int64_t peak =
        std::max_element(values.begin(), values.end(), [](double a, double b) { return std::fabs(a) < std::fabs(b); }) -
        values.begin();
    if (!(hi < std::fabs(values[peak]))) continue;
    const int64_t first = peak == 0 ? 1 : 0, second = peak <= 1 ? 2 : 1;
    x.set(first, lo);
    x.set(second, -hi);
    expect(x.get(first) == lo && x.get(second) == -hi && lo <= threshold && threshold < hi,
           what + ": the threshold's neighbours in tensor " + std::to_string(j));
    ++planted;
  }
  expect(planted > 0 || list.size() < 4, what + ": no tensor to plant the threshold's neighbours in");
}

// `steps` steps of both passes and the update on one list.
void test_steps(const ListCase& list_case, const StableSPAMConfig& config, const std::string& config_name, int grid,
                int steps, bool reduced) {
  Rng rng(47);
  TestList list(list_case.specs, list_case.chunk_size, rng);
  const bool bad_rows = list.size() >= 5;
  const std::vector<double> maxima = maxima_of(list, reduced);
  SpamState st(maxima, config.gamma3, bad_rows);
  plant_boundaries(list, st, maxima, config.gamma3, "stable_spam " + config_name + " on " + list.describe());
  for (int step = 0; step < steps; ++step) {
    if (step > 0) refill(list, rng, step);
    const std::string what = "stable_spam " + config_name + (reduced ? " reduced maxima" : "") +
                             " grid=" + std::to_string(grid) + " step " + std::to_string(step) + " on " +
                             list.describe();
    const Passes passes = run_passes(list, st, config.gamma3, grid, reduced, what);
    if (step == 0) {
      // The first step's rows rescale some tensors and leave others.
      int64_t rescaled = 0, left = 0;
      for (size_t j = 0; j < list.size(); ++j) {
        if (list.tensor(j).numel() == 0 || !st.valid(static_cast<int64_t>(j))) continue;
        (passes.rescaled[j] ? rescaled : left) += 1;
      }
      expect(list.size() < 4 || (rescaled > 0 && left > 0),
             what + ": the rows should make AdaClip rescale some tensors and not others: " + std::to_string(rescaled) +
                 " rescaled, " + std::to_string(left) + " not");
    }
    Before before;
    const StepOutputs out = run_update(list, st, passes, config, grid, what, &before);
    expect(std::isfinite(out.total), what + ": finite data, yet a non-finite total");
    // The step's AdaClip agrees with the second pass on which tensors it rescales.
    for (size_t j = 0; j < list.size(); ++j) {
      expect((out.host_apply[j].threshold < kInf) == static_cast<bool>(passes.rescaled[j]),
             what + ": the step and the second pass disagree on rescaling tensor " + std::to_string(j));
    }
    expect(out.result[result_slot::clipped] ==
               (std::find(passes.rescaled.begin(), passes.rescaled.end(), true) != passes.rescaled.end() ? 1.0f : 0.0f),
           what + ": the clipped slot");
    expect(out.result[result_slot::nonfinite] == 0.0f && out.result[result_slot::found_inf] == 0.0f,
           what + ": nonfinite / found_inf slots");
  }
  // The spare row, which no tensor names, holds its 7s.
  std::vector<bool> named(st.num_rows, false);
  for (size_t j = 0; j < list.size(); ++j) {
    if (st.valid(static_cast<int64_t>(j))) named[st.rows[j]] = true;
  }
  for (int64_t r = 0; r < st.num_rows; ++r) {
    if (named[r]) continue;
    for (int64_t f = 0; f < kRow; ++f) {
      expect(st.state[kRow * r + f] == 7.0,
             "stable_spam " + config_name + ": row " + std::to_string(r) + " belongs to no tensor, yet changed");
    }
  }
  expect(st.steps[0] == steps, "stable_spam " + config_name + ": the call counter counts every step");
}

// One step on a list holding `bad` (NaN or inf) in one tensor.
void test_nonfinite(const StableSPAMConfig& config, const std::string& name, double bad, int grid) {
  const ListCase list_case = list_cases()[0];  // every dtype, an empty tensor, several chunks
  Rng rng(53);
  TestList list(list_case.specs, list_case.chunk_size, rng);
  const size_t bad_tensor = 8;  // float16, 200 elements: 4 chunks
  list.tensor(bad_tensor).set(101, bad);
  SpamState st(maxima_of(list, false), config.gamma3, /*bad_rows=*/true);
  st.steps[0] = 3.0;
  const std::string what = "stable_spam " + name + " grid=" + std::to_string(grid) + " on " + list.describe();
  const Passes passes = run_passes(list, st, config.gamma3, grid, false, what);
  expect(same_value(passes.stats[bad_tensor], std::fabs(bad)), what + ": the bad tensor's max");
  Before before;
  const StepOutputs out = run_update(list, st, passes, config, grid, what, &before);
  expect(!std::isfinite(out.total) && same_value(out.result[result_slot::norm], static_cast<float>(out.total)),
         what + ": the norm slot holds the non-finite total");
  expect(st.steps[0] == 4.0, what + ": the call counter counts a non-finite step too");
  const int64_t n = static_cast<int64_t>(list.size());
  if (config.reference) {
    // The NaN poisons the bad tensor's row (its max and norm EMAs), and no other.
    for (int64_t j = 0; j < n; ++j) {
      if (!st.valid(j)) continue;
      const double* row = st.row(j);
      const bool poisoned = std::isnan(row[stable_spam_row::m_max]) && std::isnan(row[stable_spam_row::m_norm]);
      expect(poisoned == (j == static_cast<int64_t>(bad_tensor)),
             what + ": tensor " + std::to_string(j) + (poisoned ? " poisoned" : " not poisoned"));
    }
    return;
  }
  // Clean mode: every statistic as it was; the slots as the policy says; the grads left, zeroed or NaN.
  expect_as_host(st.state.data(), before.state.data(), before.state.size(), what + ": state untouched");
  expect(out.result[result_slot::nonfinite] == 1.0f, what + ": nonfinite slot");
  expect(out.result[result_slot::found_inf] == (config.policy == P::kSkip ? 1.0f : 0.0f), what + ": found_inf slot");
  for (int64_t j = 0; j < n; ++j) {
    const std::string tensor = what + ": tensor " + std::to_string(j);
    if (st.valid(j)) {
      // skip: 1; zero: 0; propagate: NaN for a NaN total, 0 for an infinite one.
      const double coef = config.policy == P::kSkip                           ? 1.0
                          : config.policy == P::kPropagate && std::isnan(bad) ? kNaN
                                                                              : 0.0;
      expect(same_value(out.coef[j], static_cast<float>(coef)), tensor + ": coef " + show(out.coef[j]));
      expect(std::isnan(out.threshold[j]), tensor + ": threshold " + show(out.threshold[j]));
    }
    const TensorBuffer& x = list.tensor(j);
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double got = x.get(i), was = before.data[j][i];
      bool ok = true;
      if (!st.valid(j) || config.policy == P::kSkip) {
        ok = same_value(got, was);
      } else if (config.policy == P::kZero) {
        ok = got == 0.0 && !std::signbit(got);
      } else {  // propagate: NaN times everything for a NaN total; times 0 for an infinite one
        ok = std::isnan(bad) ? std::isnan(got) : same_value(got, was * 0.0);
      }
      if (!ok) {
        expect(false, tensor + "[" + std::to_string(i) + "] " + describe(got, was) + " (before)");
        break;
      }
    }
  }
}

// More entries than the step kernel's 256 threads: 300 tensors, every tenth of 1-12 elements
// (one chunk), the others empty (a chunk is a block of 512 threads: ThreadSanitizer's time).
ListCase many_tensors() {
  const DType dtypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat64};
  ListCase out{"300 tensors", {}, 64};
  for (int j = 0; j < 300; ++j) {
    out.specs.push_back(TensorSpec{dtypes[j % 4], j % 10 == 3 ? 1 + (j * 7) % 12 : 0, j % 8});
  }
  return out;
}

}  // namespace

void test_stable_spam_kernels() {
  // The paper's defaults, a cosine decay over 4 steps; gamma3 of 0.9 in reference mode (the
  // counter restarted every second call), a decay over 6 steps.
  const StableSPAMConfig clean{.gamma1 = 0.7,
                               .gamma2 = 0.9,
                               .gamma3 = 0.999,
                               .eps = 1e-8,
                               .eta_min = 0.5,
                               .total_steps = 4,
                               .reset_every = 0,
                               .reference = false,
                               .policy = P::kSkip};
  StableSPAMConfig reference = clean;
  reference.gamma1 = 0.85, reference.gamma2 = 0.99999, reference.gamma3 = 0.9, reference.eps = 1e-6;
  reference.total_steps = 6, reference.reset_every = 2, reference.reference = true, reference.policy = P::kZero;
  constexpr int kSteps = 3;

  std::vector<ListCase> cases = list_cases();
  cases.push_back(many_tensors());
  for (const ListCase& list_case : cases) {
    Rng rng(0);
    const int32_t num_chunks = TestList(list_case.specs, list_case.chunk_size, rng).num_chunks();
    // One block, fewer blocks than chunks, more blocks than chunks.
    for (const int grid : {1, 3, num_chunks + 3}) {
      if (grid != 3 || num_chunks > 0) test_steps(list_case, clean, "clean", grid, kSteps, /*reduced=*/false);
    }
    test_steps(list_case, reference, "reference", 2, kSteps, /*reduced=*/true);
  }

  for (const P policy : {P::kSkip, P::kZero, P::kPropagate}) {
    StableSPAMConfig config = clean;
    config.policy = policy;
    const std::string name = std::string("clean, policy ") + (policy == P::kSkip   ? "skip"
                                                              : policy == P::kZero ? "zero"
                                                                                   : "propagate");
    test_nonfinite(config, name + ", a NaN", kNaN, 1);
    test_nonfinite(config, name + ", an inf", -kInf, 5);
  }
  StableSPAMConfig poisoned = reference;
  poisoned.policy = P::kSkip;
  test_nonfinite(poisoned, "reference, policy skip, a NaN", kNaN, 3);
}

}  // namespace selftest
}  // namespace fastclip
