#pragma once

/// @file
/// `EpollEventLoop`: the default `BaseEventLoop`, on Linux epoll.
///
/// Contract: `run()` blocks the calling thread, which becomes the loop thread: every callback of
/// every backend on this loop runs there, one at a time. `stop()` and fd/timer/signal changes may
/// come from any thread. The loop must outlive the backends and handles that use it, and must not
/// be running when it is destroyed.

#include <chrono>
#include <functional>
#include <memory>

#include "netio3/BaseEventLoop.hpp"

namespace netio3 {

namespace detail {
class EpollEventLoopImpl;
} // namespace detail

/// The default event loop: epoll, level-triggered, an eventfd to wake it for queued changes and
/// `stop()`; timers are timerfds and signals eventfds (see `BaseEventLoop`).
///
/// Usage: `auto loop = std::make_shared<netio3::EpollEventLoop>();` then `loop->run()` on the
/// thread that should run every callback, and `loop->stop()` from anywhere.
///
/// Lifetime: the loop must not be running when it is destroyed; destruction closes its own fds
/// (epoll, wake-up eventfd) and every fd still registered that was registered with the loop's own
/// timers or signals. Fds registered with `register_fd` stay open (they belong to the caller).
class EpollEventLoop final : public BaseEventLoop {
public:
  /// @param cb_init called on the loop thread at the start of every `run()`/`run_for()`.
  /// @throws EventLoopError if epoll or the wake-up eventfd cannot be created.
  explicit EpollEventLoop(std::function<void()> cb_init = nullptr);
  EpollEventLoop(const EpollEventLoop&) = delete;
  EpollEventLoop& operator=(const EpollEventLoop&) = delete;
  EpollEventLoop(EpollEventLoop&&) = delete;
  EpollEventLoop& operator=(EpollEventLoop&&) = delete;
  ~EpollEventLoop() override;

  void register_fd(const EventContext& context) override;
  void remove_fd(int fd, bool close_fd = false, bool wait = false) override;
  void set_write_interest(int fd, bool enabled) override;
  void run() override;
  void run_for(std::chrono::milliseconds duration) override;
  using BaseEventLoop::run_for;
  void stop() override;
  [[nodiscard]] bool is_running() const override;
  [[nodiscard]] bool in_loop_thread() const override;

private:
  std::unique_ptr<detail::EpollEventLoopImpl> m_impl;
};

} // namespace netio3
