// stable_spam_update_: Stable-SPAM's step on stable_spam_norms' two results (stats, split):
// every tensor's statistics updated, a factor and a threshold per grad, steps[0] counting calls;
// then each grad's elements above its threshold are scaled by AdaClip's ratio times AdaGN's
// factor, the others by the factor, in one pass. total_steps and reset_every: 0 for none.
#include "op_library.h"

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_op(
      m,
      "stable_spam_update_(Tensor(a!)[] grads, Tensor stats, Tensor split, Tensor rows, Tensor(b!) state, "
      "Tensor(c!) steps, Tensor(d!) result, Tensor(e!) coef, Tensor(f!) threshold, float gamma1, float gamma2, "
      "float gamma3, float eps, int total_steps, float eta_min, int reset_every, str on_nonfinite, "
      "bool reference) -> ()");
}
