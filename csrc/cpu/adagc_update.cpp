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
  const EntryOutputs out = entry_outputs(t.entries);
  const StepNorms norms = entry_norms(t.entries);
  const double total = for_each_entry(norms, /*grain=*/256, [&](int64_t j, double norm, double total_norm) {
    adagc_entry(config, gamma, finite_steps, out, j, norm, total_norm);
  });
  float* result = t.entries.result.data_ptr<float>();
  adagc_finish(config, steps, result, out, t.entries.num_entries(), total);
  update_grads(t.entries.grads, norms, update, update_factors(update, result, out.coef));
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("adagc_update_", &fastclip::adagc_update<fastclip::cpu::run_adagc_update>);
}
