#include <torch/library.h>

#include "cpu_registration.h"
#include "cpu_steps.h"

namespace fastclip {
namespace cpu {
namespace {

void run_adagc_update(const AdaGCConfig& config, const AdaGCTensors& t, const GradsUpdate& update) {
  double* gamma = t.gamma.data_ptr<double>();
  double* steps = t.steps.data_ptr<double>();
  const double finite_steps = steps[0];
  run_per_entry_step(
      t.entries, update, /*grain=*/256,
      [&](const EntryOutputs& out, int64_t j, double norm, double total) {
        adagc_entry(config, gamma, finite_steps, out, j, norm, total);
      },
      [&](float* result, const EntryOutputs& out, int64_t entries, double total) {
        adagc_finish(config, steps, result, out, entries, total);
      });
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("adagc_update_", &fastclip::adagc_update<fastclip::cpu::run_adagc_update>);
}
