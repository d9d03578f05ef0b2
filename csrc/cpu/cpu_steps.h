// What the stats ops share on the CPU (zclip_update_, normclip_update_, autoclip_update_,
// adagc_update_): the norms the step reads, given or computed from the grads in one norm pass, the
// per-entry loop, and the grads' update after the step, over the norm pass's plan.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <optional>

#include "../common/list_plan.h"
#include "../common/stats_op_args.h"

namespace fastclip {
namespace cpu {

struct StepNorms {
  at::Tensor total;              // the grads' promoted dtype when computed
  at::Tensor per_tensor;         // the accumulation dtype when computed; empty unless wanted
  std::optional<ListPlan> plan;  // the grads' plan, when the norms were computed from them
};

// The given norms, or those of `grads` (the norm_type norm; per-tensor norms with want_per_tensor).
StepNorms step_norms(const CheckedList& grads, const std::optional<at::Tensor>& total,
                     const std::optional<at::Tensor>& per_tensor, double norm_type, bool want_per_tensor);

// Applies `update` to its grads, reading the factors the step wrote (update_factors).
void update_grads(const StepNorms& norms, const GradsUpdate& update, const float* factors);

// The total-norm steps' run (ZClip, NormClip): the total given, or the norm_type norm of the
// grads (update.grads); step(total, result) writes the result slots; then the grads' update by
// their factor.
template <typename Step>
void run_total_norm_step(const std::optional<at::Tensor>& norm, double norm_type, const at::Tensor& result,
                         const GradsUpdate& update, const Step& step) {
  const StepNorms norms = step_norms(update.grads, norm, std::nullopt, norm_type, /*want_per_tensor=*/false);
  float* out = result.data_ptr<float>();
  step(norms.total.to(at::kDouble).item<double>(), out);
  update_grads(norms, update, update_factors(update, out, nullptr));
}

// Calls step(j, norm of entry j, total norm) for every entry, in parallel: entries own distinct
// state rows (the Python clipper passes each tensor once). Returns the total norm.
template <typename Step>
double for_each_entry(const StepNorms& norms, int64_t grain, const Step& step) {
  const double total = norms.total.to(at::kDouble).item<double>();
  const at::Tensor norms64 = norms.per_tensor.to(at::kDouble).contiguous();
  const double* norm = norms64.data_ptr<double>();
  at::parallel_for(0, norms64.numel(), grain, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) step(j, norm[j], total);
  });
  return total;
}

// The per-entry ops' norms: the given ones, else those of `grads` (t's, checked): an entry per
// grad, or the total.
StepNorms entry_norms(const PerEntryTensors& t, const CheckedList& grads);

// The per-entry steps' run (AutoClip, AdaGC): entry(out, j, norm, total) for every entry in
// parallel (for_each_entry), then finish(result, out, entries, total) on the result slots, then
// the grads' update by their factors.
template <typename Entry, typename Finish>
void run_per_entry_step(const PerEntryTensors& t, const GradsUpdate& update, int64_t grain, const Entry& entry,
                        const Finish& finish) {
  const EntryOutputs out = entry_outputs(t);
  const StepNorms norms = entry_norms(t, update.grads);
  const double total =
      for_each_entry(norms, grain, [&](int64_t j, double norm, double total_norm) { entry(out, j, norm, total_norm); });
  float* result = t.result.data_ptr<float>();
  finish(result, out, t.num_entries(), total);
  update_grads(norms, update, update_factors(update, result, out.coef));
}

}  // namespace cpu
}  // namespace fastclip
