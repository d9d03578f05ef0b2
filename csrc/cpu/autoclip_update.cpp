#include <torch/library.h>

#include "cpu_registration.h"
#include "cpu_steps.h"

namespace fastclip {
namespace cpu {
namespace {

void run_autoclip_update(const AutoClipConfig& config, const AutoClipTensors& t, const GradsUpdate& update) {
  const AutoClipBuffers buffers = autoclip_buffers(t);
  run_per_entry_step(
      t.entries, update, /*grain=*/64,
      [&](const EntryOutputs& out, int64_t j, double norm, double total) {
        autoclip_entry(config, buffers, out, j, norm, total);
      },
      [&](float* result, const EntryOutputs& out, int64_t entries, double total) {
        autoclip_finish(config, result, out, entries, total);
      });
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("autoclip_update_", &fastclip::autoclip_update<fastclip::cpu::run_autoclip_update>);
}
