// Each list op's argument checks, written once for both backends; every message names the
// argument. The per-entry checks (dtype, layout, device, overlap) are list_plan.h's. Each returns
// the op's list checked, for the op to plan (plan_tensor_list, or CUDA's prepare_on_device).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include "list_plan.h"

namespace fastclip {

CheckedList check_multi_tensor_norm_args(at::TensorList tensors, double norm_type);
CheckedList check_multi_tensor_scale_args(at::TensorList tensors, const at::Tensor& scale);
CheckedList check_multi_tensor_clip_by_norm_args(at::TensorList tensors, const at::Tensor& total_norm, double max_norm);
CheckedList check_multi_tensor_clip_grad_norm_args(at::TensorList tensors, double max_norm, double norm_type);
CheckedList check_multi_tensor_clamp_args(at::TensorList tensors, double clip_value);
// Same length, pairwise same shape and device, float dtypes; clip_factor > 0 and eps >= 0, finite.
void check_agc_clip_args(at::TensorList grads, at::TensorList params, double clip_factor, double eps);

}  // namespace fastclip
