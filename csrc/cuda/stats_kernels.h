// The interface between the stats ops' CUDA entry points (zclip_update.cpp, autoclip_update.cpp,
// adagc_update.cpp) and their one-block kernels: the steps' configs and state are the CPU ops'
// own (common/<clipper>_step.h), so both backends run the same arithmetic on the same tensors.
#pragma once

#include "../common/adagc_step.h"
#include "../common/autoclip_step.h"
#include "../common/zclip_step.h"
#include "kernels.h"

namespace fastclip {
namespace cuda {

// zclip_update_: zclip_step on norm[0], from one thread.
cudaError_t launch_zclip_update(const ZClipConfig& config, DeviceValues norm, double* state, float* result,
                                cudaStream_t stream);

// The per-tensor stats kernels' inputs and outputs: this step's total norm, the norms of its
// num_entries entries, and what the step writes.
struct EntryParams {
  DeviceValues total_norm;
  DeviceValues norms;
  int64_t num_entries;
  EntryOutputs out;
  float* result;
};

// autoclip_update_: autoclip_entry for each entry (one block, a thread per entry), then
// autoclip_finish.
cudaError_t launch_autoclip_update(const AutoClipConfig& config, const AutoClipBuffers& buffers,
                                   const EntryParams& entries, cudaStream_t stream);

// adagc_update_: adagc_entry for each entry (one block, a thread per entry), then adagc_finish,
// which counts the step in steps[0].
cudaError_t launch_adagc_update(const AdaGCConfig& config, double* gamma, double* steps, const EntryParams& entries,
                                cudaStream_t stream);

}  // namespace cuda
}  // namespace fastclip
