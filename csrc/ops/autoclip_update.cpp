// autoclip_update_: AutoClip's step (common/autoclip_step.h).
// The contract every clipper step shares is in op_library.h.
// norms[j] belongs to history rows[j]; rows must be distinct (checked for CPU tensors; on CUDA
// the caller's duty, as checking would sync, and two entries of one row race). Computed norms: an entry per grad
// with per_tensor, else one entry, the total (row 0). Whole history when window has zero columns:
// lower/upper are float32 heaps, [H, capacity]; else window is a float32 ring buffer
// [H, history_size]. counters: int64 [H, layouts.h's autoclip_counters].
#include "op_library.h"

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_op_with_held(
      m,
      "autoclip_update_(Tensor(a!)[] grads, Tensor? total_norm, Tensor? norms, Tensor rows, Tensor(b!) lower, "
      "Tensor(c!) upper, Tensor(d!) window, Tensor(e!) counters, Tensor(f!) result, Tensor(g!) coef, "
      "Tensor(h!) threshold, float percentile, bool lag, str on_nonfinite, bool reference, bool per_tensor, "
      "bool scale_grads) -> ()");
}
