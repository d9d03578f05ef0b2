#include <torch/library.h>

#include "cpu_entries.h"
#include "cpu_registration.h"

namespace fastclip {
namespace cpu {
namespace {

void run_adagc_update(const AdaGCConfig& config, const AdaGCTensors& t) {
  double* gamma = t.gamma.data_ptr<double>();
  double* steps = t.steps.data_ptr<double>();
  const double finite_steps = steps[0];
  const EntryOutputs out = entry_outputs(t.entries);
  const double total = for_each_entry(t.entries, /*grain=*/256, [&](int64_t j, double norm, double total_norm) {
    adagc_entry(config, gamma, finite_steps, out, j, norm, total_norm);
  });
  adagc_finish(config, steps, t.entries.result.data_ptr<float>(), out, t.entries.norms.numel(), total);
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("adagc_update_", &fastclip::adagc_update<fastclip::cpu::run_adagc_update>);
}
