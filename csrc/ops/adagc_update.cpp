// adagc_update_: AdaGC's step (common/adagc_step.h).
// The contract every clipper step shares is in op_library.h.
// gamma: float64 [H, layouts.h's adagc_gamma], rows as autoclip_update_'s (an entry per grad,
// distinct: checked for CPU tensors only); steps: float64 [1], finite steps so far.
#include "op_library.h"

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_op_with_held(
      m,
      "adagc_update_(Tensor(a!)[] grads, Tensor? total_norm, Tensor? norms, Tensor rows, Tensor(b!) gamma, "
      "Tensor(c!) steps, Tensor(d!) result, Tensor(e!) coef, Tensor(f!) threshold, float lambda_abs, "
      "float lambda_rel, float beta, int warmup_steps, float eps, str on_nonfinite, bool reference, "
      "bool scale_grads) -> ()");
}
