// normclip_update_: a fixed threshold as a clipper's step (common/normclip_step.h): torch's
// min(max_norm / (norm + 1e-6), 1) in float32, the norm of order norm_type.
// The contract every clipper step shares is in op_library.h.
#include "op_library.h"

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_op_with_held(
      m,
      "normclip_update_(Tensor(a!)[] grads, Tensor? norm, Tensor(b!) result, float max_norm, float norm_type, "
      "str on_nonfinite, bool scale_grads) -> ()");
}
