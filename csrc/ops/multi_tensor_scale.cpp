// multi_tensor_scale_: tensors[i] *= scale (0-d, or scale[i] when scale holds one value per
// tensor). A coefficient of exactly 1 writes nothing. With clear_on_zero, a factor of exactly 0
// stores zeros (NaN and inf included) instead of multiplying: the clippers' on_nonfinite="zero".
#include "op_library.h"

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_list_op_with_held<void(const at::Tensor&, bool)>(
      m, "multi_tensor_scale_(Tensor(a!)[] tensors, Tensor scale, bool clear_on_zero=False) -> ()");
}
