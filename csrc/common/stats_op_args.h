// The stateful clippers' stats ops (zclip_update_, normclip_update_, autoclip_update_,
// adagc_update_) and StepSkipper's (skip_step_update_) as the dispatcher sees them, written once for both backends: the
// argument checks (every state tensor checked for dtype, device, layout and shape, naming the argument), the step's
// config, and the op function itself, a template over the backend's `run`.
//
// Each op takes the grads it clips and, optionally, their norms: given (a process group's
// reduced norms), the op runs the step on them; absent, the op computes the grads' norms itself,
// which on CUDA puts norm, step and scale in one launch. Then it updates the grads (GradsUpdate).
// The *Tensors structs hold the op's tensors by value: at::Tensor is a reference-counted handle,
// so a copy is the same tensor (a few reference counts per call), and a struct built from a
// temporary such as `x.contiguous()` keeps it alive. The grads stay an at::TensorList, a view of
// the op's list argument (a copy would take a reference per tensor): a struct lives within the
// op call.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <optional>

#include "adagc_step.h"
#include "autoclip_step.h"
#include "list_plan.h"
#include "normclip_step.h"
#include "skip_step.h"
#include "zclip_step.h"

namespace fastclip {

// The grads, checked (the list the op plans, when it computes their norms or updates them), and
// what a step does to them once its factors are written: scale them by the step's factor (one, or
// one per tensor), with the zero policy storing zeros where it is 0; or, when an attached
// optimizer applies the factor (scale_grads false), leave them alone except that the zero policy
// still zeroes them on a non-finite step (factor 1 - result[nonfinite]).
struct GradsUpdate {
  CheckedList grads;
  bool active;          // the grads are written at all
  bool per_tensor;      // one factor per grad (the per-tensor clippers)
  bool zero_where_set;  // the factor read is the non-finite flag: 0 where it is set, else 1
  bool clear_on_zero;   // a factor of exactly 0 stores zeros (NaN and inf included)
};

// The grads' update, after checking them (strided, supported dtypes, on `device`).
GradsUpdate grads_update(at::TensorList grads, const at::Device& device, bool scale_grads, NonfinitePolicy policy,
                         bool per_tensor_factors);

// Where the step wrote the factors `update` reads (float32): coef, one per grad; the result's
// non-finite flag; or its coef slot.
inline float* update_factors(const GradsUpdate& update, float* result, float* coef) {
  if (update.per_tensor) return coef;
  return result + (update.zero_where_set ? result_slot::nonfinite : result_slot::coef);
}

// The device the op runs on: the given norm's, else the grads' (which must then not be empty).
at::Device stats_device(at::TensorList grads, const std::optional<at::Tensor>& norm, const char* norm_arg);

// ---------------------------------------------------------------------------------------------
// zclip_update_: state is float64 [zclip_state::header_size + warmup_steps], result float32 [result_slot::count].

struct ZClipTensors {
  at::TensorList grads;            // a view of the op's argument
  std::optional<at::Tensor> norm;  // absent: the L2 norm of grads
  at::Tensor state;
  at::Tensor result;
  bool scale_grads;
};

// Each config function checks the op's arguments, the str modes parsed there (stats_checks.h).
ZClipConfig zclip_config(const ZClipTensors& t, double alpha, double z_thresh, std::optional<double> max_grad_norm,
                         double eps, int64_t warmup_steps, c10::string_view threshold_mode,
                         c10::string_view clip_option, double clip_factor, bool skip_update_on_spike,
                         c10::string_view on_nonfinite, bool reference);

template <void (*run)(const ZClipConfig&, const ZClipTensors&, const GradsUpdate&)>
void zclip_update(at::TensorList grads, const std::optional<at::Tensor>& norm, at::Tensor& state, at::Tensor& result,
                  double alpha, double z_thresh, std::optional<double> max_grad_norm, double eps, int64_t warmup_steps,
                  c10::string_view threshold_mode, c10::string_view clip_option, double clip_factor,
                  bool skip_update_on_spike, c10::string_view on_nonfinite, bool reference, bool scale_grads) {
  const ZClipTensors t{grads, norm, state, result, scale_grads};
  const ZClipConfig config = zclip_config(t, alpha, z_thresh, max_grad_norm, eps, warmup_steps, threshold_mode,
                                          clip_option, clip_factor, skip_update_on_spike, on_nonfinite, reference);
  run(config, t, grads_update(grads, state.device(), scale_grads, config.policy, /*per_tensor_factors=*/false));
}

// ---------------------------------------------------------------------------------------------
// normclip_update_: result float32 [result_slot::count]; the norm is of order norm_type.

struct NormClipTensors {
  at::TensorList grads;            // a view of the op's argument
  std::optional<at::Tensor> norm;  // absent: the norm_type norm of grads
  at::Tensor result;
};

NormClipConfig normclip_config(const NormClipTensors& t, double max_norm, double norm_type,
                               c10::string_view on_nonfinite);

template <void (*run)(const NormClipConfig&, const NormClipTensors&, double norm_type, const GradsUpdate&)>
void normclip_update(at::TensorList grads, const std::optional<at::Tensor>& norm, at::Tensor& result, double max_norm,
                     double norm_type, c10::string_view on_nonfinite, bool scale_grads) {
  const NormClipTensors t{grads, norm, result};
  const NormClipConfig config = normclip_config(t, max_norm, norm_type, on_nonfinite);
  run(config, t, norm_type,
      grads_update(grads, result.device(), scale_grads, config.policy, /*per_tensor_factors=*/false));
}

// ---------------------------------------------------------------------------------------------
// The per-tensor ops' common inputs and outputs: the grads, this step's total norm and the norms
// of its entries (both given, or both absent: then computed from the grads, an entry per grad
// with per_tensor, else the one entry of the total), each entry's state row (one of num_rows),
// and per entry a factor and a threshold.

struct PerEntryTensors {
  at::TensorList grads;  // a view of the op's argument
  std::optional<at::Tensor> total_norm;
  std::optional<at::Tensor> norms;
  at::Tensor rows;
  at::Tensor result;
  at::Tensor coef;
  at::Tensor threshold;
  int64_t num_rows;
  bool per_tensor;  // an entry per grad (with a factor each), else the one entry of the total

