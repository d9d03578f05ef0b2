// The checks the stats ops share (stats_op_args.cpp, stable_spam_op_args.cpp), each written once:
// their modes parsed into enums, the state and output tensors, the rows of the per-entry state,
// and the grads beside the state. Every message names the argument.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <cstdint>

#include "clip_outcome.h"
#include "list_plan.h"
#include "zclip_step.h"

namespace fastclip {

// The modes, str arguments in the op schemas, each parsed here once per op call where the op's
// arguments are checked; past that boundary they are enums, never strings.
NonfinitePolicy parse_nonfinite_policy(c10::string_view on_nonfinite);
ZClipThresholdMode parse_zclip_threshold_mode(c10::string_view threshold_mode);
ZClipClipOption parse_zclip_clip_option(c10::string_view clip_option);

// A small state/output tensor: defined, contiguous, of `dtype`, on `device` (where `device_of` is),
// with `numel` elements (or, when numel < 0, any size).
void check_state_tensor(const at::Tensor& t, const char* arg, at::ScalarType dtype, const at::Device& device,
                        int64_t numel, const char* device_of = "the norms are");

// A norm (or a loss) the op reads: defined, dense, contiguous, a supported float dtype, with
// `numel` elements (any, when numel < 0).
void check_norm_tensor(const at::Tensor& t, const char* arg, int64_t numel);

// A count such as warmup_steps: >= 0 (`note` follows the bound in the message).
void check_nonnegative_count(int64_t value, const char* arg, const char* note = "");

// A rate such as alpha or beta: in the open interval (0, 1).
void check_open_unit_interval(double value, const char* arg);

// rows: int64 [entries] on `device`, each naming one of num_rows state rows, all different where
// `distinct` (the entries write their rows). The values are checked on the CPU only: on a GPU the
// check would sync, and the kernels leave an entry whose row is out of range alone.
void check_rows(const at::Tensor& rows, int64_t entries, int64_t num_rows, const at::Device& device, bool distinct);

// The per-entry steps' outputs: result, float32 [result_slot::count]; coef and threshold, float32
// [entries].
void check_entry_outputs(const at::Tensor& result, const at::Tensor& coef, const at::Tensor& threshold, int64_t entries,
                         const at::Device& device);

// The grads (check_tensor_list; written for `mutated`) on the state's `device`, returned checked
// for the op to plan.
CheckedList check_grads_on(at::TensorList grads, bool mutated, const at::Device& device);

}  // namespace fastclip
