#pragma once

// A mutex that the UNSAFE thread-safety model turns off (private to the libfabric backend).

#include <mutex>

namespace netio3::libfabric {

/// Locks only when enabled: `ThreadSafetyModel::SAFE` takes a real lock, `UNSAFE` none, with one
/// code path. Satisfies Lockable, so std::unique_lock works with it.
class OptionalMutex {
public:
  explicit OptionalMutex(bool enabled) noexcept : m_enabled{enabled} {}
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
  [[nodiscard]] bool try_lock() { return !m_enabled || m_mutex.try_lock(); }

private:
  bool m_enabled;
  std::mutex m_mutex;
};

} // namespace netio3::libfabric
