// Which sanitizer this file is built with, and their annotation entry points (declared here so
// the layer builds without the sanitizers' headers).
#pragma once

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define FASTCLIP_SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FASTCLIP_SIMT_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define FASTCLIP_SIMT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FASTCLIP_SIMT_TSAN 1
#endif
#endif

extern "C" {
#ifdef FASTCLIP_SIMT_ASAN
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
void __asan_unpoison_memory_region(const volatile void* addr, size_t size);
#endif
#ifdef FASTCLIP_SIMT_TSAN
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
#endif
}

namespace fastclip {
namespace simt {

// Happens-before edges for ThreadSanitizer: every release on `sync` before an acquire of it
// happens before what follows that acquire. No-ops in other builds.
inline void tsan_release(void* sync) {
#ifdef FASTCLIP_SIMT_TSAN
  __tsan_release(sync);
#else
  (void)sync;
#endif
}
inline void tsan_acquire(void* sync) {
#ifdef FASTCLIP_SIMT_TSAN
  __tsan_acquire(sync);
#else
  (void)sync;
#endif
}

constexpr bool kSanitized =
#if defined(FASTCLIP_SIMT_ASAN) || defined(FASTCLIP_SIMT_TSAN)
    true;
#else
    false;
#endif

}  // namespace simt
}  // namespace fastclip
