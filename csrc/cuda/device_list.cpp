#include "device_list.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "device_runtime.h"

namespace fastclip {
namespace cuda {
namespace {

// Two blocks of kThreads per SM keep every SM streaming (where the kernel's registers let two be
// resident; see multi_tensor_norm_kernel.cu).
int max_blocks(int device) { return 2 * multiprocessor_count(device); }

// Chunks of at least kMinChunkSize elements, grown (in powers of two, up to kMaxChunkSize) until
// there are about four per block, so the partials stay few on large lists.
int64_t chunk_size_for(at::TensorList tensors, int device) {
  int64_t total = 0;
  for (const at::Tensor& t : tensors) total += t.numel();
  const int64_t target_chunks = 4 * static_cast<int64_t>(max_blocks(device));
  int64_t size = kMinChunkSize;
  while (total / size > target_chunks && size < kMaxChunkSize) size *= 2;
  return size;
}

// Writes the arrays at their offsets; the gap between them and the padding are the staging's.
void write_metadata(const std::vector<TensorMeta>& tensors, const std::vector<ChunkMeta>& chunks,
                    const MetadataLayout& layout, uint8_t* host) {
  if (!tensors.empty()) std::memcpy(host, tensors.data(), tensors.size() * sizeof(TensorMeta));
  if (!chunks.empty()) std::memcpy(host + layout.chunk_offset, chunks.data(), chunks.size() * sizeof(ChunkMeta));
}

// Copies the plan's metadata (metadata_layout) to the scope's device, on its stream.
at::Tensor upload(const ListPlan& plan, const DeviceScope& scope, ChunkList* list) {
  const MetadataLayout layout = metadata_layout(plan.tensors.size(), plan.chunks.size());
  at::Tensor dev = upload_to_device(
      layout.bytes, [&](uint8_t* host) { write_metadata(plan.tensors, plan.chunks, layout, host); }, scope);
  const uint8_t* base = dev.data_ptr<uint8_t>();
  list->tensors = reinterpret_cast<const TensorMeta*>(base);
  list->chunks = reinterpret_cast<const ChunkMeta*>(base + layout.chunk_offset);
  list->num_tensors = static_cast<int32_t>(plan.tensors.size());
  list->num_chunks = static_cast<int32_t>(plan.chunks.size());
  list->chunk_size = plan.chunk_size;
  return dev;
}

}  // namespace

MetadataLayout metadata_layout(size_t num_tensors, size_t num_chunks) {
  const size_t chunk_offset = (num_tensors * sizeof(TensorMeta) + 15) / 16 * 16;
  return MetadataLayout{chunk_offset, chunk_offset + num_chunks * sizeof(ChunkMeta)};
}

void stage_metadata(const std::vector<TensorMeta>& tensors, const std::vector<ChunkMeta>& chunks, uint8_t* block) {
  const MetadataLayout layout = metadata_layout(tensors.size(), chunks.size());
  stage_upload(block, layout.bytes, [&](uint8_t* host) { write_metadata(tensors, chunks, layout, host); });
}

int DeviceListPlan::grid() const {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(list.num_chunks, max_blocks(device.index()))));
}

DeviceListPlan prepare_on_device(const CheckedList& tensors, const DeviceScope& scope) {
  const at::Device device = scope.device();
  ListPlan plan = plan_tensor_list(tensors, chunk_size_for(tensors.tensors(), device.index()));
  ChunkList list{};
  at::Tensor metadata = upload(plan, scope, &list);
  return DeviceListPlan{std::move(plan), std::move(metadata), list, device, scope.stream()};
}

NormLaunch norm_launch(const DeviceListPlan& prepared, double norm_type, bool per_tensor) {
  const ListPlan& plan = prepared.plan;
  const at::ScalarType acc_type = plan.any_double ? at::kDouble : at::kFloat;
  const int64_t num_tensors = static_cast<int64_t>(plan.tensors.size());
  const int64_t num_chunks = static_cast<int64_t>(plan.chunks.size());
  const auto acc_options = at::TensorOptions().dtype(acc_type).device(prepared.device);

  NormLaunch launch;
  // Scratch, in doubles: chunk partials and per-tensor contributions (norm_math.h holds partials
  // in double), the ticket counter (zeroed here) and the accumulated total (acc_type).
  launch.scratch =
      at::empty({num_chunks + num_tensors + 2}, at::TensorOptions().dtype(at::kDouble).device(prepared.device));
  uint8_t* scratch_bytes = static_cast<uint8_t*>(launch.scratch.data_ptr());
  const int64_t element = launch.scratch.element_size();
  auto* blocks_done = reinterpret_cast<unsigned int*>(scratch_bytes + (num_chunks + num_tensors) * element);
  zero_async(blocks_done, sizeof(unsigned int), prepared.stream);
  launch.total = at::empty({}, at::TensorOptions().dtype(plan.promoted_type).device(prepared.device));
  launch.per_tensor_norms = at::empty({per_tensor ? num_tensors : 0}, acc_options);

  NormParams& params = launch.params;
  params.list = prepared.list;
  params.kind = norm_kind_for(norm_type);
  params.p = norm_type;
  params.acc_double = plan.any_double;
  params.chunk_partials = scratch_bytes;
  params.contributions = scratch_bytes + num_chunks * element;
  params.per_tensor_out = per_tensor ? launch.per_tensor_norms.data_ptr() : nullptr;
  params.total_out = launch.total.data_ptr();
  params.total_dtype = static_cast<int32_t>(to_dtype(plan.promoted_type));
  params.accumulated_total_out = scratch_bytes + (num_chunks + num_tensors + 1) * element;
  params.blocks_done = blocks_done;
  return launch;
}

ClipByNormParams clip_by_norm_params(const DeviceListPlan& prepared, const at::Tensor& total_norm, double max_norm) {
  return ClipByNormParams{prepared.list, device_values(total_norm), max_norm, DeviceValues{nullptr, 0}};
}

bool single_launch_enabled() {
  const char* value = std::getenv("FASTCLIP_SINGLE_LAUNCH");
  if (value == nullptr || *value == '\0' || std::strcmp(value, "1") == 0) return true;
  TORCH_CHECK(std::strcmp(value, "0") == 0, "fastclip: FASTCLIP_SINGLE_LAUNCH must be 0 or 1, got '", value, "'");
  return false;
}

DeviceValues device_values(const at::Tensor& t) {
  return DeviceValues{t.const_data_ptr(), static_cast<int32_t>(to_dtype(t.scalar_type()))};
}

EntryParams entry_params(const PerEntryTensors& t, const at::Tensor& total, const at::Tensor& norms) {
  return EntryParams{device_values(total), device_values(norms), t.num_entries(), entry_outputs(t),
                     t.result.data_ptr<float>()};
}

ScaleParams grads_scale_params(const DeviceListPlan& prepared, const GradsUpdate& update, const float* factors) {
  return ScaleParams{update.active ? prepared.list : ChunkList{},
                     DeviceValues{factors, static_cast<int32_t>(DType::kFloat32)}, update.per_tensor,
                     update.clear_on_zero, update.zero_where_set};
}

}  // namespace cuda
}  // namespace fastclip
