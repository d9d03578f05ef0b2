// Torch-facing CUDA entry points: argument checks, device guard, current stream, metadata
// upload and workspace, then one launch per op through launch.h. No host sync anywhere.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "../common/list_plan.h"
#include "device_upload.h"
#include "launch.h"

namespace fastclip {
namespace cuda {
namespace {

// Two blocks of kThreads per SM keep every SM streaming.
int max_blocks(int device) { return 2 * multiprocessor_count(device); }

// Chunks of at least kMinChunkSize elements, grown (in powers of two) until there are about
// four per block, so the partials stay few on large lists.
int64_t chunk_size_for(at::TensorList tensors, int device) {
  int64_t total = 0;
  for (const at::Tensor& t : tensors) total += t.numel();
  const int64_t target_chunks = 4 * static_cast<int64_t>(max_blocks(device));
  int64_t size = kMinChunkSize;
  while (total / size > target_chunks) size *= 2;
  return size;
}

int grid_for(int32_t num_chunks, int device) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_chunks, max_blocks(device))));
}

struct DeviceList {
  at::Tensor buffer;  // holds both arrays
  ChunkList list;
};

// Copies the plan's metadata (the tensor array, then the chunk array at a 16-byte aligned
// offset) to the device on `stream` through a pinned staging buffer.
DeviceList upload(const ListPlan& plan, const c10::cuda::CUDAStream& stream) {
  const size_t tensor_bytes = plan.tensors.size() * sizeof(TensorMeta);
  const size_t chunk_offset = (tensor_bytes + 15) / 16 * 16;
  const size_t chunk_bytes = plan.chunks.size() * sizeof(ChunkMeta);
  at::Tensor dev = upload_to_device(
      chunk_offset + chunk_bytes,
      [&](uint8_t* host) {
        if (tensor_bytes) std::memcpy(host, plan.tensors.data(), tensor_bytes);
        if (chunk_bytes) std::memcpy(host + chunk_offset, plan.chunks.data(), chunk_bytes);
      },
      stream);
  const uint8_t* base = dev.data_ptr<uint8_t>();
  ChunkList list;
  list.tensors = reinterpret_cast<const TensorMeta*>(base);
  list.chunks = reinterpret_cast<const ChunkMeta*>(base + chunk_offset);
  list.num_tensors = static_cast<int32_t>(plan.tensors.size());
  list.num_chunks = static_cast<int32_t>(plan.chunks.size());
  list.chunk_size = plan.chunk_size;
  return DeviceList{dev, list};
}

// A planned list with its metadata on the device, on the current stream of the list's device.
struct DeviceListPlan {
  ListPlan plan;
  DeviceList device_list;
  at::Device device;
  cudaStream_t stream;

  int grid() const { return grid_for(device_list.list.num_chunks, device.index()); }
};

// Callers hold a CUDAGuard for tensors[0]'s device while using the result.
DeviceListPlan prepare(at::TensorList tensors) {
  const at::Device device = tensors[0].device();
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(device.index());
  ListPlan plan = plan_tensor_list(tensors, chunk_size_for(tensors, device.index()));
  DeviceList list = upload(plan, stream);
  return DeviceListPlan{std::move(plan), std::move(list), device, stream.stream()};
}

std::tuple<at::Tensor, at::Tensor> launch_norm(const DeviceListPlan& prepared, double norm_type, bool per_tensor) {
  const ListPlan& plan = prepared.plan;
  const at::ScalarType acc_type = plan.any_double ? at::kDouble : at::kFloat;
  const int64_t num_tensors = static_cast<int64_t>(plan.tensors.size());
  const int64_t num_chunks = static_cast<int64_t>(plan.chunks.size());
  const auto acc_options = at::TensorOptions().dtype(acc_type).device(prepared.device);

  // Scratch: chunk partials, per-tensor contributions, and the ticket counter (zeroed here).
  at::Tensor scratch = at::empty({num_chunks + num_tensors + 1}, acc_options);
  uint8_t* scratch_bytes = static_cast<uint8_t*>(scratch.data_ptr());
  const int64_t element = scratch.element_size();
  auto* blocks_done = reinterpret_cast<unsigned int*>(scratch_bytes + (num_chunks + num_tensors) * element);
  C10_CUDA_CHECK(cudaMemsetAsync(blocks_done, 0, sizeof(unsigned int), prepared.stream));
  at::Tensor total = at::empty({}, at::TensorOptions().dtype(plan.promoted_type).device(prepared.device));
  at::Tensor per_tensor_norms = at::empty({per_tensor ? num_tensors : 0}, acc_options);

  NormParams params;
  params.list = prepared.device_list.list;
  params.kind = norm_kind_for(norm_type);
  params.p = norm_type;
  params.acc_double = plan.any_double;
  params.chunk_partials = scratch_bytes;
  params.contributions = scratch_bytes + num_chunks * element;
  params.per_tensor_out = per_tensor ? per_tensor_norms.data_ptr() : nullptr;
  params.total_out = total.data_ptr();
  params.total_dtype = static_cast<int32_t>(to_dtype(plan.promoted_type));
  params.blocks_done = blocks_done;
  C10_CUDA_CHECK(launch_multi_tensor_norm(params, prepared.grid(), prepared.stream));
  return {total, per_tensor_norms};
}

