// The interface between the stats ops' CUDA entry points (<clipper>_update.cpp, through
// clip_step.h, and skip_step_update.cpp) and their kernels: one plain struct per step holding its
// config (the CPU op's own, common/<clipper>_step.h, common/skip_step.h), the norms it reads and the
// state and outputs it writes, so both backends run the same arithmetic on the same tensors. Each
// clipper's step has two launchers; StepSkipper's has one.
#pragma once

#include "../common/adagc_step.h"
#include "../common/autoclip_step.h"
#include "../common/normclip_step.h"
#include "../common/skip_step.h"
#include "../common/zclip_step.h"
#include "kernels.h"

namespace fastclip {
namespace cuda {

// The per-entry steps' inputs and outputs: this step's total norm, the norms of its
// num_entries entries, and what the step writes.
struct EntryParams {
  DeviceValues total_norm;
  DeviceValues norms;
  int64_t num_entries;
  EntryOutputs out;
  float* result;
};

// zclip_step on norm[0], from one thread.
struct ZClipStep {
  static constexpr bool kL2Only = true;
  ZClipConfig config;
  DeviceValues norm;
  double* state;
  float* result;
};

// normclip_step on norm[0], from one thread; the norm may be of any order.
struct NormClipStep {
  static constexpr bool kL2Only = false;
  NormClipConfig config;
  DeviceValues norm;
  float* result;
};

// autoclip_entry for each entry (a thread per entry), then autoclip_finish.
struct AutoClipStep {
  static constexpr bool kL2Only = true;
  AutoClipConfig config;
  AutoClipBuffers buffers;
  EntryParams entries;
};

// adagc_entry for each entry (a thread per entry), then adagc_finish, which counts the step in
// steps[0].
struct AdaGCStep {
  static constexpr bool kL2Only = true;
  AdaGCConfig config;
  double* gamma;
  double* steps;
  EntryParams entries;
};

// The step alone, on norms already on the device: one block.
cudaError_t launch_step(const ZClipStep& step, cudaStream_t stream);
cudaError_t launch_step(const NormClipStep& step, cudaStream_t stream);
cudaError_t launch_step(const AutoClipStep& step, cudaStream_t stream);
cudaError_t launch_step(const AdaGCStep& step, cudaStream_t stream);

// The norms of norm.list (the step reads norm.total_out, and norm.per_tensor_out for per-tensor
// entries), the step, then `scale` (whose factors the step writes; an empty list scales nothing):
// one cooperative launch with single_launch where the device supports it, else the norm kernel,
// the step's kernel and the scale kernel, bitwise the same.
cudaError_t launch_clip_step(const NormParams& norm, const ZClipStep& step, const ScaleParams& scale, int num_blocks,
                             bool single_launch, cudaStream_t stream);
cudaError_t launch_clip_step(const NormParams& norm, const NormClipStep& step, const ScaleParams& scale, int num_blocks,
                             bool single_launch, cudaStream_t stream);
cudaError_t launch_clip_step(const NormParams& norm, const AutoClipStep& step, const ScaleParams& scale, int num_blocks,
                             bool single_launch, cudaStream_t stream);
cudaError_t launch_clip_step(const NormParams& norm, const AdaGCStep& step, const ScaleParams& scale, int num_blocks,
                             bool single_launch, cudaStream_t stream);

// StepSkipper's step (skip_step_update_): loss and norm one value each, history float64
// [skip_step_series::count, config.window], counters int64 [skip_step_counter::count], result
// float32 [skip_step_result::count]. One block (skip_step_update_kernel.cu).
struct SkipStepParams {
  SkipStepConfig config;
  DeviceValues loss;
  DeviceValues norm;
  double* history;
  int64_t* counters;
  float* result;
};
cudaError_t launch_skip_step_update(const SkipStepParams& params, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastclip
