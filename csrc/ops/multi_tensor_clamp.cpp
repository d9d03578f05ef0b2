// multi_tensor_clamp_: clamps every element to [-clip_value, clip_value] in place
// (clip_grad_value_).
#include "op_library.h"

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_op(m, "multi_tensor_clamp_(Tensor(a!)[] tensors, float clip_value) -> ()");
}
