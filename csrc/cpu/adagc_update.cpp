#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../common/stats_args.h"

namespace fastclip {
namespace cpu {
namespace {

void adagc_update_cpu(const at::Tensor& total_norm, const at::Tensor& norms, const at::Tensor& rows, at::Tensor& gamma,
                      at::Tensor& steps, at::Tensor& result, at::Tensor& coef, at::Tensor& threshold, double lambda_abs,
                      double lambda_rel, double beta, int64_t warmup_steps, double eps, c10::string_view on_nonfinite,
                      bool reference) {
  const AdaGCConfig config = adagc_config(total_norm, norms, rows, gamma, steps, result, coef, threshold, lambda_abs,
                                          lambda_rel, beta, warmup_steps, eps, std::string(on_nonfinite), reference);
  const double total = total_norm.to(at::kDouble).item<double>();
  const at::Tensor norms64 = norms.to(at::kDouble).contiguous();
  const double* norm = norms64.data_ptr<double>();
  double* gamma_data = gamma.data_ptr<double>();
  double* step_count = steps.data_ptr<double>();
  const EntryOutputs out{rows.data_ptr<int64_t>(), gamma.size(0), coef.data_ptr<float>(), threshold.data_ptr<float>()};
  at::parallel_for(0, norms.numel(), 256, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) adagc_entry(config, gamma_data, step_count[0], out, j, norm[j], total);
  });
  adagc_finish(config, step_count, result.data_ptr<float>(), out, norms.numel(), total);
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) { m.impl("adagc_update_", &fastclip::cpu::adagc_update_cpu); }