  bool norms_given() const { return total_norm.has_value(); }
  int64_t num_entries() const {
    if (norms.has_value()) return norms->numel();
    return per_tensor ? static_cast<int64_t>(grads.size()) : 1;
  }
};

EntryOutputs entry_outputs(const PerEntryTensors& t);

// The rows of a [rows, n] state tensor (0 for any other shape, which the op's checks refuse).
inline int64_t state_rows(const at::Tensor& state) { return state.dim() == 2 ? state.size(0) : 0; }

// ---------------------------------------------------------------------------------------------
// autoclip_update_: norms[j] belongs to history rows[j]; lower/upper are float32 heaps
// [histories, capacity] (whole history, when window has no columns), window a float32 ring
// buffer [histories, history_size], counters int64 [histories, autoclip_counter::count].

struct AutoClipTensors {
  PerEntryTensors entries;
  at::Tensor lower;
  at::Tensor upper;
  at::Tensor window;
  at::Tensor counters;
};

AutoClipConfig autoclip_config(const AutoClipTensors& t, double percentile, bool lag, c10::string_view on_nonfinite,
                               bool reference);
AutoClipBuffers autoclip_buffers(const AutoClipTensors& t);

// The per-entry ops' grads update: one factor per grad when the entries are the grads.
GradsUpdate entry_grads_update(const PerEntryTensors& t, bool scale_grads, NonfinitePolicy policy);

template <void (*run)(const AutoClipConfig&, const AutoClipTensors&, const GradsUpdate&)>
void autoclip_update(at::TensorList grads, const std::optional<at::Tensor>& total_norm,
                     const std::optional<at::Tensor>& norms, const at::Tensor& rows, at::Tensor& lower,
                     at::Tensor& upper, at::Tensor& window, at::Tensor& counters, at::Tensor& result, at::Tensor& coef,
                     at::Tensor& threshold, double percentile, bool lag, c10::string_view on_nonfinite, bool reference,
                     bool per_tensor, bool scale_grads) {
  const AutoClipTensors t{{grads, total_norm, norms, rows, result, coef, threshold, state_rows(counters), per_tensor},
                          lower,
                          upper,
                          window,
                          counters};
  const AutoClipConfig config = autoclip_config(t, percentile, lag, on_nonfinite, reference);
  run(config, t, entry_grads_update(t.entries, scale_grads, config.policy));
}

// ---------------------------------------------------------------------------------------------
// adagc_update_: gamma is float64 [tensors, adagc_gamma::count], rows as above; steps float64 [1],
// the finite steps so far.

struct AdaGCTensors {
  PerEntryTensors entries;
  at::Tensor gamma;
  at::Tensor steps;
};

AdaGCConfig adagc_config(const AdaGCTensors& t, double lambda_abs, double lambda_rel, double beta, int64_t warmup_steps,
                         double eps, c10::string_view on_nonfinite, bool reference);

template <void (*run)(const AdaGCConfig&, const AdaGCTensors&, const GradsUpdate&)>
void adagc_update(at::TensorList grads, const std::optional<at::Tensor>& total_norm,
                  const std::optional<at::Tensor>& norms, const at::Tensor& rows, at::Tensor& gamma, at::Tensor& steps,
                  at::Tensor& result, at::Tensor& coef, at::Tensor& threshold, double lambda_abs, double lambda_rel,
                  double beta, int64_t warmup_steps, double eps, c10::string_view on_nonfinite, bool reference,
                  bool scale_grads) {
  const AdaGCTensors t{
      {grads, total_norm, norms, rows, result, coef, threshold, state_rows(gamma), /*per_tensor=*/true}, gamma, steps};
  const AdaGCConfig config = adagc_config(t, lambda_abs, lambda_rel, beta, warmup_steps, eps, on_nonfinite, reference);
  run(config, t, entry_grads_update(t.entries, scale_grads, config.policy));
}

// ---------------------------------------------------------------------------------------------
// skip_step_update_: loss and norm hold one float each; history is float64
// [skip_step_series::count, window], counters int64 [skip_step_counter::count], result float32
// [skip_step_result::count], all on one device. No grads: the op decides, an optimizer skips.

struct SkipStepTensors {
  at::Tensor loss;
  at::Tensor norm;
  at::Tensor history;
  at::Tensor counters;
  at::Tensor result;
};

SkipStepConfig skip_step_config(const SkipStepTensors& t, int64_t window, double sigma, bool reference);

template <void (*run)(const SkipStepConfig&, const SkipStepTensors&)>
void skip_step_update(const at::Tensor& loss, const at::Tensor& norm, at::Tensor& history, at::Tensor& counters,
                      at::Tensor& result, int64_t window, double sigma, bool reference) {
  const SkipStepTensors t{loss, norm, history, counters, result};
  run(skip_step_config(t, window, sigma, reference), t);
}

}  // namespace fastclip
