// agc_clip_: NFNets unit-wise clipping (timm's adaptive_clip_grad): each output row of grads[i]
// (the whole tensor for 0-d/1-d ones) is scaled so its L2 norm is at most
// clip_factor * max(||params[i] row||, eps). One pass: a row is reduced and scaled while in cache.
#include "op_library.h"

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_op(m, "agc_clip_(Tensor(a!)[] grads, Tensor[] params, float clip_factor, float eps) -> ()");
}
