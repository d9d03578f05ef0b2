#include "stable_spam_op_args.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "list_plan.h"
#include "stats_checks.h"

namespace fastclip {
namespace {

// rows: int64, one per grad, each naming a row of state (float64 [rows, stable_spam_row::count]);
// distinct where the op writes them (`written`: each entry updates its row).
void check_rows_and_state(at::TensorList grads, const at::Tensor& rows, const at::Tensor& state,
                          const at::Device& device, bool written) {
  check_state_tensor(state, "state", at::kDouble, device, -1);
  TORCH_CHECK(state.dim() == 2 && state.size(1) == stable_spam_row::count, "fastclip: state must have shape [tensors, ",
              stable_spam_row::count, "], got ", state.sizes());
  check_rows(rows, static_cast<int64_t>(grads.size()), state.size(0), device, /*distinct=*/written);
}

void check_pair_tensor(const at::Tensor& t, const char* arg, int64_t n, const at::Device& device) {
  check_state_tensor(t, arg, at::kDouble, device, 2 * n);
  TORCH_CHECK(t.dim() == 2 && t.size(0) == 2, "fastclip: ", arg, " must have shape [2, ", n, "], got ", t.sizes());
}

}  // namespace

at::Tensor stable_spam_norms_output(const StableSPAMNormsArgs& a, double gamma3) {
  const at::Device device = a.state.device();
  check_rows_and_state(a.grads.tensors(), a.rows, a.state, device, /*written=*/false);
  const int64_t n = static_cast<int64_t>(a.grads.size());
  if (a.maxima.has_value()) check_state_tensor(*a.maxima, "maxima", at::kDouble, device, n);
  check_open_unit_interval(gamma3, "gamma3");
  return at::zeros({2, n}, at::TensorOptions().dtype(at::kDouble).device(device));
}

StableSPAMConfig stable_spam_config(const StableSPAMTensors& t, double gamma1, double gamma2, double gamma3, double eps,
                                    int64_t total_steps, double eta_min, int64_t reset_every,
                                    c10::string_view on_nonfinite, bool reference) {
  const at::Device device = t.state.device();
  const int64_t n = t.num_entries();
  check_rows_and_state(t.grads.tensors(), t.rows, t.state, device, /*written=*/true);
  check_pair_tensor(t.stats, "stats", n, device);
  check_pair_tensor(t.split, "split", n, device);
  check_state_tensor(t.steps, "steps", at::kDouble, device, 1);
  check_entry_outputs(t.result, t.coef, t.threshold, n, device);
  check_reads_apart_from_writes(t.grads.tensors(), "grads", {t.stats, t.split}, "stats", /*read_is_list=*/true,
                                "pass the statistics stable_spam_norms returned");
  TORCH_CHECK(gamma1 >= 0.0 && gamma1 < 1.0, "fastclip: gamma1 must lie in [0, 1), got ", gamma1);
  check_open_unit_interval(gamma2, "gamma2");
  check_open_unit_interval(gamma3, "gamma3");
  check_finite_nonnegative(eps, "eps");
  check_nonnegative_count(total_steps, "total_steps", " (0: no decay)");
  TORCH_CHECK(eta_min >= 0.0 && eta_min <= 1.0, "fastclip: eta_min must lie in [0, 1], got ", eta_min);
  check_nonnegative_count(reset_every, "reset_every", " (0: no reset)");
  return StableSPAMConfig{.gamma1 = gamma1,
                          .gamma2 = gamma2,
                          .gamma3 = gamma3,
                          .eps = eps,
                          .eta_min = eta_min,
                          .total_steps = total_steps,
                          .reset_every = reset_every,
                          .reference = reference,
                          .policy = parse_nonfinite_policy(on_nonfinite)};
}

EntryOutputs stable_spam_outputs(const StableSPAMTensors& t) {
  return EntryOutputs{t.rows.const_data_ptr<int64_t>(), t.state.size(0), t.coef.data_ptr<float>(),
                      t.threshold.data_ptr<float>()};
}

}  // namespace fastclip
