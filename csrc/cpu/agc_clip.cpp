// NFNets unit-wise clipping on the CPU: each output row is reduced (param and grad norms) and
// scaled by the same thread right away, so the row is read from memory once and rewritten from cache.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../common/agc_math.h"
#include "../common/stats_args.h"

namespace fastclip {
namespace cpu {
namespace {

// A tensor whose output rows are contiguous blocks (dim 0 outermost, any order inside a row) is
// used in place; anything else through a contiguous copy.
bool rows_are_blocks(const at::Tensor& t) {
  return t.is_non_overlapping_and_dense() && (t.dim() <= 1 || t.numel() == 0 || t.stride(0) == t.numel() / t.size(0));
}

template <typename scalar_t>
double row_sum_of_squares(const scalar_t* x, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(x[i]);
    sum += v * v;
  }
  return sum;
}

double sum_of_squares(const at::Tensor& t, int64_t offset, int64_t n) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "agc_norm", [&] {
    return row_sum_of_squares(t.const_data_ptr<scalar_t>() + offset, n);
  });
}

void scale_row(at::Tensor& t, int64_t offset, int64_t n, double factor) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "agc_scale", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    scalar_t* x = t.mutable_data_ptr<scalar_t>() + offset;
    const opmath_t f = static_cast<opmath_t>(factor);
    for (int64_t i = 0; i < n; ++i) x[i] = static_cast<scalar_t>(static_cast<opmath_t>(x[i]) * f);
  });
}

struct RowTask {
  int32_t tensor;
  int64_t row;
};

void agc_clip_cpu(at::TensorList grads, at::TensorList params, double clip_factor, double eps) {
  check_agc_args(grads, params, clip_factor, eps);
  std::vector<at::Tensor> grad_rows(grads.size()), param_rows(params.size());
  std::vector<RowTask> tasks;
  for (size_t i = 0; i < grads.size(); ++i) {
    grad_rows[i] = rows_are_blocks(grads[i]) ? grads[i] : grads[i].contiguous();
    param_rows[i] = rows_are_blocks(params[i]) ? params[i] : params[i].contiguous();
    for (int64_t r = 0; r < agc_num_rows(grads[i].dim(), grads[i].numel(), grads[i].dim() ? grads[i].size(0) : 1); ++r) {
      tasks.push_back({static_cast<int32_t>(i), r});
    }
  }
  at::parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      at::Tensor& g = grad_rows[tasks[k].tensor];
      const at::Tensor& p = param_rows[tasks[k].tensor];
      const int64_t rows = agc_num_rows(g.dim(), g.numel(), g.dim() ? g.size(0) : 1);
      const int64_t n = g.numel() / rows;
      const int64_t offset = tasks[k].row * n;
      const bool double_math = g.scalar_type() == at::kDouble || p.scalar_type() == at::kDouble;
      const double param_norm = std::sqrt(sum_of_squares(p, offset, n));
      const double grad_norm = std::sqrt(sum_of_squares(g, offset, n));
      const double factor = double_math ? agc_factor<double>(param_norm, grad_norm, clip_factor, eps)
                                        : agc_factor<float>(param_norm, grad_norm, clip_factor, eps);
      if (factor != 1.0) scale_row(g, offset, n, factor);
    }
  });
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!grad_rows[i].is_same(grads[i])) grads[i].copy_(grad_rows[i]);
  }
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) { m.impl("agc_clip_", &fastclip::cpu::agc_clip_cpu); }
