#include <torch/library.h>

#include "cpu_registration.h"
#include "cpu_steps.h"

namespace fastclip {
namespace cpu {
namespace {

void run_autoclip_update(const AutoClipConfig& config, const AutoClipTensors& t, const GradsUpdate& update) {
  const AutoClipBuffers buffers = autoclip_buffers(t);
  const EntryOutputs out = entry_outputs(t.entries);
  const StepNorms norms = entry_norms(t.entries);
  const double total = for_each_entry(norms, /*grain=*/64, [&](int64_t j, double norm, double total_norm) {
    autoclip_entry(config, buffers, out, j, norm, total_norm);
  });
  float* result = t.entries.result.data_ptr<float>();
  autoclip_finish(config, result, out, t.entries.num_entries(), total);
  update_grads(t.entries.grads, norms, update, update_factors(update, result, out.coef));
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("autoclip_update_", &fastclip::autoclip_update<fastclip::cpu::run_autoclip_update>);
}
