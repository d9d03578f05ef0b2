// C++ users call the ops through the dispatcher once libfastclip is linked (or dlopen'ed).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>

int main() {
  auto norm_op = c10::Dispatcher::singleton()
                     .findSchemaOrThrow("fastclip::multi_tensor_norm", "")
                     .typed<std::tuple<at::Tensor, at::Tensor>(at::TensorList, double, bool)>();
  auto clip_op = c10::Dispatcher::singleton()
                     .findSchemaOrThrow("fastclip::multi_tensor_clip_by_norm_", "")
                     .typed<void(at::TensorList, const at::Tensor&, double)>();
  std::vector<at::Tensor> grads = {torch::randn({300, 7}), torch::randn({1001}).to(torch::kBFloat16)};
  const double expected = std::sqrt(grads[0].to(torch::kDouble).pow(2).sum().item<double>() +
                                    grads[1].to(torch::kDouble).pow(2).sum().item<double>());
  auto [total, per_tensor] = norm_op.call(grads, 2.0, true);
  const double got = total.item<double>();
  if (std::abs(got - expected) > 1e-5 * expected || per_tensor.numel() != 2) {
    std::cerr << "norm mismatch: " << got << " vs " << expected << "\n";
    return 1;
  }
  clip_op.call(grads, total, 1.0);
  auto [clipped, unused] = norm_op.call(grads, 2.0, false);
  if (std::abs(clipped.item<double>() - 1.0) > 1e-2) {
    std::cerr << "clipped norm " << clipped.item<double>() << " is not 1\n";
    return 1;
  }
  std::cout << "fastclip C++ smoke test: 1 passed, 0 failed\n";
  return 0;
}
