// stable_spam_update_ on CUDA: checks, device guard, current stream, the step's kernel then the
// grads' update. No host sync.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/stable_spam_op_args.h"
#include "device_list.h"
#include "device_runtime.h"
#include "stable_spam_kernels.h"

namespace fastclip {
namespace cuda {
namespace {

void run_stable_spam_update(const StableSPAMConfig& config, const StableSPAMTensors& t) {
  const DeviceScope scope(t.state.device());
  const int64_t n = t.num_entries();
  // One SpamApply (three doubles) per entry, written by the step, read by the update.
  static_assert(sizeof(SpamApply) == 3 * sizeof(double), "SpamApply is three doubles");
  at::Tensor apply = at::empty({3 * n}, at::TensorOptions().dtype(at::kDouble).device(t.state.device()));
  StableSPAMStepParams step{config,
                            t.stats.const_data_ptr<double>(),
                            t.split.const_data_ptr<double>(),
                            t.state.data_ptr<double>(),
                            t.steps.data_ptr<double>(),
                            stable_spam_outputs(t),
                            t.result.data_ptr<float>(),
                            reinterpret_cast<SpamApply*>(apply.data_ptr<double>()),
                            n};
  if (t.grads.empty()) {
    check_launch([&] { return launch_stable_spam_update(step, StableSPAMApplyParams{}, 1, scope.stream()); });
    return;
  }
  const DeviceListPlan prepared = prepare_on_device(t.grads, scope);
  const StableSPAMApplyParams update{prepared.list, step.apply, config.policy == NonfinitePolicy::kZero};
  check_launch([&] { return launch_stable_spam_update(step, update, prepared.grid(), prepared.stream); });
  finish_mutation(prepared.plan, t.grads.tensors());
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("stable_spam_update_", &fastclip::stable_spam_update<fastclip::cuda::run_stable_spam_update>);
}
