#pragma once

// Locks that the UNSAFE thread-safety model turns off (private to the library: the TCP backend and
// the frontend).

#include <atomic>
#include <mutex>
#include <sched.h>
#include <shared_mutex>

namespace netio3::detail {

/// A lock that does nothing when disabled: `ThreadSafetyModel::UNSAFE` takes no locks, `SAFE`
/// takes real ones, with one code path. Satisfies Lockable, so std::unique_lock works with it.
///
/// A spin lock: taking it is one atomic exchange and releasing it one store (8 ns for the pair
/// against 18 ns for a std::mutex, measured here), which matters on a path that takes it once per
/// 64-byte message. The critical sections are short (queue bookkeeping; at most one non-blocking
/// `sendmsg`), so a waiter spins briefly and then yields the processor until the lock is free: a
/// holder that shares the waiter's processor gets to run and release it.
class OptionalMutex {
public:
  explicit OptionalMutex(bool enabled) noexcept : m_enabled{enabled} {}
  void lock() noexcept {
    if (m_enabled && m_locked.exchange(true, std::memory_order_acquire)) {
      lock_contended();
    }
  }
  void unlock() noexcept {
    if (m_enabled) {
      m_locked.store(false, std::memory_order_release);
    }
  }
  [[nodiscard]] bool try_lock() noexcept {
    return !m_enabled ||
           (!m_locked.load(std::memory_order_relaxed) && !m_locked.exchange(true, std::memory_order_acquire));
  }

private:
  static constexpr int spin_attempts{64};
  static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  void lock_contended() noexcept {
    int spins = 0;
    do {
      // Wait until it looks free before trying again (reading does not take the cache line away
      // from the holder).
      while (m_locked.load(std::memory_order_relaxed)) {
        if (spins < spin_attempts) {
          cpu_relax();
          ++spins;
        } else {
          ::sched_yield();
        }
      }
    } while (m_locked.exchange(true, std::memory_order_acquire));
  }

  bool m_enabled;
  std::atomic<bool> m_locked{false};
};

/// A shared mutex that does nothing when disabled (see `OptionalMutex`). Satisfies SharedLockable.
class OptionalSharedMutex {
public:
  explicit OptionalSharedMutex(bool enabled) noexcept : m_enabled{enabled} {}
  void lock() {
    if (m_enabled) {
      m_mutex.lock();
    }
  }
  void unlock() {
    if (m_enabled) {
      m_mutex.unlock();
    }
  }
  void lock_shared() {
    if (m_enabled) {
      m_mutex.lock_shared();
    }
  }
  void unlock_shared() {
    if (m_enabled) {
      m_mutex.unlock_shared();
    }
  }

private:
  bool m_enabled;
  std::shared_mutex m_mutex;
};

} // namespace netio3::detail
