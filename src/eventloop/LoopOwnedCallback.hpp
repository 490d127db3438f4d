#pragma once

// The fd callback used by timers and signals (private to the event loop).
//
// `BaseEventLoop::create_timer`/`create_signal` register their timerfd/eventfd with the public
// `register_fd`, so the loop recognises these fds by the callback's type: an `EpollEventLoop` that
// finds a `LoopOwnedCallback` in `EventContext::cb` owns the fd and closes it when the loop is
// destroyed with the fd still registered.

#include <cerrno>
#include <cstdint>
#include <functional>
#include <unistd.h>
#include <utility>

namespace netio3::detail {

/// Reads the 8-byte counter of a timerfd or eventfd, then calls the user callback once.
///
/// The read consumes the wake-up (a timer's expiries, a coalescing signal's fires, or one fire of a
/// semaphore-mode signal). When there is nothing to read (a timer stopped or re-armed after the
/// kernel reported it readable), the callback is not called.
class LoopOwnedCallback {
public:
  explicit LoopOwnedCallback(std::function<void()> callback) : m_callback{std::move(callback)} {}

  void operator()(int fd) const {
    std::uint64_t counter{0};
    ssize_t result{-1};
    do {
      result = ::read(fd, &counter, sizeof(counter));
    } while (result < 0 && errno == EINTR);
    if (result != static_cast<ssize_t>(sizeof(counter))) {
      return; // EAGAIN: the wake-up was consumed or cancelled in the meantime
    }
    m_callback();
  }

private:
  std::function<void()> m_callback;
};

} // namespace netio3::detail
