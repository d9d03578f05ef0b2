// agc_clip through its launcher: 1-d and 2-d tensors, odd row lengths, grads and params of
// different dtypes, a row of zero params (the eps floor), rows long enough for the unrolled
// loop, rows long enough to be cut into segments; fewer blocks than units and more. Against
// timm's rule in double.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "selftest.h"

namespace fastclip {
namespace selftest {
namespace {

constexpr double kClipFactor = 0.5;
constexpr double kEps = 1e-3;

struct AgcSpec {
  DType grad_dtype, param_dtype;
  int64_t rows, row_length;  // a 1-d tensor is one row
  int misalign;
};

// Each row's grads are the params' scale times 1e-3 (well under clip_factor: untouched) or 100
// (well over: clipped), so float and double agree on every decision.
struct AgcCase {
  std::vector<std::unique_ptr<TensorBuffer>> grads, params;
  ExactArray<AgcTensor> table;
  std::vector<double> partials;
  int64_t total_rows = 0, short_rows = 0, total_segments = 0;

  explicit AgcCase(const std::vector<AgcSpec>& specs) {
    Rng rng(41);
    std::vector<AgcTensor> entries;
    for (const AgcSpec& spec : specs) {
      const int64_t numel = spec.rows * spec.row_length;
      grads.push_back(std::make_unique<TensorBuffer>(spec.grad_dtype, numel, spec.misalign));
      params.push_back(std::make_unique<TensorBuffer>(spec.param_dtype, numel, (spec.misalign + 3) % 8));
      TensorBuffer& g = *grads.back();
      TensorBuffer& p = *params.back();
      for (int64_t r = 0; r < spec.rows; ++r) {
        const double ratio = (total_rows + r) % 2 ? 100.0 : 1e-3;
        const bool zero_params = r == 1;  // the eps floor decides: clip_factor * eps = 5e-4, under the grads' norm
        for (int64_t i = r * spec.row_length; i < (r + 1) * spec.row_length; ++i) {
          p.set(i, zero_params ? 0.0 : rng.value(0));
          g.set(i, ratio * rng.value(0));
        }
      }
      AgcTensor entry{};
      entry.grad = g.data();
      entry.param = p.data();
      entry.num_rows = spec.rows;
      entry.row_length = spec.row_length;
      entry.grad_dtype = static_cast<int32_t>(spec.grad_dtype);
      entry.param_dtype = static_cast<int32_t>(spec.param_dtype);
      entries.push_back(entry);
      total_rows += spec.rows;
    }
    cuda::plan_agc_units(entries.data(), static_cast<int64_t>(entries.size()), &short_rows, &total_segments);
    table = ExactArray<AgcTensor>(entries);
    partials.assign(static_cast<size_t>(2 * total_segments), std::nan(""));
  }

  AgcParams params_for_launch() const {
    return AgcParams{table.data(),
                     static_cast<int32_t>(table.size()),
                     short_rows,
                     total_segments,
                     const_cast<double*>(partials.empty() ? nullptr : partials.data()),
                     kClipFactor,
                     kEps};
  }
};

// timm's adaptive_clip_grad for one row, in double.
std::vector<double> reference_row(const std::vector<double>& grad, const std::vector<double>& param) {
  double grad_sq = 0, param_sq = 0;
  for (size_t i = 0; i < grad.size(); ++i) grad_sq += grad[i] * grad[i], param_sq += param[i] * param[i];
  const double bound = std::max(std::sqrt(param_sq), kEps) * kClipFactor;
  const double grad_norm = std::sqrt(grad_sq);
  const double factor = grad_norm < bound ? 1.0 : bound / std::max(grad_norm, 1e-6);
  std::vector<double> out(grad);
  for (double& x : out) x *= factor;
  return out;
}

// Runs the case on `grid` blocks, checks it, and returns the clipped grads.
std::vector<std::vector<double>> test_agc(const std::vector<AgcSpec>& specs, int grid) {
  AgcCase c(specs);
  const std::string what = "agc_clip grid=" + std::to_string(grid) + " rows=" + std::to_string(c.total_rows) +
                           " segments=" + std::to_string(c.total_segments);
  std::vector<std::vector<double>> before;
  for (const auto& g : c.grads) before.push_back(g->values());
  expect_launched(cuda::launch_agc_clip(c.params_for_launch(), grid, nullptr), what);
  for (size_t t = 0; t < specs.size(); ++t) {
    const AgcSpec& spec = specs[t];
    const std::vector<double> param = c.params[t]->values();
    // Each row's sum of squares accumulates in float unless its data is float64 (the factor is
    // then in double if either is, but no more precise than the float sum).
    auto accumulated = [](DType dtype) { return dtype == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32; };
    const double rtol = tolerance({spec.grad_dtype, accumulated(spec.grad_dtype), accumulated(spec.param_dtype)});
    for (int64_t r = 0; r < spec.rows; ++r) {
      const auto begin = static_cast<size_t>(r * spec.row_length), end = begin + static_cast<size_t>(spec.row_length);
      const std::vector<double> want =
          reference_row(std::vector<double>(before[t].begin() + begin, before[t].begin() + end),
                        std::vector<double>(param.begin() + begin, param.begin() + end));
      for (size_t i = 0; i < want.size(); ++i) {
        const double got = c.grads[t]->get(static_cast<int64_t>(begin + i));
        expect_close(got, want[i], rtol, [&] {
          return what + ": tensor " + std::to_string(t) + " row " + std::to_string(r) + "[" + std::to_string(i) + "]";
        });
      }
    }
    expect(c.grads[t]->guard_intact() && c.params[t]->guard_intact(),
           what + ": wrote before tensor " + std::to_string(t));
  }
  std::vector<std::vector<double>> after;
  for (const auto& g : c.grads) after.push_back(g->values());
  return after;
}

}  // namespace

void test_agc_kernel() {
  using D = DType;
  const std::vector<AgcSpec> specs = {
      {D::kFloat32, D::kFloat32, 3, 7, 1},  // 2-d, odd rows
      {D::kFloat16, D::kFloat32, 1, 9, 3},  // 1-d: one row; grad and param dtypes differ
      {D::kBFloat16, D::kBFloat16, 5, 33, 5},
      {D::kFloat64, D::kFloat64, 4, 1, 1},  // rows of one element
      {D::kFloat32, D::kFloat32, 1, 1, 7},  // a 1-element 1-d tensor
      {D::kFloat16, D::kFloat16, 3, 17, 2},
      {D::kFloat32, D::kFloat64, 2, 2053, 3},  // over 256 vectors a row: the unrolled loop
      {D::kFloat64, D::kFloat32, 2, 1031, 1},
      {D::kFloat32, D::kBFloat16, 2, cuda::kAgcLongRow + 1001, 1},  // cut into segments, the last short
  };
  int64_t short_rows = 0, segments = 0;
  std::vector<AgcTensor> planned(specs.size());
  for (size_t i = 0; i < specs.size(); ++i)
    planned[i].num_rows = specs[i].rows, planned[i].row_length = specs[i].row_length;
  cuda::plan_agc_units(planned.data(), static_cast<int64_t>(planned.size()), &short_rows, &segments);
  expect(segments == 2 * 5, "agc_clip: a row of kAgcLongRow + 1001 elements is cut into 5 segments");
  // The units, and so the sums, do not depend on the grid: the same bits on any.
  expect(test_agc(specs, 3) == test_agc(specs, static_cast<int>(short_rows + segments) + 3),
         "agc_clip: the same bits on 3 blocks as on a block per row or segment");
}

}  // namespace selftest
}  // namespace fastclip
