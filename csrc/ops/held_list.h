// A tensor list converted from Python once and held for the steps that follow (torch.classes.
// fastclip.TensorList). Converting a Python list of tens of thousands of tensors costs more than
// clipping them, and a DTensor's local shard costs twice a plain tensor (its only reference is
// its Python object, so every C++ reference taken and dropped increfs and decrefs that object).
// fastclip._C.grads_of (python/python_grads.h) makes one of parameters' grads, read in C++.
// The held_<op> ops run the list ops on it: no per-tensor work in Python at all. The
// list ops still check and plan it at every call (cheaply, by fingerprint: list_plan.cpp), so a
// tensor resized in place since is seen. It holds its tensors alive: fastclip.distributed drops
// it as soon as one of the DTensors it was made for dies.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/custom_class.h>

#include <vector>

namespace fastclip {

struct HeldList : torch::CustomClassHolder {
  explicit HeldList(std::vector<at::Tensor> tensors) : tensors(std::move(tensors)) {}
  std::vector<at::Tensor> tensors;
};

}  // namespace fastclip
