// stable_spam_norms: the statistics Stable-SPAM's AdaClip and AdaGN read (common/
// stable_spam_step.h); state: float64 [H, layouts.h's stable_spam_row], rows[i] the row of
// grads[i], distinct (checked for CPU tensors; on CUDA the caller's duty: checking would sync,
// and two entries of one row race). Returns float64 [2, len(grads)]: without maxima, each grad's
// largest magnitude and sum of squares; given maxima (a first call's, reduced across ranks), each
// grad's sums of squares over the elements at most and above its AdaClip threshold (zeros, the
// grad unread, where AdaClip rescales nothing).
#include "op_library.h"

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_op(
      m, "stable_spam_norms(Tensor[] grads, Tensor? maxima, Tensor rows, Tensor state, float gamma3) -> Tensor");
}
