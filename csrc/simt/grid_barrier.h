// The OS-level barrier behind grid_barrier(): the blocks of a cooperative launch run at once, one
// per OS thread, and meet here once all of a block's threads have arrived. Where a GPU would hang
// (a block exited, or failed, while others wait), it breaks instead and the launch fails.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>

namespace fastclip {
namespace simt {

class GridBarrier {
 public:
  explicit GridBarrier(unsigned blocks) : blocks_(blocks) {}

  // Returns false if the barrier broke; why() says why.
  bool arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (exited_ > 0) break_locked("a block exited while another reached grid_sync");
    if (broken_) return false;
    if (++arrived_ == blocks_) {
      arrived_ = 0;
      ++generation_;
      ready_.notify_all();
      return true;
    }
    const uint64_t generation = generation_;
    ready_.wait(lock, [&] { return generation_ != generation || broken_; });
    return generation_ != generation;
  }

  void block_exited() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++exited_;
    if (arrived_ > 0) break_locked("a block exited while another waited at grid_sync");
  }

  void break_barrier(const std::string& why) {
    std::lock_guard<std::mutex> lock(mutex_);
    break_locked(why);
  }

  std::string why() {
    std::lock_guard<std::mutex> lock(mutex_);
    return why_;
  }

  // For ThreadSanitizer: what every thread did before grid_sync happens before what any does
  // after. One address per parity of the barrier's generation (the runner's count of completed
  // grid syncs): a thread's release at the next grid_sync must not reach a thread still
  // acquiring from this one.
  void* sync_address(uint64_t generation) { return &sync_[generation & 1]; }

 private:
  void break_locked(const std::string& why) {
    if (!broken_) why_ = why;
    broken_ = true;
    ready_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  const unsigned blocks_;
  unsigned arrived_ = 0, exited_ = 0;
  uint64_t generation_ = 0;
  bool broken_ = false;
  std::string why_;
  char sync_[2] = {0, 0};
};

}  // namespace simt
}  // namespace fastclip
