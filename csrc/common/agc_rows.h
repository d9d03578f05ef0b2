// AGC's unit of work is an output row (agc_step.h), on both backends: a tensor whose rows are
// contiguous blocks (dim 0 outermost, any order inside a row) is used in place, anything else
// through a contiguous copy that copy_back (list_plan.h) writes back.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <vector>

namespace fastclip {

struct AgcRows {
  std::vector<at::Tensor> grads, params;  // grads[i] is grads[i] itself or its copy; likewise params
};

AgcRows agc_rows_of(at::TensorList grads, at::TensorList params);

}  // namespace fastclip
