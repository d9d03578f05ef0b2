// The interface between Stable-SPAM's CUDA entry points (stable_spam_*.cpp) and their kernels
// (stable_spam_*_kernel.cu), apart from kernels.h so that the others do not depend on its step.
#pragma once

#include "../common/stable_spam_step.h"
#include "kernels.h"

namespace fastclip {
namespace cuda {

// stable_spam_norms: every block reduces whole chunks into two partials each; the last block to
// finish folds each tensor's in chunk order (common/stable_spam_step.h).
struct StableSPAMNormsParams {
  ChunkList list;
  const double* maxima;  // [num_tensors], the first call's (reduced); nullptr for the first call
  const int64_t* rows;   // [num_tensors]: each tensor's row of state
  const double* state;   // [num_rows, stable_spam_row::count]
  int64_t num_rows;
  double gamma3;
  double* chunk_first;        // scratch [num_chunks]
  double* chunk_second;       // scratch [num_chunks]
  double* out;                // [2, num_tensors]
  unsigned int* blocks_done;  // zero before the launch
};
cudaError_t launch_stable_spam_norms(const StableSPAMNormsParams& params, int num_blocks, cudaStream_t stream);

// stable_spam_update_: the step in one block (a thread per entry), writing each tensor's
// SpamApply, then the grads' update over the grid.
struct StableSPAMStepParams {
  StableSPAMConfig config;
  const double* stats;  // [2, num_entries]
  const double* split;  // [2, num_entries]
  double* state;
  double* steps;
  EntryOutputs out;
  float* result;
  SpamApply* apply;  // [num_entries], scratch
  int64_t num_entries;
};
struct StableSPAMApplyParams {
  ChunkList list;
  const SpamApply* apply;
  bool clear_on_zero;
};
cudaError_t launch_stable_spam_update(const StableSPAMStepParams& step, const StableSPAMApplyParams& apply,
                                      int num_blocks, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastclip
