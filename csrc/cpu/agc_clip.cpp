// NFNets unit-wise clipping on the CPU. A row of ordinary length is reduced (param and grad
// norms) and scaled by the same thread right away, so it is read from memory once and rewritten
// from cache. Rows too long for that (a huge 1-d tensor is one row) are cut into chunks: the
// chunks' partial sums are computed in parallel and combined in chunk order, then scaled in parallel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../common/agc_rows.h"
#include "../common/agc_step.h"
#include "../common/list_op_args.h"
#include "../common/list_plan.h"
#include "cpu_chunk_ops.h"
#include "cpu_registration.h"

namespace fastclip {
namespace cpu {
namespace {

constexpr int64_t kLongRow = 4 * kCpuChunkSize;

TensorMeta meta_of(const at::Tensor& t) {
  return TensorMeta{t.data_ptr(), t.numel(), static_cast<int32_t>(to_dtype(t.scalar_type())), 0};
}

double sum_of_squares(const TensorMeta& meta, int64_t begin, int64_t end) {
  if (static_cast<DType>(meta.dtype) == DType::kFloat64) return chunk_partial(NormKind::kL2, meta, begin, end, 2.0);
  return chunk_partial(NormKind::kL2, meta, begin, end, 2.0f);
}

struct Unit {  // one output row of one tensor
  TensorMeta grad, param;
  int64_t begin, end;  // elements of the row
  bool double_math;
  double factor(double param_sq, double grad_sq, double clip_factor, double eps) const {
    return double_math ? agc_factor<double>(std::sqrt(param_sq), std::sqrt(grad_sq), clip_factor, eps)
                       : agc_factor<float>(std::sqrt(param_sq), std::sqrt(grad_sq), clip_factor, eps);
  }
};

void agc_clip_cpu(at::TensorList grads, at::TensorList params, double clip_factor, double eps) {
  check_agc_clip_args(grads, params, clip_factor, eps);
  const AgcRows tensors = agc_rows_of(grads, params);
  std::vector<Unit> short_rows, long_rows;
  for (size_t i = 0; i < grads.size(); ++i) {
    const at::Tensor& g = tensors.grads[i];
    const int64_t rows = agc_num_rows(g.dim(), g.numel(), g.dim() ? g.size(0) : 1);
    const int64_t n = rows ? g.numel() / rows : 0;
    const bool double_math = g.scalar_type() == at::kDouble || params[i].scalar_type() == at::kDouble;
    for (int64_t r = 0; r < rows; ++r) {
      const Unit unit{meta_of(g), meta_of(tensors.params[i]), r * n, (r + 1) * n, double_math};
      (n > kLongRow ? long_rows : short_rows).push_back(unit);
    }
  }
  // Short rows: a few rows per task, each reduced and scaled while in cache.
  at::parallel_for(0, static_cast<int64_t>(short_rows.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const Unit& u = short_rows[k];
      const double f =
          u.factor(sum_of_squares(u.param, u.begin, u.end), sum_of_squares(u.grad, u.begin, u.end), clip_factor, eps);
      if (f != 1.0) chunk_scale(u.grad, u.begin, u.end, f);
    }
  });
  // Long rows: chunk partials in parallel, a fixed-order combine, then a parallel scale.
  for (const Unit& u : long_rows) {
    const int64_t chunks = (u.end - u.begin + kCpuChunkSize - 1) / kCpuChunkSize;
    std::vector<double> param_sq(chunks), grad_sq(chunks);
    auto chunk_begin = [&](int64_t c) { return u.begin + c * kCpuChunkSize; };
    auto chunk_end = [&](int64_t c) { return std::min(u.end, chunk_begin(c) + kCpuChunkSize); };
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        param_sq[c] = sum_of_squares(u.param, chunk_begin(c), chunk_end(c));
        grad_sq[c] = sum_of_squares(u.grad, chunk_begin(c), chunk_end(c));
      }
    });
    double p = 0.0, g = 0.0;
    for (int64_t c = 0; c < chunks; ++c) {
      p += param_sq[c];
      g += grad_sq[c];
    }
    const double f = u.factor(p, g, clip_factor, eps);
    if (f == 1.0) continue;
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) chunk_scale(u.grad, chunk_begin(c), chunk_end(c), f);
    });
  }
  copy_back(tensors.grads, grads);
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("agc_clip_", &fastclip::cpu::agc_clip_cpu);
}
