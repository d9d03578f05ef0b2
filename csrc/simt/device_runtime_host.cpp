// csrc/cuda/device_runtime.h in the CPU execution layer (fastclip._cuda_on_cpu): the entry points
// run on CPU tensors, "device memory" is host memory, and the layer's one stream is the calling
// thread (simt::launch returns when the kernel has run), so zeroing and uploads are immediate.
// No CUDA runtime call: the layer is built without cudart.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstring>
#include <string>

#include "../cuda/device_runtime.h"
#include "runtime.h"

namespace fastclip {
namespace cuda {

namespace {

// The names of the errors simt::launch returns (cudaGetErrorName is cudart's, which the layer
// does not link).
std::string error_name(cudaError_t error) {
  switch (error) {
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorCooperativeLaunchTooLarge: return "cudaErrorCooperativeLaunchTooLarge";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaError " + std::to_string(static_cast<int>(error));
  }
}

}  // namespace

// The guard of a CPU device does nothing; there is no stream to name.
DeviceScope::DeviceScope(at::Device device) : guard_(device), device_(device), stream_(nullptr) {}

int multiprocessor_count(int /*device*/) { return simt::multiprocessor_count(); }

void zero_async(void* data, size_t bytes, cudaStream_t /*stream*/) { std::memset(data, 0, bytes); }

at::Tensor upload_to_device(size_t bytes, c10::function_ref<void(uint8_t*)> fill, const DeviceScope& scope) {
  at::Tensor buffer = at::empty({static_cast<int64_t>(staging_bytes(bytes))},
                                at::TensorOptions().dtype(at::kByte).device(scope.device()));
  stage_upload(buffer.data_ptr<uint8_t>(), bytes, fill);  // staged as on the GPU
  return buffer;
}

size_t kept_staging_buffers() { return 0; }  // the layer captures no graph

// A failed launch becomes torch's error (a RuntimeError in Python) at the caller's location,
// saying what simt saw.
void check_launch(c10::function_ref<cudaError_t()> launch, const std::source_location& where) {
  const cudaError_t error = launch();
  if (error == cudaSuccess) return;
  throw c10::Error(c10::SourceLocation{where.function_name(), where.file_name(), where.line()},
                   "fastclip: kernel launch on the CPU execution layer failed (" + error_name(error) +
                       "): " + simt::last_error_message());
}

}  // namespace cuda
}  // namespace fastclip
