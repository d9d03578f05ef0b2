// The stateful clippers' one-block step kernels (ZClip, AutoClip, AdaGC) and StepSkipper's through
// their launchers, step after step, against the same common/*_step.h functions called here on a
// copy of the state: the same code on the same inputs, so state, per-entry outputs and result
// slots must agree bit for bit. The per-entry kernels get more entries than their 256 threads.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "../../common/layouts.h"
#include "../../cuda/stats_kernels.h"
#include "selftest.h"

namespace fastclip {
namespace selftest {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kEntries = 300;  // more than the kernels' 256 threads: some threads take two

template <typename T>
void expect_same_bits(const ExactArray<T>& kernel, const std::vector<T>& host, const std::string& what) {
  const bool same = kernel.size() == host.size() &&
                    (host.empty() || std::memcmp(kernel.data(), host.data(), host.size() * sizeof(T)) == 0);
  expect(same, what + " differs from the host step's");
}

// A one-element norm of `dtype` (misaligned, guarded) holding `value` as that dtype rounds it.
struct NormValue {
  TensorBuffer buffer;
  NormValue(DType dtype, double value) : buffer(dtype, 1, 1) { buffer.set(0, value); }
  DeviceValues device() { return DeviceValues{buffer.data(), static_cast<int32_t>(buffer.dtype())}; }
  double host() const { return buffer.get(0); }
};

// --- ZClip ----------------------------------------------------------------------------------

void test_zclip(const ZClipConfig& config, DType norm_dtype, const std::string& name) {
  // Warm-up, steady steps, spikes, a NaN and an infinity.
  const double kNorms[] = {1.0, 1.2, 0.9, 1.1, 8.0, 1.0, kNaN, 1.05, kInf, 30.0, 0.95, 1.0, 1.3};
  ExactArray<double> state(static_cast<size_t>(zclip_state::header_size + config.warmup_steps));
  ExactArray<float> result(result_slot::count);
  std::vector<double> host_state = state.copy();
  std::vector<float> host_result = result.copy();
  int step = 0;
  for (const double norm : kNorms) {
    const std::string what = "zclip_update " + name + " step " + std::to_string(step++);
    NormValue value(norm_dtype, norm);
    expect_launched(cuda::launch_step(cuda::ZClipStep{config, value.device(), state.data(), result.data()}, nullptr),
                    what);
    zclip_step(config, host_state.data(), value.host(), host_result.data());
    expect_same_bits(state, host_state, what + ": state");
    expect_same_bits(result, host_result, what + ": result");
  }
}

// --- the per-entry steps' inputs and outputs --------------------------------------------------

// Entries own distinct rows (a shuffle of [0, kEntries)), but two are out of range, as only a
// raw op call can pass (left unclipped, updating nothing).
struct Entries {
  ExactArray<int64_t> rows;
  ExactArray<float> coef, threshold, result;
  std::vector<float> host_coef, host_threshold, host_result;

