// multi_tensor_clip_grad_norm_: multi_tensor_norm and multi_tensor_clip_by_norm_ in one call
// (clip_grad_norm_): returns the pre-clip total norm in the promoted dtype and scales the tensors
// in place by torch's coefficient computed from it.
#include "op_library.h"

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_list_op_with_held<at::Tensor(double, double)>(
      m, "multi_tensor_clip_grad_norm_(Tensor(a!)[] tensors, float max_norm, float norm_type) -> Tensor");
}
