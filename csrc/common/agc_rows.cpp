#include "agc_rows.h"

namespace fastclip {
namespace {

bool rows_are_blocks(const at::Tensor& t) {
  return t.is_non_overlapping_and_dense() && (t.dim() <= 1 || t.numel() == 0 || t.stride(0) == t.numel() / t.size(0));
}

at::Tensor with_block_rows(const at::Tensor& t) { return rows_are_blocks(t) ? t : t.contiguous(); }

}  // namespace

AgcRows agc_rows_of(at::TensorList grads, at::TensorList params) {
  AgcRows rows;
  rows.grads.reserve(grads.size());
  rows.params.reserve(params.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    rows.grads.push_back(with_block_rows(grads[i]));
    rows.params.push_back(with_block_rows(params[i]));
  }
  return rows;
}

}  // namespace fastclip
