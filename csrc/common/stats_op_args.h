// The stateful clippers' stats ops (zclip_update_, autoclip_update_, adagc_update_) as the
// dispatcher sees them, written once for both backends: the argument checks (every state tensor
// checked for dtype, device, layout and shape, naming the argument), the step's config, and the
// op function itself, a template over the backend's `run` (which only launches the step).
// The *Tensors structs are views of the op's own arguments (reference members): build them only
// from the dispatcher's parameters, never from temporaries such as `x.contiguous()`.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <string>

#include "adagc_step.h"
#include "autoclip_step.h"
#include "zclip_step.h"

namespace fastclip {

NonfinitePolicy parse_nonfinite_policy(const std::string& value);

// ---------------------------------------------------------------------------------------------
// zclip_update_: state is float64 [zclip_state::header_size + warmup_steps], result float32 [result_slot::count].

struct ZClipTensors {
  const at::Tensor& norm;
  at::Tensor& state;
  at::Tensor& result;
};

ZClipConfig zclip_config(const ZClipTensors& t, double alpha, double z_thresh, std::optional<double> max_grad_norm,
                         double eps, int64_t warmup_steps, const std::string& mode, const std::string& clip_option,
                         double clip_factor, bool skip_update_on_spike, const std::string& on_nonfinite,
                         bool reference);

template <void (*run)(const ZClipConfig&, const ZClipTensors&)>
void zclip_update(const at::Tensor& norm, at::Tensor& state, at::Tensor& result, double alpha, double z_thresh,
                  std::optional<double> max_grad_norm, double eps, int64_t warmup_steps, c10::string_view mode,
                  c10::string_view clip_option, double clip_factor, bool skip_update_on_spike,
                  c10::string_view on_nonfinite, bool reference) {
  const ZClipTensors t{norm, state, result};
  run(zclip_config(t, alpha, z_thresh, max_grad_norm, eps, warmup_steps, std::string(mode), std::string(clip_option),
                   clip_factor, skip_update_on_spike, std::string(on_nonfinite), reference),
      t);
}

// ---------------------------------------------------------------------------------------------
// The per-tensor ops' common inputs and outputs: this step's total norm, the norms of its entries,
// each entry's state row (one of num_rows), and per entry a factor and a threshold.

struct PerEntryTensors {
  const at::Tensor& total_norm;
  const at::Tensor& norms;
  const at::Tensor& rows;
  at::Tensor& result;
  at::Tensor& coef;
  at::Tensor& threshold;
  int64_t num_rows;
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
  at::Tensor& lower;
  at::Tensor& upper;
  at::Tensor& window;
  at::Tensor& counters;
};

AutoClipConfig autoclip_config(const AutoClipTensors& t, double percentile, bool lag, const std::string& on_nonfinite,
                               bool reference);
AutoClipBuffers autoclip_buffers(const AutoClipTensors& t);

template <void (*run)(const AutoClipConfig&, const AutoClipTensors&)>
void autoclip_update(const at::Tensor& total_norm, const at::Tensor& norms, const at::Tensor& rows, at::Tensor& lower,
                     at::Tensor& upper, at::Tensor& window, at::Tensor& counters, at::Tensor& result, at::Tensor& coef,
                     at::Tensor& threshold, double percentile, bool lag, c10::string_view on_nonfinite,
                     bool reference) {
  const AutoClipTensors t{{total_norm, norms, rows, result, coef, threshold, state_rows(counters)}, lower, upper, window,
                          counters};
  run(autoclip_config(t, percentile, lag, std::string(on_nonfinite), reference), t);
}

// ---------------------------------------------------------------------------------------------
// adagc_update_: gamma is float64 [tensors, adagc_gamma::count], rows as above; steps float64 [1],
// the finite steps so far.

struct AdaGCTensors {
  PerEntryTensors entries;
  at::Tensor& gamma;
  at::Tensor& steps;
};

AdaGCConfig adagc_config(const AdaGCTensors& t, double lambda_abs, double lambda_rel, double beta,
                         int64_t warmup_steps, double eps, const std::string& on_nonfinite, bool reference);

template <void (*run)(const AdaGCConfig&, const AdaGCTensors&)>
void adagc_update(const at::Tensor& total_norm, const at::Tensor& norms, const at::Tensor& rows, at::Tensor& gamma,
                  at::Tensor& steps, at::Tensor& result, at::Tensor& coef, at::Tensor& threshold, double lambda_abs,
                  double lambda_rel, double beta, int64_t warmup_steps, double eps, c10::string_view on_nonfinite,
                  bool reference) {
  const AdaGCTensors t{{total_norm, norms, rows, result, coef, threshold, state_rows(gamma)}, gamma, steps};
  run(adagc_config(t, lambda_abs, lambda_rel, beta, warmup_steps, eps, std::string(on_nonfinite), reference), t);
}

}  // namespace fastclip
