#include "list_op_args.h"

#include <c10/util/Exception.h>

#include "list_plan.h"

namespace fastclip {

CheckedList check_multi_tensor_norm_args(at::TensorList tensors, double norm_type) {
  check_norm_type(norm_type);
  TORCH_CHECK(!tensors.empty(), "fastclip: tensors must not be empty");
  return check_tensor_list(tensors, "tensors", /*mutated=*/false);
}

CheckedList check_multi_tensor_scale_args(at::TensorList tensors, const at::Tensor& scale) {
  CheckedList checked = check_tensor_list(tensors, "tensors", /*mutated=*/true);
  check_scalar_tensor(scale, "scale", tensors, /*allow_per_tensor=*/true);
  check_reads_apart_from_writes(tensors, "tensors", scale, "scale", /*read_is_list=*/false,
                                "pass a copy of the scale (scale.clone())");
  return checked;
}

CheckedList check_multi_tensor_clip_by_norm_args(at::TensorList tensors, const at::Tensor& total_norm,
                                                 double max_norm) {
  check_nonnegative(max_norm, "max_norm");
  CheckedList checked = check_tensor_list(tensors, "tensors", /*mutated=*/true);
  check_scalar_tensor(total_norm, "total_norm", tensors, /*allow_per_tensor=*/false);
  check_reads_apart_from_writes(tensors, "tensors", total_norm, "total_norm", /*read_is_list=*/false,
                                "pass a copy of the norm (total_norm.clone())");
  return checked;
}

CheckedList check_multi_tensor_clip_grad_norm_args(at::TensorList tensors, double max_norm, double norm_type) {
  check_nonnegative(max_norm, "max_norm");
  check_norm_type(norm_type);
  TORCH_CHECK(!tensors.empty(), "fastclip: tensors must not be empty");
  return check_tensor_list(tensors, "tensors", /*mutated=*/true);
}

CheckedList check_multi_tensor_clamp_args(at::TensorList tensors, double clip_value) {
  check_nonnegative(clip_value, "clip_value");
  return check_tensor_list(tensors, "tensors", /*mutated=*/true);
}

void check_agc_clip_args(at::TensorList grads, at::TensorList params, double clip_factor, double eps) {
  check_tensor_list(grads, "grads", /*mutated=*/true);
  check_tensor_list(params, "params", /*mutated=*/false);
  TORCH_CHECK(grads.size() == params.size(), "fastclip: grads and params must have the same length, got ", grads.size(),
              " and ", params.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    TORCH_CHECK(grads[i].sizes() == params[i].sizes(), "fastclip: grads[", i, "] has shape ", grads[i].sizes(),
                " but params[", i, "] has shape ", params[i].sizes());
    TORCH_CHECK(grads[i].device() == params[i].device(), "fastclip: grads[", i, "] is on ", grads[i].device(),
                " but params[", i, "] is on ", params[i].device());
  }
  check_reads_apart_from_writes(grads, "grads", params, "params", /*read_is_list=*/true,
                                "a parameter cannot share memory with a gradient (clone the gradient first)");
  check_finite_positive(clip_factor, "clip_factor");
  check_finite_nonnegative(eps, "eps");
}

}  // namespace fastclip