void launch_scale(const DeviceListPlan& prepared, const at::Tensor& factor, FactorKind kind, double bound,
                  bool clear_on_zero = false) {
  const at::Tensor factor_values = factor.contiguous();
  ScaleParams params;
  params.list = prepared.device_list.list;
  params.factor_kind = kind;
  params.factor = factor_values.data_ptr();
  params.factor_dtype = static_cast<int32_t>(to_dtype(factor_values.scalar_type()));
  params.bound = bound;
  params.clear_on_zero = clear_on_zero;
  C10_CUDA_CHECK(launch_multi_tensor_scale(params, prepared.grid(), prepared.stream));
}

std::tuple<at::Tensor, at::Tensor> multi_tensor_norm_cuda(at::TensorList tensors, double norm_type, bool per_tensor) {
  check_norm_type(norm_type);
  TORCH_CHECK(!tensors.empty(), "fastclip: tensors must not be empty");
  check_tensor_list(tensors, "tensors", /*mutated=*/false);
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  return launch_norm(prepare(tensors), norm_type, per_tensor);
}

void scale_on_device(at::TensorList tensors, const at::Tensor& factor, FactorKind kind, double bound,
                     bool clear_on_zero = false) {
  if (tensors.empty()) return;
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const DeviceListPlan prepared = prepare(tensors);
  launch_scale(prepared, factor, kind, bound, clear_on_zero);
  finish_mutation(prepared.plan, tensors);
}

void multi_tensor_scale_cuda(at::TensorList tensors, const at::Tensor& scale, bool clear_on_zero) {
  check_tensor_list(tensors, "tensors", /*mutated=*/true);
  check_scalar_tensor(scale, "scale", tensors, /*allow_per_tensor=*/true);
  // check_scalar_tensor admits one value, or one per tensor.
  scale_on_device(tensors, scale, scale.numel() == 1 ? FactorKind::kScalar : FactorKind::kPerTensor, 0.0,
                  clear_on_zero);
}

void multi_tensor_clip_by_norm_cuda(at::TensorList tensors, const at::Tensor& total_norm, double max_norm) {
  check_nonnegative(max_norm, "max_norm");
  check_tensor_list(tensors, "tensors", /*mutated=*/true);
  check_scalar_tensor(total_norm, "total_norm", tensors, /*allow_per_tensor=*/false);
  scale_on_device(tensors, total_norm, FactorKind::kClipByNorm, max_norm);
}

// Norm then scale from one uploaded plan: two kernels, the coefficient computed on the device.
at::Tensor multi_tensor_clip_grad_norm_cuda(at::TensorList tensors, double max_norm, double norm_type) {
  check_nonnegative(max_norm, "max_norm");
  check_norm_type(norm_type);
  TORCH_CHECK(!tensors.empty(), "fastclip: tensors must not be empty");
  check_tensor_list(tensors, "tensors", /*mutated=*/true);
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const DeviceListPlan prepared = prepare(tensors);
  at::Tensor total = std::get<0>(launch_norm(prepared, norm_type, /*per_tensor=*/false));
  launch_scale(prepared, total, FactorKind::kClipByNorm, max_norm);
  finish_mutation(prepared.plan, tensors);
  return total;
}

void multi_tensor_clamp_cuda(at::TensorList tensors, double clip_value) {
  check_nonnegative(clip_value, "clip_value");
  check_tensor_list(tensors, "tensors", /*mutated=*/true);
  if (tensors.empty()) return;
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const DeviceListPlan prepared = prepare(tensors);
  ClampParams params;
  params.list = prepared.device_list.list;
  params.bound = clip_value;
  C10_CUDA_CHECK(launch_multi_tensor_clamp(params, prepared.grid(), prepared.stream));
  finish_mutation(prepared.plan, tensors);
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CUDA, m) {
  m.impl("multi_tensor_norm", &fastclip::cuda::multi_tensor_norm_cuda);
  m.impl("multi_tensor_scale_", &fastclip::cuda::multi_tensor_scale_cuda);
  m.impl("multi_tensor_clip_by_norm_", &fastclip::cuda::multi_tensor_clip_by_norm_cuda);
  m.impl("multi_tensor_clip_grad_norm_", &fastclip::cuda::multi_tensor_clip_grad_norm_cuda);
  m.impl("multi_tensor_clamp_", &fastclip::cuda::multi_tensor_clamp_cuda);
}
