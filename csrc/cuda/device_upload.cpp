#include "device_upload.h"

#include <ATen/ATen.h>
#include <ATen/core/CachingHostAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>

#include <algorithm>
#include <mutex>
#include <vector>

namespace fastclip {
namespace cuda {

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

at::Tensor upload_to_device(size_t bytes, c10::function_ref<void(uint8_t*)> fill, const c10::cuda::CUDAStream& stream) {
  const size_t total_bytes = std::max<size_t>(16, bytes);
  const at::Device device = stream.device();
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

}  // namespace cuda
}  // namespace fastclip
