// The stats ops' CUDA entry points share this host side: device guard and current stream; the
// step on the norms given (then the scale of the grads, when they are updated), or the norms of
// the grads computed in the step's own launch (clip_step.cuh). No host sync.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "../common/stats_op_args.h"
#include "device_list.h"
#include "device_runtime.h"

namespace fastclip {
namespace cuda {

// make_step(total, entry_norms) -> the Step struct, given the device tensors the step reads: the
// total, and the entries' norms (the per-tensor norms with want_per_tensor, else the total): those
// given, or those of the grads (update.grads). `factors` is where the step writes what `update`
// reads (update_factors).
template <typename MakeStep>
void run_clip_step(const std::optional<at::Tensor>& total, const std::optional<at::Tensor>& entry_norms,
                   double norm_type, bool want_per_tensor, const GradsUpdate& update, const float* factors,
                   const at::Device& device, const MakeStep& make_step) {
  const bool single_launch = single_launch_enabled();  // before anything is enqueued: it may throw
  const DeviceScope scope(device);
  if (total.has_value()) {
    const auto step = make_step(*total, entry_norms.value_or(*total));
    check_launch([&] { return launch_step(step, scope.stream()); });
    if (!update.active) return;
    const DeviceListPlan prepared = prepare_on_device(update.grads, scope);
    const ScaleParams scale = grads_scale_params(prepared, update, factors);
    check_launch([&] { return launch_multi_tensor_scale(scale, prepared.grid(), prepared.stream); });
    finish_mutation(prepared.plan, update.grads.tensors());
    return;
  }
  const DeviceListPlan prepared = prepare_on_device(update.grads, scope);
  const NormLaunch norm = norm_launch(prepared, norm_type, want_per_tensor);
  const auto step = make_step(norm.total, want_per_tensor ? norm.per_tensor_norms : norm.total);
  const ScaleParams scale = grads_scale_params(prepared, update, factors);
  check_launch(
      [&] { return launch_clip_step(norm.params, step, scale, prepared.grid(), single_launch, prepared.stream); });
  if (update.active) finish_mutation(prepared.plan, update.grads.tensors());
}

}  // namespace cuda
}  // namespace fastclip
