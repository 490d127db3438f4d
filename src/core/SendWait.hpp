#pragma once

// Private: the waiting behind NetworkBackend::wait_for_send_space and wait_for_completed_sends
// (include/netio3/SendWait.hpp), shared by the backends.
//
// One hub per backend: a mutex, a condition variable and an epoch. Waiters count themselves in
// `m_waiters` before they look at the endpoint's state (`probe`); the loop calls `notify` after it
// changed that state (room freed, keys completed, established, closed). `notify` costs one atomic
// load while nobody waits, and is never on the path of a send.
//
// No lost wake-up: a waiter increments `m_waiters` and then probes under the lock that guards the
// state it reads (the backend's or the connection's); the loop changes that state and calls
// `notify` under the same lock, or (for the atomic completion counters) with sequentially
// consistent accesses on both sides. Either the probe sees the change, or `notify` sees the waiter
// and bumps the epoch, which the waiter compares before it sleeps.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>

#include "netio3/SendWait.hpp"

namespace netio3::detail {

class SendWaitHub {
public:
  /// After a change that may end a wait (any thread; see above for the locks): wakes the waiters,
  /// if there are any.
  void notify() noexcept {
    if (m_waiters.load(std::memory_order_seq_cst) != 0) {
      wake();
    }
  }

  /// True while a thread waits (the loop may skip work that only waiters need).
  [[nodiscard]] bool has_waiters() const noexcept { return m_waiters.load(std::memory_order_seq_cst) != 0; }

  /// Backend destruction (first thing, before anything is torn down): every wait in progress
  /// returns CLOSED, and this returns once the last waiter has left the backend.
  void shut_down() noexcept {
    std::unique_lock lock{m_mutex};
    m_shut_down = true;
    ++m_epoch;
    m_changed.notify_all();
    m_left.wait(lock, [&] { return m_inside == 0; });
  }

  /// Validates a wait's `timeout` before anything else is looked at (the backends call it first,
  /// so that a wrong argument is reported even where the wait would end at once).
  /// @throws std::invalid_argument naming `what` if `timeout` is negative
  static void check_timeout(const char* what, std::chrono::milliseconds timeout) {
    if (timeout < std::chrono::milliseconds::zero()) {
      throw std::invalid_argument(std::string{what} + ": negative timeout (" + std::to_string(timeout.count()) +
                                  " ms)");
    }
  }

  /// Waits until `probe()` (called without the hub's lock, so that it may take the backend's)
  /// returns a status, `timeout` passes or the hub shuts down. `probe` returns std::nullopt while
  /// the thing waited for is not there.
  /// @throws std::invalid_argument if `timeout` is negative
  template <typename Probe>
  WaitStatus wait(std::chrono::milliseconds timeout, const char* what, const Probe& probe) {
    check_timeout(what, timeout);
    using Clock = std::chrono::steady_clock;
    // Longer than any process runs: treated as "no deadline" (and no overflow of the time point).
    constexpr auto forever = std::chrono::hours{24 * 365 * 100};
    const bool endless = timeout >= forever;
    const Clock::time_point deadline = endless ? Clock::time_point::max() : Clock::now() + timeout;

    std::unique_lock lock{m_mutex};
    if (m_shut_down) {
      return WaitStatus::CLOSED;
    }
    ++m_inside;
    m_waiters.fetch_add(1, std::memory_order_seq_cst);
    const Leave leave{*this};
    const auto look = [&] {
      lock.unlock();
      try {
        std::optional<WaitStatus> result = probe();
        lock.lock();
        return result;
      } catch (...) {
        lock.lock();
        throw;
      }
    };
    for (;;) {
      const std::uint64_t epoch = m_epoch;
      const std::optional<WaitStatus> status = look();
      if (status) {
        return *status;
      }
      if (m_shut_down) {
        return WaitStatus::CLOSED;
      }
      if (m_epoch != epoch) {
        continue; // changed while probing: look again
      }
      if (endless) {
        m_changed.wait(lock, [&] { return m_epoch != epoch; });
      } else if (!m_changed.wait_until(lock, deadline, [&] { return m_epoch != epoch; })) {
        // Timed out: one last look, so that a change at the deadline is not reported as a timeout.
        const std::optional<WaitStatus> last = look();
        return last.value_or(WaitStatus::TIMED_OUT);
      }
    }
  }

private:
  /// Leaves the hub (the lock is held when it runs).
  struct Leave {
    SendWaitHub& hub;
    Leave(const Leave&) = delete;
    Leave& operator=(const Leave&) = delete;
    Leave(Leave&&) = delete;
    Leave& operator=(Leave&&) = delete;
    explicit Leave(SendWaitHub& owner) noexcept : hub{owner} {}
    ~Leave() {
      hub.m_waiters.fetch_sub(1, std::memory_order_seq_cst);
      if (--hub.m_inside == 0 && hub.m_shut_down) {
        hub.m_left.notify_all();
      }
    }
  };

  void wake() noexcept {
    {
      const std::lock_guard lock{m_mutex};
      ++m_epoch;
    }
    m_changed.notify_all();
  }

  std::mutex m_mutex;
  std::condition_variable m_changed; ///< the epoch moved
  std::condition_variable m_left;    ///< a waiter left (shut_down waits for the last)
  std::uint64_t m_epoch{0};          ///< (m_mutex) bumped by every wake-up
  std::uint32_t m_inside{0};         ///< (m_mutex) threads inside `wait`
  bool m_shut_down{false};           ///< (m_mutex)
  std::atomic<std::uint32_t> m_waiters{0};
};

} // namespace netio3::detail
