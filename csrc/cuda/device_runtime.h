// The CUDA runtime as the host entry points (<op>.cpp, device_list.cpp) use it: the device's
// scope and current stream, zeroing, the upload of host-built tables, the SM count, and the
// check of a launch's error. Every runtime call of the entry points goes through here, so the
// same entry points run in two builds:
//   device_runtime_cuda.cpp     the CUDA extension (fastclip._C): torch's CUDA runtime;
//   ../simt/device_runtime_host.cpp   the CPU execution layer (fastclip._cuda_on_cpu, built with
//                               FASTCLIP_CUDA_ON_CPU): CPU tensors, synchronous launches.
// No c10/cuda header, so the layer compiles it without torch's CUDA build.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/FunctionRef.h>
#include <driver_types.h>  // cudaError_t, cudaStream_t

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>

// The dispatch key the entry points register for: the layer runs them on CPU tensors, in place
// of the native CPU kernels (which _C then leaves unregistered; cpu/cpu_registration.h).
#ifdef FASTCLIP_CUDA_ON_CPU
#define FASTCLIP_CUDA_DISPATCH_KEY CPU
#else
#define FASTCLIP_CUDA_DISPATCH_KEY CUDA
#endif

namespace fastclip {
namespace cuda {

// Held by an entry point while it plans, uploads and launches: `device` is the current device
// for the scope (torch's device guard, restored at its end; a no-op for the CPU), and stream()
// is that device's current stream (nullptr in the layer, whose launches are synchronous).
class DeviceScope {
 public:
  explicit DeviceScope(at::Device device);  // defined by the runtime implementation
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

  at::Device device() const { return device_; }
  cudaStream_t stream() const { return stream_; }

 private:
  c10::DeviceGuard guard_;
  at::Device device_;
  cudaStream_t stream_;
};

// The number of SMs of `device` (queried once per device; the layer's simt::multiprocessor_count).
int multiprocessor_count(int device);

// Sets `bytes` bytes at device address `data` to zero, in stream order.
void zero_async(void* data, size_t bytes, cudaStream_t stream);

// Copies `bytes` bytes, written by `fill` into a host staging buffer, to a new device buffer (a
// uint8 tensor of staging_bytes(bytes) bytes on the scope's device) with one async copy on the
// scope's stream. No host sync. The staging block is written by stage_upload. On the GPU it is
// pinned: under CUDA graph capture it is kept alive for the life of the process (the captured copy
// reads it at every replay), once per distinct content (every byte compared), so re-capturing the
// same lists keeps nothing more; otherwise it returns to torch's pinned cache once the copy has run
// (an event that cannot be recorded is an error). In the layer the staging block is the returned
// CPU tensor itself.
at::Tensor upload_to_device(size_t bytes, c10::function_ref<void(uint8_t*)> fill, const DeviceScope& scope);

// The size of an upload's staging block and device buffer: at least 16 bytes.
inline size_t staging_bytes(size_t bytes) { return bytes < 16 ? 16 : bytes; }

// Writes the staging block of an upload of `bytes` bytes (staging_bytes(bytes) at `block`, which
// may hold anything: torch's pinned blocks are recycled as they are): every byte zeroed, then
// `fill`'s. So the bytes staged depend on what `fill` writes alone, gaps and padding included.
inline void stage_upload(uint8_t* block, size_t bytes, c10::function_ref<void(uint8_t*)> fill) {
  std::memset(block, 0, staging_bytes(bytes));
  fill(block);
}

// The staging buffers kept for captured graphs (upload_to_device), for tests; 0 in the layer.
size_t kept_staging_buffers();

// Runs `launch` (a kernels.h launcher) and throws torch's error if it failed, as C10_CUDA_CHECK
// does (the CUDA error log captured around the launch, the caller's source location); in the layer
// the message says what simt saw (simt::last_error_message()). A callable rather than a value so
// that the capture can surround the launch.
void check_launch(c10::function_ref<cudaError_t()> launch,
                  const std::source_location& where = std::source_location::current());

}  // namespace cuda
}  // namespace fastclip
