/* Memory-ordering helpers for data shared between processes.
 *
 * Every access to a field of shmb_layout.h that another process writes goes through one
 * of these, so the ordering is named at the call site (STYLE.md section 2). */
#ifndef SHMB_ATOMIC_H
#define SHMB_ATOMIC_H

#include <stdint.h>

#define shmb_load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define shmb_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define shmb_store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define shmb_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
/* Read-modify-writes are sequentially consistent: the waiter-count handshake with the
 * futex (waiter increments count then loads the cursor; appender stores the cursor then
 * loads the count) needs a store->load barrier on both sides. */
#define shmb_fetch_add(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define shmb_fence_acquire() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define shmb_fence_release() __atomic_thread_fence(__ATOMIC_RELEASE)
#define shmb_fence_seq_cst() __atomic_thread_fence(__ATOMIC_SEQ_CST)

static inline void shmb_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
