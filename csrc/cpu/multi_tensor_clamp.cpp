#include <torch/library.h>

#include "../common/list_op_args.h"
#include "cpu_chunk_ops.h"
#include "cpu_parallel.h"
#include "cpu_registration.h"

namespace fastclip {
namespace cpu {
namespace {

void multi_tensor_clamp_cpu(at::TensorList tensors, double clip_value) {
  const ListPlan plan = plan_tensor_list(check_multi_tensor_clamp_args(tensors, clip_value), kCpuChunkSize);
  for_each_chunk(plan, [&](int64_t, const TensorMeta& meta, int64_t begin, int64_t end) {
    chunk_clamp(meta, begin, end, clip_value);
  });
  finish_mutation(plan, tensors);
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("multi_tensor_clamp_", &fastclip::cpu::multi_tensor_clamp_cpu);
}
