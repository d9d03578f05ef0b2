// Included before a CUDA kernel source (csrc/cuda/*_kernel.cu) to compile it with the host
// compiler for the execution layer: the toolkit's own headers (cuda_fp16.h, cuda_bf16.h,
// <cuda/atomic> compile on the host as they are), then what they lack on the host: the thread
// coordinates, barriers, warp shuffles and votes (device.h), per-block __shared__ memory, the
// cache-hinted loads and stores, and device-scope atomics on real host atomics.
#pragma once

#ifndef FASTCLIP_CUDA_ON_CPU
#error "cuda_on_cpu.h is for the execution layer's build (FASTCLIP_CUDA_ON_CPU)"
#endif

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <cuda/atomic>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "device.h"

// A block's threads are fibers of one OS thread, and one OS thread runs one block at a time: a
// thread_local is exactly per-block memory.
#undef __shared__
#define __shared__ static thread_local

#define threadIdx (::fastclip::simt::running_thread().thread_idx)
#define blockIdx (::fastclip::simt::running_thread().block->block_idx)
#define blockDim (::fastclip::simt::running_thread().block->block_dim)
#define gridDim (::fastclip::simt::running_thread().block->grid_dim)
#define warpSize 32
// Occupancy is not modelled: the launch bounds are for ptxas alone.
#define __launch_bounds__(...)

inline void __syncthreads() { ::fastclip::simt::block_barrier(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::fastclip::simt::warp_barrier(mask); }
[[noreturn]] inline void __trap() { ::fastclip::simt::trap("the kernel called __trap"); }

namespace fastclip {
namespace simt {

template <typename T>
uint64_t to_bits(T value) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "the layer's shuffles move up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

template <typename T>
T from_bits(uint64_t bits) {
  T value;
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

inline unsigned lane_id() { return running_thread().thread_idx.x % 32u; }

// The lanes of the calling thread's warp that exist: all 32 but in a block's last, partial warp.
inline unsigned existing_lanes() {
  const ThreadCoordinates& t = running_thread();
  const unsigned first = t.thread_idx.x / 32u * 32u;
  const unsigned count = t.block->block_dim.x - first;
  return count >= 32u ? ~0u : (1u << count) - 1u;
}

// A shuffle's width must be a power of two from 1 to 32, as CUDA requires (the layer checks it,
// so a shuffle never reads outside the warp's 32 lanes).
inline void check_width(int width) {
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    throw std::logic_error("simt: a warp shuffle's width must be a power of two from 1 to 32, got " +
                           std::to_string(width));
  }
}

// Every lane's value from lane source(lane), as __shfl_*_sync do: a lane whose source is -1
// (outside what its width-wide segment may read) keeps its own value.
template <typename T, typename Source>
T shuffle(unsigned mask, T value, int width, Source source) {
  check_width(width);
  uint64_t lanes[32];
  warp_exchange(mask, to_bits(value), lanes);
  const int from = source(static_cast<int>(lane_id()));
  return from < 0 ? value : from_bits<T>(lanes[from]);
}

}  // namespace simt
}  // namespace fastclip

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  return ::fastclip::simt::shuffle(mask, var, width,
                                   [&](int lane) { return lane / width * width + (src_lane & (width - 1)); });
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return ::fastclip::simt::shuffle(mask, var, width, [&](int lane) {
    return delta < static_cast<unsigned>(width - lane % width) ? lane + static_cast<int>(delta) : -1;
  });
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return ::fastclip::simt::shuffle(mask, var, width, [&](int lane) {
    return static_cast<unsigned>(lane % width) >= delta ? lane - static_cast<int>(delta) : -1;
  });
}
// A segment may read from earlier segments; one reading from a later segment keeps its own value.
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  return ::fastclip::simt::shuffle(mask, var, width, [&](int lane) {
    const int other = lane ^ (lane_mask & 31);
    return other < (lane / width + 1) * width ? other : -1;
  });
}

// Only the lanes that exist vote (warp_exchange gives a missing lane the caller's value).
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  uint64_t lanes[32];
  ::fastclip::simt::warp_exchange(mask, predicate != 0, lanes);
  unsigned ballot = 0;
  for (int lane = 0; lane < 32; ++lane) ballot |= ((mask >> lane) & 1u) && lanes[lane] ? 1u << lane : 0u;
  return ballot & ::fastclip::simt::existing_lanes();
}
inline int __all_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) == __ballot_sync(mask, 1); }
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }

// Cache-hinted loads and stores: plain copies (the host has one coherent memory).
template <typename T>
T __ldg(const T* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}
template <typename T>
T __ldcg(const T* p) {
  return __ldg(p);
}
template <typename T>
T __ldcs(const T* p) {
  return __ldg(p);
}
template <typename T>
T __ldca(const T* p) {
  return __ldg(p);
}
template <typename T>
void __stcs(T* p, const T& value) {
  std::memcpy(p, &value, sizeof(T));
}
template <typename T>
void __stcg(T* p, const T& value) {
  std::memcpy(p, &value, sizeof(T));
}

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <typename T>
T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value, std::memory_order_relaxed);
}
template <typename T>
T atomicExch(T* address, T value) {
  return std::atomic_ref<T>(*address).exchange(value, std::memory_order_relaxed);
}
template <typename T>
T atomicCAS(T* address, T expected, T desired) {
  std::atomic_ref<T>(*address).compare_exchange_strong(expected, desired, std::memory_order_relaxed);
  return expected;
}
