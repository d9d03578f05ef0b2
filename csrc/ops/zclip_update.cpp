// zclip_update_: ZClip's step (common/zclip_step.h).
// The contract every clipper step shares is in op_library.h.
// state: float64, layouts.h's zclip_state header then warmup_steps norms.
#include "op_library.h"

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_op_with_held(
      m,
      "zclip_update_(Tensor(a!)[] grads, Tensor? norm, Tensor(b!) state, Tensor(c!) result, float alpha, "
      "float z_thresh, float? max_grad_norm, float eps, int warmup_steps, str threshold_mode, str clip_option, "
      "float clip_factor, bool skip_update_on_spike, str on_nonfinite, bool reference, bool scale_grads) -> ()");
}
