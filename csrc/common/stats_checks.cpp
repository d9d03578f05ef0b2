#include "stats_checks.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fastclip {
namespace {

// The choice named `value` among `choices`; else an error listing them: "<arg> must be 'a', 'b'
// or 'c'<note>, got '<value>'".
template <typename Enum>
Enum parse_choice(std::string_view value, const char* arg,
                  std::initializer_list<std::pair<std::string_view, Enum>> choices, const char* note = "") {
  for (const auto& [name, choice] : choices) {
    if (value == name) return choice;
  }
  std::string names;
  size_t i = 0;
  for (const auto& choice : choices) {
    if (i > 0) names += i + 1 == choices.size() ? " or " : ", ";
    names.append("'").append(choice.first).append("'");
    ++i;
  }
  TORCH_CHECK(false, "fastclip: ", arg, " must be ", names, note, ", got '", value, "'");
}

}  // namespace

NonfinitePolicy parse_nonfinite_policy(c10::string_view on_nonfinite) {
  return parse_choice<NonfinitePolicy>(
      on_nonfinite, "on_nonfinite",
      {{"skip", NonfinitePolicy::kSkip}, {"zero", NonfinitePolicy::kZero}, {"propagate", NonfinitePolicy::kPropagate}},
      " in the op ('error' is handled by the Python clipper)");
}

ZClipThresholdMode parse_zclip_threshold_mode(c10::string_view threshold_mode) {
  return parse_choice<ZClipThresholdMode>(
      threshold_mode, "mode",
      {{"zscore", ZClipThresholdMode::kZScore}, {"percentile", ZClipThresholdMode::kPercentile}});
}

ZClipClipOption parse_zclip_clip_option(c10::string_view clip_option) {
  return parse_choice<ZClipClipOption>(
      clip_option, "clip_option",
      {{"adaptive_scaling", ZClipClipOption::kAdaptiveScaling}, {"mean", ZClipClipOption::kMean}});
}

void check_state_tensor(const at::Tensor& t, const char* arg, at::ScalarType dtype, const at::Device& device,
                        int64_t numel, const char* device_of) {
  TORCH_CHECK(t.defined(), "fastclip: ", arg, " is undefined");
  TORCH_CHECK(t.layout() == at::kStrided, "fastclip: ", arg, " must be a dense (strided) tensor");
  TORCH_CHECK(t.scalar_type() == dtype, "fastclip: ", arg, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == device, "fastclip: ", arg, " is on ", t.device(), " but ", device_of, " on ", device);
  TORCH_CHECK(t.is_contiguous(), "fastclip: ", arg, " must be contiguous");
  TORCH_CHECK(numel < 0 || t.numel() == numel, "fastclip: ", arg, " must hold ", numel, " elements, got shape ",
              t.sizes());
}

void check_norm_tensor(const at::Tensor& t, const char* arg, int64_t numel) {
  TORCH_CHECK(t.defined(), "fastclip: ", arg, " is undefined");
  TORCH_CHECK(t.layout() == at::kStrided, "fastclip: ", arg, " must be a dense (strided) tensor");
  TORCH_CHECK(is_supported_dtype(t.scalar_type()), "fastclip: ", arg,
              " must be float32, float16, bfloat16 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "fastclip: ", arg, " must be contiguous");
  TORCH_CHECK(numel < 0 || t.numel() == numel, "fastclip: ", arg, " must hold ", numel, " elements, got shape ",
              t.sizes());
}

void check_nonnegative_count(int64_t value, const char* arg, const char* note) {
  TORCH_CHECK(value >= 0, "fastclip: ", arg, " must be >= 0", note, ", got ", value);
}

void check_open_unit_interval(double value, const char* arg) {
  TORCH_CHECK(value > 0.0 && value < 1.0, "fastclip: ", arg, " must lie in (0, 1), got ", value);
}

void check_rows(const at::Tensor& rows, int64_t entries, int64_t num_rows, const at::Device& device, bool distinct) {
  check_state_tensor(rows, "rows", at::kLong, device, entries);
  if (!rows.is_cpu() || rows.numel() == 0) return;
  const int64_t* first = rows.const_data_ptr<int64_t>();
  const int64_t* last = first + rows.numel();
  const auto [low, high] = std::minmax_element(first, last);
  TORCH_CHECK(*low >= 0 && *high < num_rows, "fastclip: rows must lie in [0, ", num_rows, ")");
  if (distinct) {
    std::vector<int64_t> sorted(first, last);
    std::sort(sorted.begin(), sorted.end());
    TORCH_CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(), "fastclip: rows must be distinct");
  }
}

void check_entry_outputs(const at::Tensor& result, const at::Tensor& coef, const at::Tensor& threshold, int64_t entries,
                         const at::Device& device) {
  check_state_tensor(result, "result", at::kFloat, device, result_slot::count);
  check_state_tensor(coef, "coef", at::kFloat, device, entries);
  check_state_tensor(threshold, "threshold", at::kFloat, device, entries);
}

CheckedList check_grads_on(at::TensorList grads, bool mutated, const at::Device& device) {
  CheckedList checked = check_tensor_list(grads, "grads", mutated);
  if (!grads.empty()) {
    TORCH_CHECK(grads[0].device() == device, "fastclip: grads are on ", grads[0].device(), " but the state is on ",
                device);
  }
  return checked;
}

}  // namespace fastclip
