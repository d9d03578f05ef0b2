// The interface between the stateful clippers' CUDA entry points (clipper_bindings.cpp) and their
// one-block kernels (clipper_stats.cu). Plain structs, no torch headers; the arithmetic is the
// CPU ops' own (common/clipper_steps.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../common/adagc_step.h"
#include "../common/autoclip_step.h"
#include "../common/zclip_step.h"

namespace fastclip {
namespace cuda {

// A contiguous device array of a DType; the kernels widen each element to double.
struct DeviceValues {
  const void* data;
  int32_t dtype;  // a DType
};

// zclip_step on norm[0], from one thread.
cudaError_t launch_zclip_update(const ZClipConfig& config, DeviceValues norm, double* state, float* result,
                                cudaStream_t stream);

// autoclip_entry for each of the num_entries norms (one block, a thread per entry), then
// autoclip_finish.
cudaError_t launch_autoclip_update(const AutoClipConfig& config, const AutoClipBuffers& buffers,
                                   const EntryOutputs& out, DeviceValues total_norm, DeviceValues norms,
                                   int64_t num_entries, float* result, cudaStream_t stream);

// adagc_entry for each of the num_entries norms (one block, a thread per entry), then
// adagc_finish, which counts the step in steps[0].
cudaError_t launch_adagc_update(const AdaGCConfig& config, double* gamma, double* steps, const EntryOutputs& out,
                                DeviceValues total_norm, DeviceValues norms, int64_t num_entries, float* result,
                                cudaStream_t stream);

}  // namespace cuda
}  // namespace fastclip
