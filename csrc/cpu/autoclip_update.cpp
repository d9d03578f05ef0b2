#include <torch/library.h>

#include "cpu_entries.h"
#include "cpu_registration.h"

namespace fastclip {
namespace cpu {
namespace {

void run_autoclip_update(const AutoClipConfig& config, const AutoClipTensors& t) {
  const AutoClipBuffers buffers = autoclip_buffers(t);
  const EntryOutputs out = entry_outputs(t.entries);
  const double total = for_each_entry(t.entries, /*grain=*/64, [&](int64_t j, double norm, double total_norm) {
    autoclip_entry(config, buffers, out, j, norm, total_norm);
  });
  autoclip_finish(config, t.entries.result.data_ptr<float>(), out, t.entries.norms.numel(), total);
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("autoclip_update_", &fastclip::autoclip_update<fastclip::cpu::run_autoclip_update>);
}
