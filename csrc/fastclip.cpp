// The one library definition: every fastclip op's schema, each defined through define(), which
// also answers sparse tensors with fastclip's error. Each op registers its kernels per backend in
// csrc/cpu/<op>.cpp and csrc/cuda/<op>.cpp (the latter launching csrc/cuda/<op>_kernel.cu), with
// its argument checks in csrc/common/*_op_args.cpp; fake (meta) kernels live in fastclip/_ops.py.
#include <torch/library.h>

#include "held_list.h"

namespace {

// Sparse tensors dispatch to their own backends; answer there with a clear error instead of
// the dispatcher's "could not run ... with arguments from the 'SparseCPU' backend".
void reject_sparse(const c10::OperatorHandle& op, torch::jit::Stack*) {
  TORCH_CHECK(false, "fastclip: ", op.schema().name(),
              " got a sparse tensor; only dense (strided) tensors are supported, not sparse ones");
}

// Every op is defined through here, so none can miss its sparse-tensor rejection.
void define(torch::Library& m, const std::string& schema) {
  m.def(schema.c_str());
  const std::string name = schema.substr(0, schema.find('('));
  for (const c10::DispatchKey key : {c10::DispatchKey::SparseCPU, c10::DispatchKey::SparseCUDA}) {
    m.impl(name.c_str(), torch::dispatch(key, torch::CppFunction::makeFromBoxedFunction<&reject_sparse>()));
  }
}

// Defines a stats op and its held_<op> form, the same op with the grads as a held list
// (held_list.h): the schema with a TensorList first, run by held_list.cpp on the list's tensors.
void def_with_held(torch::Library& m, const std::string& schema) {
  define(m, schema);
  const std::string grads = "(Tensor(a!)[] grads,";
  const size_t at = schema.find(grads);
  TORCH_INTERNAL_ASSERT(at != std::string::npos, "a held stats op takes its grads first: ", schema);
  define(m, "held_" + schema.substr(0, at) + "(__torch__.torch.classes.fastclip.TensorList grads," +
                schema.substr(at + grads.size()));
}

}  // namespace

