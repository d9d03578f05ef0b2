// multi_tensor_norm (every NormKind, per-tensor norms on and off) and clip_grad_norm (the norm,
// then the clip by the total it wrote) through their launchers, against loops in double; and both
// on grads whose float sums overflow or underflow (norm_math.h's wide recompute).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../../common/norm_math.h"
#include "selftest.h"

namespace fastclip {
namespace selftest {
namespace {

void check_norm(const NormBuffers& buffers, const NormResult& expected, bool per_tensor, const std::string& what) {
  const double total_tolerance = tolerance({buffers.acc_dtype, buffers.total_dtype});
  expect_close(buffers.total.get(0), expected.total, total_tolerance, [&] { return what + ": total"; });
  if (!per_tensor) return;
  for (size_t t = 0; t < expected.per_tensor.size(); ++t) {
    const double got = buffers.per_tensor_norms.get(static_cast<int64_t>(t));
    expect_close(got, expected.per_tensor[t], tolerance(buffers.acc_dtype),
                 [&] { return what + ": tensor " + std::to_string(t); });
  }
}

void test_norm(const ListCase& list_case, double p, bool per_tensor, int grid) {
  Rng rng(17);
  TestList list(list_case.specs, list_case.chunk_size, rng);
  const std::string what = "multi_tensor_norm p=" + std::to_string(p) + (per_tensor ? " per-tensor" : "") +
                           " grid=" + std::to_string(grid) + " on " + list.describe();
  const NormResult expected = reference_norm(list.values(), p);
  NormBuffers buffers(list, p, per_tensor);
  expect_launched(cuda::launch_multi_tensor_norm(buffers.params, grid, nullptr), what);
  check_norm(buffers, expected, per_tensor, what);
  expect(buffers.blocks_done[0] == static_cast<unsigned>(grid), what + ": every block takes one ticket");
}

// The grads `before` scaled by min(max_norm / (total + 1e-6), 1), `total` the reference norm.
void check_clipped(const TestList& list, const std::vector<std::vector<double>>& before, double max_norm, double total,
                   const NormBuffers& buffers, const std::string& what) {
  const double coef = std::min(max_norm / (total + kClipEps), 1.0);
  // The coefficient is computed from the stored total, in float unless that is float64.
  const DType coef_dtype = buffers.total_dtype == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32;
  for (size_t t = 0; t < list.size(); ++t) {
    const double rtol = tolerance({list.tensor(t).dtype(), buffers.acc_dtype, buffers.total_dtype, coef_dtype});
    for (int64_t i = 0; i < list.tensor(t).numel(); ++i) {
      const double got = list.tensor(t).get(i), want = before[t][i] * coef;
      expect_close(got, want, rtol,
                   [&] { return what + ": tensor " + std::to_string(t) + "[" + std::to_string(i) + "]"; });
    }
  }
  list.expect_guards_intact(what);
}

// Runs the clip-grad-norm kernel(s) on `list` with max_norm half its norm (so it is clipped), then
// check_total(buffers, reference) and the clipped grads. With single_launch, one cooperative launch
// (its grid is what the layer runs at once, not `grid`); else two.
template <typename CheckTotal>
void run_clip_grad_norm(TestList& list, double p, int grid, bool single_launch, const std::string& what,
                        const CheckTotal& check_total) {
  const std::vector<std::vector<double>> before = list.values();
  const NormResult norm = reference_norm(before, p);
  const double max_norm = 0.5 * norm.total;
  NormBuffers buffers(list, p, /*per_tensor=*/false);
  const DeviceValues total{buffers.total.data(), static_cast<int32_t>(buffers.total_dtype)};
  const ClipByNormParams clip{list.list(), total, max_norm};
  expect_launched(cuda::launch_multi_tensor_clip_grad_norm(buffers.params, clip, grid, single_launch, nullptr), what);
  check_total(buffers, norm);
  check_clipped(list, before, max_norm, norm.total, buffers, what);
}

// clip_grad_norm_: the grads scaled by min(max_norm / (total + 1e-6), 1) of the total the norm
// kernel wrote.
void test_clip_grad_norm(const ListCase& list_case, double p, int grid, bool single_launch) {
  Rng rng(23);
  TestList list(list_case.specs, list_case.chunk_size, rng);
  const std::string what = "multi_tensor_clip_grad_norm p=" + std::to_string(p) +
                           (single_launch ? " single launch" : " grid=" + std::to_string(grid)) + " on " +
                           list.describe();
  run_clip_grad_norm(list, p, grid, single_launch, what, [&](const NormBuffers& buffers, const NormResult& norm) {
    check_norm(buffers, norm, /*per_tensor=*/false, what);
  });
}

// --- Grads whose float sums leave the safe range ---------------------------------------------
// Squares of 1e20 and 3e30 overflow a float, 12th powers of 3e30 a double; squares of 1e-25
// and 1e-30 underflow a float, 12th powers of 1e-25 leave a double's safe range and of 1e-30
// underflow it. Chunks of only such values, of such values among ordinary ones, and of zeros.

constexpr int64_t kWideChunk = 64;

// A tensor whose chunk c holds +-[0.25, 2) times chunk_scales[c % size], element i of the chunk
// taking scale i % (that chunk's scale count).
struct WideTensor {
  TensorSpec spec;
  std::vector<std::vector<double>> chunk_scales;
};

std::vector<WideTensor> wide_tensors(DType d) {
  return {
      {{d, 5 * kWideChunk + 5, 3}, {{1}, {1e20, 1, 1}, {0}, {1e-25}, {1e-25, 0, 1}}},
      {{d, kWideChunk, 0}, {{1e-30}}},  // every power underflows: the norm is ~1e-30
      {{d, 0, 2}, {}},
      {{d, 2 * kWideChunk + 2, 5}, {{3e30, 1e-25, 0, 1}, {1e20}, {0, 1e-25}}},
      {{d, 9, 1}, {{0}}},
      {{d, 40 * kWideChunk + 1, 7}, {{1}, {1e-25}, {0}, {1e20, 1e-25}}},  // 41 chunks: a warp folds them
  };
}

TestList wide_list(DType dtype) {
  const std::vector<WideTensor> tensors = wide_tensors(dtype);
  std::vector<TensorSpec> specs;
  for (const WideTensor& tensor : tensors) specs.push_back(tensor.spec);
  Rng rng(31);
  TestList list(specs, kWideChunk, rng);
  for (size_t t = 0; t < tensors.size(); ++t) {
    for (int64_t i = 0; i < list.tensor(t).numel(); ++i) {
      const std::vector<double>& scales = tensors[t].chunk_scales[(i / kWideChunk) % tensors[t].chunk_scales.size()];
      list.tensor(t).set(i, rng.value(/*zero_fraction=*/0) * scales[i % scales.size()]);
    }
  }
  return list;
}

// Float32 rounding, not tolerance()'s few: the wide recompute loses nothing. The per-tensor norms
// are float32 whatever the data; a bfloat16 total is rounded to bfloat16.
double wide_total_rtol(DType dtype) { return dtype == DType::kBFloat16 ? 4e-3 : 1e-6; }
constexpr double kWideTensorRtol = 1e-6;

void test_wide_norm(DType dtype, double p, int grid) {
  TestList list = wide_list(dtype);
  const std::string what = "multi_tensor_norm p=" + std::to_string(p) + " grid=" + std::to_string(grid) +
                           " on extreme magnitudes " + list.describe();
  const NormResult expected = reference_norm(list.values(), p);
  NormBuffers buffers(list, p, /*per_tensor=*/true);
  expect_launched(cuda::launch_multi_tensor_norm(buffers.params, grid, nullptr), what);
  expect_close(buffers.total.get(0), expected.total, wide_total_rtol(dtype), [&] { return what + ": total"; });
  for (size_t t = 0; t < list.size(); ++t) {
    expect_close(buffers.per_tensor_norms.get(static_cast<int64_t>(t)), expected.per_tensor[t], kWideTensorRtol,
                 [&] { return what + ": tensor " + std::to_string(t); });
  }
}

void test_wide_clip_grad_norm(DType dtype, double p) {
  TestList list = wide_list(dtype);
  const std::string what =
      "multi_tensor_clip_grad_norm p=" + std::to_string(p) + " single launch on extreme magnitudes " + list.describe();
  run_clip_grad_norm(
      list, p, /*grid=*/2, /*single_launch=*/true, what, [&](const NormBuffers& buffers, const NormResult& norm) {
        expect_close(buffers.total.get(0), norm.total, wide_total_rtol(dtype), [&] { return what + ": total"; });
      });
}

}  // namespace

void test_norm_kernels() {
  const double kPs[] = {2.0, 1.0, std::numeric_limits<double>::infinity(), 0.0, 3.0};
  for (const ListCase& list_case : list_cases()) {
    Rng rng(0);
    const int32_t num_chunks = TestList(list_case.specs, list_case.chunk_size, rng).num_chunks();
    for (const int grid : grids_for(num_chunks)) {
      for (const double p : kPs) {
        for (const bool per_tensor : {false, true}) test_norm(list_case, p, per_tensor, grid);
      }
      test_clip_grad_norm(list_case, 2.0, grid, /*single_launch=*/false);
      test_clip_grad_norm(list_case, 0.5, grid, /*single_launch=*/false);
    }
    // (The grid is the fallback's, should the cooperative launch be refused.)
    for (const double p : kPs) test_clip_grad_norm(list_case, p, grids_for(num_chunks)[0], /*single_launch=*/true);
  }
  for (const DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    for (const double p : {2.0, 12.0}) {
      for (const int grid : {1, 5}) test_wide_norm(dtype, p, grid);
      test_wide_clip_grad_norm(dtype, p);
    }
  }
}

}  // namespace selftest
}  // namespace fastclip
