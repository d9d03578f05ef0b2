// skip_step_update_: StepSkipper's decision (common/skip_step.h: OLMo-core's rule, float64
// statistics): keep (result's factor 1) or skip (0) the step of this loss and norm (one float
// each, any float dtype) against the mean and unbiased std of the last `window` earlier values,
// one-sided, at `sigma` stds, then add them to history (float64 [2, window], losses then norms, a
// ring buffer) and advance counters (int64, layouts.h's skip_step_counters). Default mode skips a
// non-finite loss or norm and keeps it out of the history; reference is OLMo-core's rule exactly.
// result: float32, layouts.h's skip_step_result. No grads, no host sync.
#include "op_library.h"

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_op(
      m,
      "skip_step_update_(Tensor loss, Tensor norm, Tensor(a!) history, Tensor(b!) counters, Tensor(c!) result, "
      "int window, float sigma, bool reference) -> ()");
}
