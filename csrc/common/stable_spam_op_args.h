// Stable-SPAM's two ops as the dispatcher sees them, for both backends: the argument checks
// (every tensor checked for dtype, device, layout and shape, naming the argument) and the config.
//
// stable_spam_norms: one pass over the grads giving, per tensor, float64 [2, n]: without maxima,
// its largest magnitude and its sum of squares; with maxima (those of a first call, reduced
// across ranks), its sums of squares over the elements at most and above its AdaClip threshold,
// for the tensors AdaClip rescales (zeros, the data not read, for the others).
// stable_spam_update_: the step on those statistics, then the grads' update.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>

#include "stable_spam_step.h"
#include "stats_checks.h"
#include "stats_op_args.h"

namespace fastclip {

// The ops' tensors by value, the grads checked (a view of the op's argument), as stats_op_args.h's.
struct StableSPAMNormsArgs {
  CheckedList grads;  // check_grads_on (stats_checks.h)
  std::optional<at::Tensor> maxima;
  at::Tensor rows;
  at::Tensor state;
};

// Checks the other arguments and returns the output, float64 [2, grads], zeroed, on the grads' device.
at::Tensor stable_spam_norms_output(const StableSPAMNormsArgs& a, double gamma3);

struct StableSPAMTensors {
  CheckedList grads;  // check_grads_on (stats_checks.h)
  at::Tensor stats;   // [2, n]: maxima, sums of squares
  at::Tensor split;   // [2, n]: sums of squares at most and above the threshold
  at::Tensor rows;
  at::Tensor state;
  at::Tensor steps;
  at::Tensor result;
  at::Tensor coef;
  at::Tensor threshold;

  int64_t num_entries() const { return static_cast<int64_t>(grads.size()); }
};

StableSPAMConfig stable_spam_config(const StableSPAMTensors& t, double gamma1, double gamma2, double gamma3, double eps,
                                    int64_t total_steps, double eta_min, int64_t reset_every,
                                    c10::string_view on_nonfinite, bool reference);

EntryOutputs stable_spam_outputs(const StableSPAMTensors& t);

template <void (*run)(const StableSPAMConfig&, const StableSPAMTensors&)>
void stable_spam_update(at::TensorList grads, const at::Tensor& stats, const at::Tensor& split, const at::Tensor& rows,
                        at::Tensor& state, at::Tensor& steps, at::Tensor& result, at::Tensor& coef,
                        at::Tensor& threshold, double gamma1, double gamma2, double gamma3, double eps,
                        int64_t total_steps, double eta_min, int64_t reset_every, c10::string_view on_nonfinite,
                        bool reference) {
  const StableSPAMTensors t{check_grads_on(grads, /*mutated=*/true, state.device()),
                            stats,
                            split,
                            rows,
                            state,
                            steps,
                            result,
                            coef,
                            threshold};
  run(stable_spam_config(t, gamma1, gamma2, gamma3, eps, total_steps, eta_min, reset_every, on_nonfinite, reference),
      t);
}

}  // namespace fastclip
