#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/stats_args.h"

namespace fastclip {
namespace cpu {
namespace {

void zclip_update_cpu(const at::Tensor& norm, at::Tensor& state, at::Tensor& result, double alpha, double z_thresh,
                      std::optional<double> max_grad_norm, double eps, int64_t warmup_steps, c10::string_view mode,
                      c10::string_view clip_option, double clip_factor, bool skip_update_on_spike,
                      c10::string_view on_nonfinite, bool reference) {
  const ZClipConfig config = zclip_config(norm, state, result, alpha, z_thresh, max_grad_norm, eps, warmup_steps,
                                          std::string(mode), std::string(clip_option), clip_factor,
                                          skip_update_on_spike, std::string(on_nonfinite), reference);
  zclip_step(config, state.data_ptr<double>(), norm.to(at::kDouble).item<double>(), result.data_ptr<float>());
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) { m.impl("zclip_update_", &fastclip::cpu::zclip_update_cpu); }
