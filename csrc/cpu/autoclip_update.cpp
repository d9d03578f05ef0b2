#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../common/stats_args.h"

namespace fastclip {
namespace cpu {
namespace {

void autoclip_update_cpu(const at::Tensor& total_norm, const at::Tensor& norms, const at::Tensor& rows,
                         at::Tensor& lower, at::Tensor& upper, at::Tensor& window, at::Tensor& counters,
                         at::Tensor& result, at::Tensor& coef, at::Tensor& threshold, double percentile, bool lag,
                         c10::string_view on_nonfinite, bool reference) {
  const AutoClipConfig config = autoclip_config(total_norm, norms, rows, lower, upper, window, counters, result, coef,
                                                threshold, percentile, lag, std::string(on_nonfinite), reference);
  const double total = total_norm.to(at::kDouble).item<double>();
  const at::Tensor norms64 = norms.to(at::kDouble).contiguous();
  const double* norm = norms64.data_ptr<double>();
  const AutoClipBuffers buffers{lower.data_ptr<float>(), lower.size(1),        upper.data_ptr<float>(), upper.size(1),
                                window.data_ptr<float>(), window.size(1), counters.data_ptr<int64_t>()};
  const EntryOutputs out{rows.data_ptr<int64_t>(), counters.size(0), coef.data_ptr<float>(),
                         threshold.data_ptr<float>()};
  // Entries own distinct rows (the Python clipper passes each tensor once), so they run in parallel.
  at::parallel_for(0, norms.numel(), 64, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) autoclip_entry(config, buffers, out, j, norm[j], total);
  });
  autoclip_finish(config, result.data_ptr<float>(), out, norms.numel(), total);
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) { m.impl("autoclip_update_", &fastclip::cpu::autoclip_update_cpu); }
