// Host-side argument checks and config building for the stats ops, shared by both backends:
// every state tensor is checked for dtype, device, layout and shape, naming the argument.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>

#include "adagc_step.h"
#include "autoclip_step.h"
#include "zclip_step.h"

namespace fastclip {

NonfinitePolicy parse_nonfinite_policy(const std::string& value);

// A small state/output tensor: defined, contiguous, of `dtype`, on `device`, with `numel` elements
// (or, when numel < 0, any size).
void check_state_tensor(const at::Tensor& t, const char* arg, at::ScalarType dtype, const at::Device& device,
                        int64_t numel);

ZClipConfig zclip_config(const at::Tensor& norm, const at::Tensor& state, const at::Tensor& result, double alpha,
                         double z_thresh, std::optional<double> max_grad_norm, double eps, int64_t warmup_steps,
                         const std::string& mode, const std::string& clip_option, double clip_factor,
                         bool skip_update_on_spike, const std::string& on_nonfinite, bool reference);

// Checks the per-entry inputs of the per-tensor ops: norms (float32 or float64, 1-d), rows (int64,
// one per norm, each < num_rows), coef/threshold (float32, one per norm), result.
void check_per_entry_args(const at::Tensor& total_norm, const at::Tensor& norms, const at::Tensor& rows,
                          const at::Tensor& result, const at::Tensor& coef, const at::Tensor& threshold,
                          int64_t num_rows);

AutoClipConfig autoclip_config(const at::Tensor& total_norm, const at::Tensor& norms, const at::Tensor& rows,
                               const at::Tensor& lower, const at::Tensor& upper, const at::Tensor& window,
                               const at::Tensor& counters, const at::Tensor& result, const at::Tensor& coef,
                               const at::Tensor& threshold, double percentile, bool lag,
                               const std::string& on_nonfinite, bool reference);

AdaGCConfig adagc_config(const at::Tensor& total_norm, const at::Tensor& norms, const at::Tensor& rows,
                         const at::Tensor& gamma, const at::Tensor& steps, const at::Tensor& result,
                         const at::Tensor& coef, const at::Tensor& threshold, double lambda_abs, double lambda_rel,
                         double beta, int64_t warmup_steps, double eps, const std::string& on_nonfinite,
                         bool reference);

// The AGC op's lists: same length, pairwise same shape and device, float dtypes.
void check_agc_args(at::TensorList grads, at::TensorList params, double clip_factor, double eps);

}  // namespace fastclip
