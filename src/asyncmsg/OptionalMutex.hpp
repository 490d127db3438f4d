#pragma once

// Locks that the UNSAFE thread-safety model turns off (private to the TCP backend).

#include <mutex>
#include <shared_mutex>

namespace netio3::asyncmsg {

/// A mutex that does nothing when disabled: `ThreadSafetyModel::UNSAFE` takes no locks, `SAFE`
/// takes real ones, with one code path. Satisfies Lockable, so std::unique_lock works with it.
class OptionalMutex {
public:
  explicit OptionalMutex(bool enabled) noexcept : m_enabled{enabled} {}
  /// Spins briefly before sleeping: the critical sections of the data path are a few hundred
  /// nanoseconds, far less than the two context switches of a futex sleep and wake-up.
  void lock() {
    if (!m_enabled) {
      return;
    }
    for (int attempt = 0; attempt < spin_attempts; ++attempt) {
      if (m_mutex.try_lock()) {
        return;
      }
      cpu_relax();
    }
    m_mutex.lock();
  }
  void unlock() {
    if (m_enabled) {
      m_mutex.unlock();
    }
  }
  [[nodiscard]] bool try_lock() { return !m_enabled || m_mutex.try_lock(); }

private:
  static constexpr int spin_attempts{100};
  static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }

public:
private:
  bool m_enabled;
  std::mutex m_mutex;
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

} // namespace netio3::asyncmsg
