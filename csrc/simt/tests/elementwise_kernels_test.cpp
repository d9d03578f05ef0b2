// The in-place list kernels through their launchers: multi_tensor_scale (one factor of each
// dtype, per-tensor factors, clear_on_zero), multi_tensor_clip_by_norm and multi_tensor_clamp,
// on lists holding a NaN and infinities, against the same maps in double.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "../../common/norm_math.h"
#include "selftest.h"

namespace fastclip {
namespace selftest {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Puts a NaN, +inf and -inf into the list's longest tensors (every map must carry them through).
void add_nonfinite(TestList& list) {
  for (size_t t = 0; t < list.size(); ++t) {
    TensorBuffer& x = list.tensor(t);
    if (x.numel() >= 3) {
      x.set(x.numel() / 2, kNaN);
      x.set(0, kInf);
      x.set(x.numel() - 1, -kInf);
      return;
    }
  }
}

// expected(tensor, x): what an element of `tensor` holding x must become.
using Expected = std::function<double(size_t tensor, double x)>;

// Runs launch() on a fresh copy of the case's list and checks every element. `coef_dtype`: the
// dtype the kernel computes its coefficient in, whose tolerance applies too.
void check_map(const ListCase& list_case, int grid, const std::string& op,
               const std::function<cudaError_t(const ChunkList&, int)>& launch, const Expected& expected,
               DType coef_dtype = DType::kFloat64) {
  Rng rng(31);
  TestList list(list_case.specs, list_case.chunk_size, rng);
  add_nonfinite(list);
  const std::string what = op + " grid=" + std::to_string(grid) + " on " + list.describe();
  const std::vector<std::vector<double>> before = list.values();
  expect_launched(launch(list.list(), grid), what);
  for (size_t t = 0; t < list.size(); ++t) {
    const double rtol = tolerance({list.tensor(t).dtype(), coef_dtype});
    for (int64_t i = 0; i < list.tensor(t).numel(); ++i) {
      const double got = list.tensor(t).get(i), want = expected(t, before[t][i]);
      expect_close(got, want, rtol,
                   [&] { return what + ": tensor " + std::to_string(t) + "[" + std::to_string(i) + "]"; });
    }
  }
  list.expect_guards_intact(what);
}

double scaled(double x, double factor, bool clear_on_zero) { return clear_on_zero && factor == 0 ? 0.0 : x * factor; }

void test_scale(const ListCase& list_case, int grid) {
  // One factor, stored in each dtype (the kernel reads it as stored).
  for (const DType dtype : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16}) {
    TensorBuffer factor(dtype, 1, 3);
    factor.set(0, 0.37);
    const double f = factor.get(0);
    const std::string op = std::string("multi_tensor_scale by ") + dtype_name(dtype) + " 0.37";
    check_map(
        list_case, grid, op,
        [&](const ChunkList& list, int blocks) {
          const ScaleParams params{list, DeviceValues{factor.data(), static_cast<int32_t>(dtype)}, false, false};
          return cuda::launch_multi_tensor_scale(params, blocks, nullptr);
        },
        [&](size_t, double x) { return x * f; });
  }
  // A factor of exactly 0 (NaN and inf become 0 with clear_on_zero) and exactly 1 (nothing written).
  for (const double f : {0.0, 1.0}) {
    for (const bool clear_on_zero : {false, true}) {
      TensorBuffer factor(DType::kFloat32, 1, 0);
      factor.set(0, f);
      const std::string op = "multi_tensor_scale by " + std::to_string(f) + (clear_on_zero ? " clear_on_zero" : "");
      check_map(
          list_case, grid, op,
          [&](const ChunkList& list, int blocks) {
            const ScaleParams params{list, DeviceValues{factor.data(), static_cast<int32_t>(DType::kFloat32)}, false,
                                     clear_on_zero};
            return cuda::launch_multi_tensor_scale(params, blocks, nullptr);
          },
          [&](size_t, double x) { return scaled(x, f, clear_on_zero); });
    }
  }
  // One factor per tensor (an exact-size array of them), 0 and 1 among them.
  Rng rng(0);
  const size_t num_tensors = TestList(list_case.specs, list_case.chunk_size, rng).size();
  const double kFactors[] = {0.5, 1.0, 0.0, 1.75, 0.125, 3.0};
  for (const bool clear_on_zero : {false, true}) {
    TensorBuffer factors(DType::kFloat64, static_cast<int64_t>(num_tensors), 1);
    for (size_t t = 0; t < num_tensors; ++t) factors.set(static_cast<int64_t>(t), kFactors[t % 6]);
    check_map(
        list_case, grid, std::string("multi_tensor_scale per tensor") + (clear_on_zero ? " clear_on_zero" : ""),
        [&](const ChunkList& list, int blocks) {
          const ScaleParams params{list, DeviceValues{factors.data(), static_cast<int32_t>(DType::kFloat64)}, true,
                                   clear_on_zero};
          return cuda::launch_multi_tensor_scale(params, blocks, nullptr);
        },
        [&](size_t t, double x) { return scaled(x, kFactors[t % 6], clear_on_zero); });
  }
}

// torch's clip_grads_with_norm_: x * min(max_norm / (total + 1e-6), 1), the coefficient in
// float unless the total norm is float64.
void test_clip_by_norm(const ListCase& list_case, int grid) {
  for (const DType dtype : {DType::kFloat32, DType::kFloat64, DType::kBFloat16}) {
    for (const double max_norm : {3.0, 100.0}) {
      TensorBuffer total(dtype, 1, 1);
      total.set(0, 10.0);
      const double coef = std::min(max_norm / (total.get(0) + kClipEps), 1.0);
      const std::string op =
          std::string("multi_tensor_clip_by_norm total ") + dtype_name(dtype) + " max_norm " + std::to_string(max_norm);
      check_map(
          list_case, grid, op,
          [&](const ChunkList& list, int blocks) {
            const ClipByNormParams params{list, DeviceValues{total.data(), static_cast<int32_t>(dtype)}, max_norm};
            return cuda::launch_multi_tensor_clip_by_norm(params, blocks, nullptr);
          },
          [&](size_t, double x) { return x * coef; }, dtype == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32);
    }
  }
}

// clip_grad_value_: clamp to [-bound, bound]; NaN stays NaN.
void test_clamp(const ListCase& list_case, int grid) {
  for (const double bound : {0.8, 0.0}) {
    check_map(
        list_case, grid, "multi_tensor_clamp bound " + std::to_string(bound),
        [&](const ChunkList& list, int blocks) {
          return cuda::launch_multi_tensor_clamp(ClampParams{list, bound}, blocks, nullptr);
        },
        [&](size_t, double x) { return std::isnan(x) ? x : std::min(std::max(x, -bound), bound); });
  }
}

}  // namespace

void test_elementwise_kernels() {
  for (const ListCase& list_case : list_cases()) {
    Rng rng(0);
    const int32_t num_chunks = TestList(list_case.specs, list_case.chunk_size, rng).num_chunks();
    for (const int grid : grids_for(num_chunks)) {
      test_scale(list_case, grid);
      test_clip_by_norm(list_case, grid);
      test_clamp(list_case, grid);
    }
  }
}

}  // namespace selftest
}  // namespace fastclip
