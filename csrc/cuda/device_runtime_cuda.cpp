// device_runtime.h on the GPU: torch's CUDA runtime (device guard, current stream, pinned host
// allocator, C10_CUDA_CHECK). Built only into the CUDA extension; the CPU execution layer has
// its own (../simt/device_runtime_host.cpp).
#include "device_runtime.h"

#include <ATen/ATen.h>
#include <ATen/core/CachingHostAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAStream.h>

#include <cstring>
#include <functional>
#include <mutex>
#include <string_view>
#include <unordered_map>
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

// Pinned host buffers read by copies captured into a CUDA graph must outlive the graph, whose
// lifetime we cannot see: they are kept for the life of the process. To keep that bounded, a
// capture whose bytes equal a kept buffer's reuses it, so capturing the same lists again (a
// re-capture after a shape change back, or every rank's identical warm-up) adds nothing: the
// memory grows with the number of distinct lists captured, not with the captures. Every byte is
// compared, so the staging blocks are written whole (stage_upload).
class KeptForGraphs {
 public:
  // The data of the kept buffer whose bytes equal `host_buffer`'s, `host_buffer` itself kept if
  // none does. The pointer is read under the lock: the vectors may grow once it is released.
  const void* keep(const at::Tensor& host_buffer) {
    const auto* bytes = static_cast<const char*>(host_buffer.const_data_ptr());
    const size_t size = static_cast<size_t>(host_buffer.numel());
    const size_t hash = std::hash<std::string_view>{}(std::string_view(bytes, size));
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<at::Tensor>& same_hash = kept_[hash];
    for (const at::Tensor& t : same_hash) {
      if (static_cast<size_t>(t.numel()) == size && std::memcmp(t.const_data_ptr(), bytes, size) == 0) {
        return t.const_data_ptr();
      }
    }
    same_hash.push_back(host_buffer);
    ++count_;
    return host_buffer.const_data_ptr();
  }

  size_t count() {
    std::lock_guard<std::mutex> lock(mutex_);
    return count_;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<at::Tensor>> kept_;  // by a hash of the bytes
  size_t count_ = 0;
};

KeptForGraphs& kept_for_graphs() {
  static KeptForGraphs kept;
  return kept;
}

}  // namespace

size_t kept_staging_buffers() { return kept_for_graphs().count(); }

at::Tensor upload_to_device(size_t bytes, c10::function_ref<void(uint8_t*)> fill, const DeviceScope& scope) {
  const size_t total_bytes = staging_bytes(bytes);
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
  stage_upload(host_ptr, bytes, fill);  // every byte: kept buffers compare them all
  at::Tensor dev = at::empty({static_cast<int64_t>(total_bytes)}, at::TensorOptions().dtype(at::kByte).device(device));
  if (capture != cudaStreamCaptureStatusNone) {
    C10_CUDA_CHECK(cudaMemcpyAsync(dev.data_ptr(), kept_for_graphs().keep(host), total_bytes, cudaMemcpyHostToDevice,
                                   stream.stream()));
    return dev;
  }
  C10_CUDA_CHECK(cudaMemcpyAsync(dev.data_ptr(), host_ptr, total_bytes, cudaMemcpyHostToDevice, stream.stream()));
  // The pinned block may return to torch's cache only once the copy has run; if the event could
  // not be recorded, the block could be handed out and overwritten while the copy reads it.
  TORCH_CHECK(
      at::getHostAllocator(at::kCUDA)->record_event(host_ptr, host.storage().data_ptr().get_context(), stream.unwrap()),
      "fastclip: could not record the metadata copy's stream on its pinned staging buffer "
      "(torch's pinned host allocator refused it)");
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
