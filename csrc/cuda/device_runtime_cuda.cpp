// device_runtime.h on the GPU: torch's CUDA runtime (device guard, current stream, pinned host
// allocator, C10_CUDA_CHECK). Built only into the CUDA extension; the CPU execution layer has
// its own (../simt/device_runtime_host.cpp).
#include "device_runtime.h"

#include <ATen/ATen.h>
#include <ATen/core/CachingHostAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <mutex>
#include <vector>

namespace fastclip {
namespace cuda {

// The guard makes `device` current before its current stream is read.
DeviceScope::DeviceScope(at::Device device)
    : guard_(device), device_(device), stream_(c10::cuda::getCurrentCUDAStream(device.index()).stream()) {}

int multiprocessor_count(int device) {
  static std::mutex mutex;
  static std::vector<int> counts;
  std::lock_guard<std::mutex> lock(mutex);
  if (static_cast<size_t>(device) >= counts.size()) counts.resize(device + 1, 0);
  if (counts[device] == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&counts[device], cudaDevAttrMultiProcessorCount, device));
  }
  return counts[device];
}

void zero_async(void* data, size_t bytes, cudaStream_t stream) {
  C10_CUDA_CHECK(cudaMemsetAsync(data, 0, bytes, stream));
}

namespace {

// Pinned host buffers read by copies captured into a CUDA graph must outlive the graph: they
// are kept for the life of the process (a few bytes per tensor per capture).
void keep_alive_for_graphs(const at::Tensor& host_buffer) {
  static std::mutex mutex;
  static std::vector<at::Tensor> kept;
  std::lock_guard<std::mutex> lock(mutex);
  kept.push_back(host_buffer);
}

}  // namespace

at::Tensor upload_to_device(size_t bytes, c10::function_ref<void(uint8_t*)> fill, const DeviceScope& scope) {
  const size_t total_bytes = std::max<size_t>(16, bytes);
  const at::Device device = scope.device();
  // The scope's stream is the device's current one (the scope made the device current).
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(device.index());
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream.stream(), &capture));
  at::Tensor host;
  {
    // torch's pinned allocator may query events, which a capture in global mode forbids.
    const c10::cuda::CUDAStreamCaptureModeGuard relaxed(cudaStreamCaptureModeRelaxed);
    host = at::empty({static_cast<int64_t>(total_bytes)}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  }
  uint8_t* host_ptr = host.data_ptr<uint8_t>();
  fill(host_ptr);
  at::Tensor dev = at::empty({static_cast<int64_t>(total_bytes)}, at::TensorOptions().dtype(at::kByte).device(device));
  C10_CUDA_CHECK(cudaMemcpyAsync(dev.data_ptr(), host_ptr, total_bytes, cudaMemcpyHostToDevice, stream.stream()));
  if (capture == cudaStreamCaptureStatusNone) {
    // The pinned block returns to torch's cache only once the copy has run.
    at::getHostAllocator(at::kCUDA)->record_event(host_ptr, host.storage().data_ptr().get_context(), stream.unwrap());
  } else {
    keep_alive_for_graphs(host);
  }
  return dev;
}

// C10_CUDA_CHECK(launch()), with the caller's location in place of this line's.
void check_launch(c10::function_ref<cudaError_t()> launch, const std::source_location& where) {
  c10::cuda::CUDAErrorLogCapture error_log;
  const cudaError_t error = launch();
  c10::cuda::c10_cuda_check_implementation(static_cast<int32_t>(error), where.file_name(), where.function_name(),
                                           where.line(), /*include_device_assertions=*/true, &error_log);
}

}  // namespace cuda
}  // namespace fastclip
