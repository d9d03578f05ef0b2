// stable_spam_update_ on the CPU: every tensor's step (common/stable_spam_step.h), then one pass
// over the grads applying AdaClip's rescale and AdaGN's factor together.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../common/list_plan.h"
#include "../common/stable_spam_op_args.h"
#include "cpu_parallel.h"
#include "cpu_registration.h"
#include "stable_spam_chunks.h"

namespace fastclip {
namespace cpu {
namespace {

void run_stable_spam_update(const StableSPAMConfig& config, const StableSPAMTensors& t) {
  const int64_t n = t.num_entries();
  const double* stats = t.stats.const_data_ptr<double>();
  const double* split = t.split.const_data_ptr<double>();
  double* state = t.state.data_ptr<double>();
  double* steps = t.steps.data_ptr<double>();
  const EntryOutputs out = stable_spam_outputs(t);
  std::vector<SpamApply> apply(n);
  const double total = stable_spam_total(stats + n, n);
  const double k = steps[0] + 1.0;
  const double s = stable_spam_decay(config, k);
  // Entries own distinct state rows (the Python clipper passes each tensor once).
  at::parallel_for(0, n, /*grain=*/256, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      stable_spam_entry(config, state, k, s, out, apply.data(), j, stats[j], stats[n + j], split[j], split[n + j],
                        total);
    }
  });
  stable_spam_finish(config, steps, t.result.data_ptr<float>(), out, apply.data(), n, total);
  if (n == 0) return;
  const ListPlan plan = plan_tensor_list(t.grads, kCpuChunkSize);
  const bool clear_on_zero = config.policy == NonfinitePolicy::kZero;
  for_each_chunk(plan, [&](int64_t c, const TensorMeta& meta, int64_t begin, int64_t end) {
    chunk_adaclip_scale(meta, begin, end, apply[plan.chunks[c].tensor], clear_on_zero);
  });
  finish_mutation(plan, t.grads.tensors());
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("stable_spam_update_", &fastclip::stable_spam_update<fastclip::cpu::run_stable_spam_update>);
}
