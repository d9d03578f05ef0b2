// multi_tensor_clip_by_norm_: tensors *= min(max_norm / (total_norm + 1e-6), 1), torch's
// clip_grads_with_norm_, with the coefficient computed on the device from total_norm.
#include "op_library.h"

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_list_op_with_held<void(const at::Tensor&, double)>(
      m, "multi_tensor_clip_by_norm_(Tensor(a!)[] tensors, Tensor total_norm, float max_norm) -> ()");
}