TORCH_LIBRARY(fastclip, m) {
  // Returns (total, per_tensor): the p-norm of all elements of all tensors (torch's norm of the
  // per-tensor norms) and, when per_tensor is true, each tensor's norm (else an empty tensor).
  // Accumulation is float32 (float64 if any input is float64); the total is returned in the
  // promoted dtype of the inputs, as torch returns it, and per-tensor norms in the accumulation dtype.
  define(m, "multi_tensor_norm(Tensor[] tensors, float norm_type, bool per_tensor) -> (Tensor, Tensor)");
  // tensors[i] *= scale (0-d, or scale[i] when scale holds one value per tensor). A coefficient
  // of exactly 1 writes nothing.
  // With clear_on_zero, a factor of exactly 0 stores zeros (NaN and inf included) instead of
  // multiplying: the clippers' on_nonfinite="zero".
  define(m, "multi_tensor_scale_(Tensor(a!)[] tensors, Tensor scale, bool clear_on_zero=False) -> ()");
  // tensors *= min(max_norm / (total_norm + 1e-6), 1): torch's clip_grads_with_norm_, with the
  // coefficient computed on the device from total_norm.
  define(m, "multi_tensor_clip_by_norm_(Tensor(a!)[] tensors, Tensor total_norm, float max_norm) -> ()");
  // Both of the above in one call (clip_grad_norm_): returns the pre-clip total norm in the
  // promoted dtype and scales the tensors in place by torch's coefficient computed from it.
  define(m, "multi_tensor_clip_grad_norm_(Tensor(a!)[] tensors, float max_norm, float norm_type) -> Tensor");
  // Clamps every element to [-clip_value, clip_value] in place (clip_grad_value_).
  define(m, "multi_tensor_clamp_(Tensor(a!)[] tensors, float clip_value) -> ()");

  // A list held across calls (held_list.h): torch.classes.fastclip.TensorList(tensors), and four
  // list ops run on it (held_<op>), same checks, same results. Eager only: the schemas cannot say
  // that the held tensors are written (and opcheck takes no ScriptObject).
  m.class_<fastclip::HeldList>("TensorList")
      .def(torch::init<std::vector<at::Tensor>>())
      .def("__len__", [](const c10::intrusive_ptr<fastclip::HeldList>& self) {
        return static_cast<int64_t>(self->tensors.size());
      });
  define(m,
         "held_multi_tensor_norm(__torch__.torch.classes.fastclip.TensorList tensors, float norm_type, "
         "bool per_tensor) -> (Tensor, Tensor)");
  define(m,
         "held_multi_tensor_scale_(__torch__.torch.classes.fastclip.TensorList tensors, Tensor scale, "
         "bool clear_on_zero=False) -> ()");
  define(m,
         "held_multi_tensor_clip_by_norm_(__torch__.torch.classes.fastclip.TensorList tensors, Tensor total_norm, "
         "float max_norm) -> ()");
  define(m,
         "held_multi_tensor_clip_grad_norm_(__torch__.torch.classes.fastclip.TensorList tensors, float max_norm, "
         "float norm_type) -> Tensor");

  // The stateful clippers' steps (csrc/common/<clipper>_step.h). Each takes the grads it clips
  // and, optionally, their norms: given (reduced across ranks), the step reads them; None, the op
  // computes the L2 norm of the grads itself (on CUDA the norm, the step and the scale are one
  // cooperative launch). The step updates the state in place and writes `result` (float32,
  // common/layouts.h's result slots) plus, for the per-tensor forms, one factor and one threshold
  // per entry. Then, with scale_grads, the grads are scaled by the step's factor (one, or one per
  // grad), a factor of 0 storing zeros under on_nonfinite="zero"; without it (an attached optimizer
  // applies the factor) they are left alone, except that "zero" zeroes them on a non-finite step.
  // No host sync. Each has a held_<op> form taking the grads as a TensorList (def_with_held).
  // state: float64, common/layouts.h's zclip_state header then warmup_steps norms.
  def_with_held(
      m,
      "zclip_update_(Tensor(a!)[] grads, Tensor? norm, Tensor(b!) state, Tensor(c!) result, float alpha, "
      "float z_thresh, float? max_grad_norm, float eps, int warmup_steps, str threshold_mode, str clip_option, "
      "float clip_factor, bool skip_update_on_spike, str on_nonfinite, bool reference, bool scale_grads) -> ()");
  // A fixed threshold: torch's min(max_norm / (norm + 1e-6), 1) in float32; the norm of order norm_type.
  def_with_held(
      m,
      "normclip_update_(Tensor(a!)[] grads, Tensor? norm, Tensor(b!) result, float max_norm, float norm_type, "
      "str on_nonfinite, bool scale_grads) -> ()");
  // norms[j] belongs to history rows[j]; rows must be distinct. Computed norms: an entry per grad
  // with per_tensor, else one entry, the total (row 0). Whole history when window has zero columns:
  // lower/upper are float32 heaps, [H, capacity]; else window is a float32 ring buffer
  // [H, history_size]. counters: int64 [H, common/layouts.h's autoclip_counters].
  def_with_held(
      m,
      "autoclip_update_(Tensor(a!)[] grads, Tensor? total_norm, Tensor? norms, Tensor rows, Tensor(b!) lower, "
      "Tensor(c!) upper, Tensor(d!) window, Tensor(e!) counters, Tensor(f!) result, Tensor(g!) coef, "
      "Tensor(h!) threshold, float percentile, bool lag, str on_nonfinite, bool reference, bool per_tensor, "
      "bool scale_grads) -> ()");
  // gamma: float64 [H, common/layouts.h's adagc_gamma], rows as above (an entry per grad);
  // steps: float64 [1], finite steps so far.
  def_with_held(m,
                "adagc_update_(Tensor(a!)[] grads, Tensor? total_norm, Tensor? norms, Tensor rows, Tensor(b!) gamma, "
                "Tensor(c!) steps, Tensor(d!) result, Tensor(e!) coef, Tensor(f!) threshold, float lambda_abs, "
                "float lambda_rel, float beta, int warmup_steps, float eps, str on_nonfinite, bool reference, "
                "bool scale_grads) -> ()");
  // Stable-SPAM's AdaClip and AdaGN (common/stable_spam_step.h); state: float64 [H,
  // common/layouts.h's stable_spam_row], rows[i] the row of grads[i].
  // stable_spam_norms returns float64 [2, len(grads)]: without maxima, each grad's largest
  // magnitude and sum of squares; given maxima (a first call's, reduced across ranks), each
  // grad's sums of squares over the elements at most and above its AdaClip threshold (zeros,
  // the grad unread, where AdaClip rescales nothing).
  define(m, "stable_spam_norms(Tensor[] grads, Tensor? maxima, Tensor rows, Tensor state, float gamma3) -> Tensor");
  // The step on those two results (stats, split): every tensor's statistics updated, a factor and
  // a threshold per grad, steps[0] counting calls; then each grad's elements above its threshold
  // are scaled by AdaClip's ratio times AdaGN's factor, the others by the factor, in one pass.
  // total_steps and reset_every: 0 for none.
  define(m,
         "stable_spam_update_(Tensor(a!)[] grads, Tensor stats, Tensor split, Tensor rows, Tensor(b!) state, "
         "Tensor(c!) steps, Tensor(d!) result, Tensor(e!) coef, Tensor(f!) threshold, float gamma1, float gamma2, "
         "float gamma3, float eps, int total_steps, float eta_min, int reset_every, str on_nonfinite, "
         "bool reference) -> ()");
  // StepSkipper's decision (common/skip_step.h: OLMo-core's rule, float64 statistics): keep
  // (result's factor 1) or skip (0) the step of this loss and norm (one float each, any float
  // dtype) against the mean and unbiased std of the last `window` earlier values, one-sided, at
  // `sigma` stds, then add them to history (float64 [2, window], losses then norms, a ring
  // buffer) and advance counters (int64, common/layouts.h's skip_step_counters). Default mode
  // skips a non-finite loss or norm and keeps it out of the history; reference is OLMo-core's
  // rule exactly. result: float32, common/layouts.h's skip_step_result. No grads, no host sync.
  define(m,
         "skip_step_update_(Tensor loss, Tensor norm, Tensor(a!) history, Tensor(b!) counters, Tensor(c!) result, "
         "int window, float sigma, bool reference) -> ()");
  // NFNets unit-wise clipping (timm's adaptive_clip_grad): each output row of grads[i] (the
  // whole tensor for 0-d/1-d ones) is scaled so its L2 norm is at most
  // clip_factor * max(||params[i] row||, eps). One pass: a row is reduced and scaled while in cache.
  define(m, "agc_clip_(Tensor(a!)[] grads, Tensor[] params, float clip_factor, float eps) -> ()");
}