  Entries() : rows(kEntries), coef(kEntries), threshold(kEntries), result(result_slot::count) {
    std::vector<int64_t> order(kEntries);
    std::iota(order.begin(), order.end(), 0);
    Rng rng(5);
    std::shuffle(order.begin(), order.end(), rng.engine());
    order[137] = kEntries;
    order[5] = -1;
    rows = ExactArray<int64_t>(order);
    host_coef = coef.copy();
    host_threshold = threshold.copy();
    host_result = result.copy();
  }
  EntryOutputs device() { return EntryOutputs{rows.data(), kEntries, coef.data(), threshold.data()}; }
  EntryOutputs host() { return EntryOutputs{rows.data(), kEntries, host_coef.data(), host_threshold.data()}; }
  void expect_same(const std::string& what) const {
    expect_same_bits(coef, host_coef, what + ": coef");
    expect_same_bits(threshold, host_threshold, what + ": threshold");
    expect_same_bits(result, host_result, what + ": result");
  }
};

// One step's norms (kEntries of `dtype`, misaligned) and their total; `nan_entry` >= 0 makes that
// entry's norm NaN.
struct StepNorms {
  NormValue total;
  TensorBuffer norms;
  StepNorms(DType dtype, Rng& rng, double total_override, int nan_entry)
      : total(dtype, total_override), norms(dtype, kEntries, 2) {
    for (int64_t j = 0; j < kEntries; ++j) norms.set(j, j == nan_entry ? kNaN : rng.uniform(0.1, 3.0));
  }
  EntryParams params(Entries& entries) {
    return EntryParams{total.device(), DeviceValues{norms.data(), static_cast<int32_t>(norms.dtype())}, kEntries,
                       entries.device(), entries.result.data()};
  }
};

// Per step: the total norm (NaN and inf on two steps) and which entry's norm is NaN (-1: none).
struct StepPlan {
  double total;
  int nan_entry;
};
const StepPlan kSteps[] = {{5.0, -1}, {6.5, -1}, {kNaN, -1}, {4.0, 17}, {kInf, -1}, {7.0, -1}, {5.5, -1}, {6.0, -1}};

// --- AutoClip -------------------------------------------------------------------------------

void test_autoclip(const AutoClipConfig& config, int64_t lower_capacity, int64_t upper_capacity, int64_t window_size,
                   DType dtype, const std::string& name) {
  ExactArray<float> lower(kEntries * lower_capacity), upper(kEntries * upper_capacity), window(kEntries * window_size);
  ExactArray<int64_t> counters(kEntries * autoclip_counter::count);
  std::vector<float> host_lower = lower.copy(), host_upper = upper.copy(), host_window = window.copy();
  std::vector<int64_t> host_counters = counters.copy();
  const AutoClipBuffers buffers{lower.data(),  lower_capacity, upper.data(),   upper_capacity,
                                window.data(), window_size,    counters.data()};
  const AutoClipBuffers host_buffers{host_lower.data(),  lower_capacity, host_upper.data(),   upper_capacity,
                                     host_window.data(), window_size,    host_counters.data()};
  Entries entries;
  Rng rng(7);
  int step = 0;
  for (const StepPlan& plan : kSteps) {
    const std::string what = "autoclip_update " + name + " step " + std::to_string(step++);
    StepNorms norms(dtype, rng, plan.total, plan.nan_entry);
    expect_launched(cuda::launch_step(cuda::AutoClipStep{config, buffers, norms.params(entries)}, nullptr), what);
    const double total = norms.total.host();
    for (int64_t j = 0; j < kEntries; ++j) {
      autoclip_entry(config, host_buffers, entries.host(), j, norms.norms.get(j), total);
    }
    autoclip_finish(config, entries.host_result.data(), entries.host(), kEntries, total);
    expect_same_bits(lower, host_lower, what + ": lower heaps");
    expect_same_bits(upper, host_upper, what + ": upper heaps");
    expect_same_bits(window, host_window, what + ": windows");
    expect_same_bits(counters, host_counters, what + ": counters");
    entries.expect_same(what);
  }
}

// --- AdaGC ----------------------------------------------------------------------------------

void test_adagc(const AdaGCConfig& config, DType dtype, const std::string& name) {
  ExactArray<double> gamma(kEntries * adagc_gamma::count), steps(1);
  std::vector<double> host_gamma = gamma.copy(), host_steps = steps.copy();
  Entries entries;
  Rng rng(11);
  int step = 0;
  for (const StepPlan& plan : kSteps) {
    const std::string what = "adagc_update " + name + " step " + std::to_string(step++);
    StepNorms norms(dtype, rng, plan.total, plan.nan_entry);
    expect_launched(
        cuda::launch_step(cuda::AdaGCStep{config, gamma.data(), steps.data(), norms.params(entries)}, nullptr), what);
    const double total = norms.total.host();
    const double finite_steps = host_steps[0];  // as every thread of the kernel reads it, before thread 0 counts
    for (int64_t j = 0; j < kEntries; ++j) {
      adagc_entry(config, host_gamma.data(), finite_steps, entries.host(), j, norms.norms.get(j), total);
    }
    adagc_finish(config, host_steps.data(), entries.host_result.data(), entries.host(), kEntries, total);
    expect_same_bits(gamma, host_gamma, what + ": gamma");
    expect_same_bits(steps, host_steps, what + ": steps");
    entries.expect_same(what);
  }
}

// --- StepSkipper -----------------------------------------------------------------------------

// Losses and norms around 2 and 1 with spikes, a NaN and infinities, from a history that already
// holds `filled` values (the next written at `head`; a window of more than the kernel's 256 lanes
// makes some lanes add two values), each step checked against skip_step_host.
void test_skip_step(const SkipStepConfig& config, int64_t filled, int64_t head, int steps, DType loss_dtype,
                    DType norm_dtype, const std::string& name) {
  Rng rng(13);
  ExactArray<double> history(static_cast<size_t>(skip_step_series::count * config.window));
  for (int64_t i = 0; i < config.window; ++i) {
    history[i] = rng.uniform(1.9, 2.1);
    history[config.window + i] = rng.uniform(0.8, 1.2);
  }
  ExactArray<int64_t> counters(std::vector<int64_t>{filled, head, filled, 0});
  ExactArray<float> result(skip_step_result::count);
  std::vector<double> host_history = history.copy();
  std::vector<int64_t> host_counters = counters.copy();
  std::vector<float> host_result = result.copy();
  for (int step = 0; step < steps; ++step) {
    const std::string what = "skip_step_update " + name + " step " + std::to_string(step);
    double loss = rng.uniform(1.9, 2.1), norm = rng.uniform(0.8, 1.2);
    if (step % 7 == 5) loss *= 50.0;
    if (step % 11 == 8) norm *= 100.0;
    if (step == steps / 2) norm = kNaN;
    if (step == steps / 2 + 2) loss = kInf;
    if (step == steps / 2 + 3) loss = -kInf;
    NormValue loss_value(loss_dtype, loss), norm_value(norm_dtype, norm);
    const cuda::SkipStepParams params{config,         loss_value.device(), norm_value.device(),
                                      history.data(), counters.data(),     result.data()};
    expect_launched(cuda::launch_skip_step_update(params, nullptr), what);
    skip_step_host(config, host_history.data(), host_counters.data(), host_result.data(), loss_value.host(),
                   norm_value.host());
    expect_same_bits(history, host_history, what + ": history");
    expect_same_bits(counters, host_counters, what + ": counters");
    expect_same_bits(result, host_result, what + ": result");
  }
  expect(counters[skip_step_counter::steps] == filled + steps, "skip_step_update " + name + ": steps counted");
  expect(counters[skip_step_counter::skipped] > 0, "skip_step_update " + name + ": some step skipped");
}

}  // namespace

void test_stats_kernels() {
  using P = NonfinitePolicy;
  ZClipConfig zscore{.alpha = 0.9,
                     .z_thresh = 2.5,
                     .max_grad_norm = 0,
                     .eps = 1e-6,
                     .clip_factor = 1.0,
                     .warmup_steps = 3,
                     .threshold_mode = ZClipThresholdMode::kZScore,
                     .clip_option = ZClipClipOption::kAdaptiveScaling,
                     .has_max_grad_norm = false,
                     .skip_update_on_spike = false,
                     .reference = false,
                     .policy = P::kSkip};
  test_zclip(zscore, DType::kFloat32, "zscore");
  ZClipConfig percentile = zscore;
  percentile.threshold_mode = ZClipThresholdMode::kPercentile, percentile.has_max_grad_norm = true,
  percentile.max_grad_norm = 5.0;
  percentile.warmup_steps = 1, percentile.policy = P::kZero;
  test_zclip(percentile, DType::kFloat64, "percentile, max_grad_norm");
  ZClipConfig to_mean = zscore;
  to_mean.clip_option = ZClipClipOption::kMean, to_mean.skip_update_on_spike = true, to_mean.reference = true;
  to_mean.warmup_steps = 4, to_mean.policy = P::kPropagate;
  test_zclip(to_mean, DType::kBFloat16, "clip to mean, skip on spike, reference");

  // Whole history with heaps that fill up ("full"); a window with lag; reference mode, poisoned.
  test_autoclip(AutoClipConfig{.q = 0.9, .whole_history = true, .lag = false, .reference = false, .policy = P::kSkip},
                4, 2, 0, DType::kFloat32, "whole history q=0.9");
  test_autoclip(AutoClipConfig{.q = 0.25, .whole_history = false, .lag = true, .reference = false, .policy = P::kZero},
                0, 0, 5, DType::kFloat64, "window of 5 q=0.25 lag");
  test_autoclip(
      AutoClipConfig{.q = 0.5, .whole_history = true, .lag = true, .reference = true, .policy = P::kPropagate}, 8, 8, 0,
      DType::kFloat16, "whole history q=0.5 lag reference");

  test_adagc(AdaGCConfig{.lambda_abs = 1.0,
                         .lambda_rel = 1.05,
                         .beta = 0.98,
                         .eps = 1e-6,
                         .warmup_steps = 2,
                         .reference = false,
                         .policy = P::kSkip},
             DType::kFloat32, "warmup 2");
  test_adagc(AdaGCConfig{.lambda_abs = 0.5,
                         .lambda_rel = 1.1,
                         .beta = 0.9,
                         .eps = 1e-6,
                         .warmup_steps = 0,
                         .reference = true,
                         .policy = P::kZero},
             DType::kFloat64, "no warmup, reference");

  test_skip_step(SkipStepConfig{.window = 1, .sigma = 6.0, .reference = false}, 0, 0, 12, DType::kFloat32,
                 DType::kFloat32, "window 1");
  test_skip_step(SkipStepConfig{.window = 5, .sigma = 3.0, .reference = true}, 0, 0, 12, DType::kFloat64,
                 DType::kBFloat16, "window 5, reference");
  test_skip_step(SkipStepConfig{.window = 16, .sigma = 6.0, .reference = false}, 0, 0, 40, DType::kFloat16,
                 DType::kFloat32, "window 16");
  test_skip_step(SkipStepConfig{.window = 300, .sigma = 6.0, .reference = true}, 300, 137, 20, DType::kFloat32,
                 DType::kFloat64, "window 300 full, reference");
  test_skip_step(SkipStepConfig{.window = 300, .sigma = 2.0, .reference = false}, 280, 280, 40, DType::kFloat64,
                 DType::kFloat32, "window 300 filling up");
}

}  // namespace selftest
}  // namespace fastclip
