// A tensor list converted from Python once and held for the steps that follow (torch.classes.
// fastclip.TensorList). Converting a Python list of tens of thousands of tensors costs more than
// clipping them, and a DTensor's local shard costs twice a plain tensor (its only reference is
// its Python object, so every C++ reference taken and dropped increfs and decrefs that object).
// The held_<op> ops run the list ops on it: no per-tensor work in Python at all. The
// list ops still check and plan it at every call (cheaply, by fingerprint: list_plan.cpp), so a
// tensor resized in place since is seen. It holds its tensors alive: fastclip.distributed drops
// it as soon as one of the DTensors it was made for dies.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/custom_class.h>

#include <optional>
#include <vector>

namespace fastclip {

struct HeldList : torch::CustomClassHolder {
  explicit HeldList(std::vector<at::Tensor> tensors) : tensors(std::move(tensors)) {}
  std::vector<at::Tensor> tensors;
};

// A clipper's parameters (torch.classes.fastclip.ParamList), converted once: a step asks for
// their grads, read here from each parameter's autograd metadata, instead of reading `.grad` in
// Python (the walk over the parameters was most of a step on long lists of small tensors). The
// grads are read afresh at every call: nothing about them is kept, so a replaced, resized or
// dropped grad is seen, and grads set to None are freed.
struct HeldParams : torch::CustomClassHolder {
  explicit HeldParams(std::vector<at::Tensor> params) : params(std::move(params)) {}
  // The parameters' grads, in order (with skip_missing, those that have one; else every
  // parameter's), or nullopt when a parameter has none without skip_missing, or a grad is a
  // tensor subclass (a DTensor, say: Python dispatch): the caller then reads them in Python.
  std::optional<c10::intrusive_ptr<HeldList>> grads(bool skip_missing) const;
  std::vector<at::Tensor> params;
};

}  // namespace fastclip
