// Host-side walks over long tensor lists (fingerprints, overlap scans) read a few fields of each
// tensor's TensorImpl and StorageImpl: two heap objects per tensor, rarely in cache, each read
// waiting on the one before. On 10,000 one-element grads those stalls were most of an op's host
// time (perf: 59 ns a tensor in the fingerprint). Prefetching ahead overlaps them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/StorageImpl.h>
#include <c10/util/ArrayRef.h>

#include <cstddef>

namespace fastclip {

// A software prefetch of the cache line holding `address`. On x86-64 an asm statement: GCC 12's
// dead-code elimination drops __builtin_prefetch of an address loaded from a TensorImpl.
inline void prefetch_line(const void* address) {
#if defined(__x86_64__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(address)));
#else
  __builtin_prefetch(address);
#endif
}

// How many tensors ahead a walk prefetches: a step of a walk takes about 10 ns once its lines
// are in cache, a line from memory about 100 ns (8 ahead still stalled in perf).
constexpr size_t kPrefetchAhead = 16;

// Call at each index i of a forward walk over `tensors`: it prefetches the TensorImpl of the
// tensor kAhead * 2 further on, and the StorageImpl of the one kAhead further on (its TensorImpl,
// prefetched kAhead steps ago, is in cache by then to say where its storage lives). Undefined
// tensors and tensors without storage prefetch the singleton or nothing: a prefetch never faults.
inline void prefetch_tensor_metadata(at::TensorList tensors, size_t i) {
  constexpr size_t kAhead = kPrefetchAhead;
  // The fields read (storage_ near the start, sizes, numel, flags and key set near the end) span
  // the object: 176 bytes in torch 2.x, so a line at its start, middle and end.
  if (i + 2 * kAhead < tensors.size()) {
    const char* impl = reinterpret_cast<const char*>(tensors[i + 2 * kAhead].unsafeGetTensorImpl());
    prefetch_line(impl);
    prefetch_line(impl + 64);
    prefetch_line(impl + 128);
    prefetch_line(impl + 168);
  }
  if (i + kAhead < tensors.size()) {
    const char* storage = reinterpret_cast<const char*>(
        tensors[i + kAhead].unsafeGetTensorImpl()->unsafe_storage().unsafeGetStorageImpl());
    if (storage != nullptr) {
      prefetch_line(storage);
      prefetch_line(storage + 63);
    }
  }
}

}  // namespace fastclip
