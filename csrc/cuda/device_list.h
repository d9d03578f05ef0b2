// Host side of the ops on CUDA: a tensor list planned (common/list_plan.h) with its metadata
// uploaded to the device, on the current stream of the list's device, and the launch parameters
// the kernels take from a plan or from device-held tensors. No host sync. The runtime calls go
// through device_runtime.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <tuple>
#include <vector>

#include "../common/list_plan.h"
#include "../common/stats_op_args.h"
#include "device_runtime.h"
#include "stats_kernels.h"

namespace fastclip {
namespace cuda {

struct DeviceListPlan {
  ListPlan plan;
  at::Tensor metadata;  // device memory holding list's arrays
  ChunkList list;
  at::Device device;
  cudaStream_t stream;  // the scope's

  int grid() const;  // blocks for a launch over the list
};

// The plan of a checked list (common/list_plan.h), in chunks sized for the device. `scope` is the
// list's device; callers hold it while using the result.
DeviceListPlan prepare_on_device(const CheckedList& tensors, const DeviceScope& scope);

// A list's metadata as uploaded: the tensor array at 0, the chunk array at chunk_offset (16-byte
// aligned, so 8 bytes apart after an odd number of 24-byte TensorMetas), `bytes` in all.
struct MetadataLayout {
  size_t chunk_offset;
  size_t bytes;
};
MetadataLayout metadata_layout(size_t num_tensors, size_t num_chunks);

// Writes the staging block of the metadata of `tensors` and `chunks` (staging_bytes(bytes) at
// `block`) exactly as prepare_on_device's upload does: every byte, the gap and the padding zero.
// For tests (fastclip._cuda_on_cpu.staged_list_metadata).
void stage_metadata(const std::vector<TensorMeta>& tensors, const std::vector<ChunkMeta>& chunks, uint8_t* block);

// The norm kernel's parameters and outputs: scratch, the total (the list's promoted dtype) and
// the per-tensor norms (accumulation dtype; empty unless per_tensor).
struct NormLaunch {
  NormParams params;
  at::Tensor scratch, total, per_tensor_norms;
};
NormLaunch norm_launch(const DeviceListPlan& prepared, double norm_type, bool per_tensor);

ClipByNormParams clip_by_norm_params(const DeviceListPlan& prepared, const at::Tensor& total_norm, double max_norm);

// Whether the ops that can run in one cooperative launch do (FASTCLIP_SINGLE_LAUNCH unset or 1),
// or take their several-kernel path (0), for comparing the two; read at every call.
bool single_launch_enabled();

// A device-held tensor's data as the kernels read it.
DeviceValues device_values(const at::Tensor& t);

// The per-entry steps' inputs (the total and the entries' norms, device tensors) and outputs
// (common/stats_op_args.h's PerEntryTensors).
EntryParams entry_params(const PerEntryTensors& t, const at::Tensor& total, const at::Tensor& norms);

// The scale kernel's parameters for a stats op's GradsUpdate, the factors read from `factors`
// (float32, on the device); an inactive update gets an empty list.
ScaleParams grads_scale_params(const DeviceListPlan& prepared, const GradsUpdate& update, const float* factors);

}  // namespace cuda
}  // namespace fastclip
