// Host-side helpers shared by the torch-facing CUDA entry points (<op>.cpp): device properties
// and the capture-safe upload of small host-built tables (metadata) to the device. Host code
// only; the kernels (.cu) never include this.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/FunctionRef.h>

#include <cstddef>
#include <cstdint>

namespace fastclip {
namespace cuda {

// The number of SMs of `device` (queried once per device).
int multiprocessor_count(int device);

// Copies `bytes` bytes, written by `fill` into a pinned host staging buffer, to a new device
// buffer (a uint8 tensor of max(bytes, 16) bytes on `stream`'s device) with one async copy on
// `stream`, which must be the current stream of that device. No host sync. Under CUDA graph
// capture the staging buffer is kept alive for the life of the process (the captured copy reads
// it at every replay); otherwise it returns to torch's pinned cache once the copy has run.
at::Tensor upload_to_device(size_t bytes, c10::function_ref<void(uint8_t*)> fill, const c10::cuda::CUDAStream& stream);

}  // namespace cuda
}  // namespace fastclip
