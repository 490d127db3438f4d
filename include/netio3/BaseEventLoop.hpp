#pragma once

/// @file
/// `BaseEventLoop`: the event-loop interface every backend runs on, with timers and signals built
/// on top of file descriptors.
///
/// Threading contract (every implementation keeps it):
/// - one loop is one thread: `run()` blocks the thread that calls it, and every callback registered
///   on the loop runs on that thread, one at a time;
/// - `register_fd`, `remove_fd`, `set_write_interest`, `stop`, timer and signal handles may be used
///   from any thread; changes made from another thread while the loop runs are queued and applied
///   by the loop thread (in the order they were made);
/// - an exception thrown by a callback is caught and logged; the loop goes on and the fd stays
///   registered.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

namespace netio3 {

class BaseEventLoop;

/// A file descriptor to watch and what to call when it is ready.
struct EventContext {
  /// The file descriptor (a socket, eventfd, timerfd, libfabric wait fd, ...). The loop does not
  /// own it unless `remove_fd(fd, true)` is called.
  int fd{-1};
  /// Called on the loop thread with `fd` when it is readable, or has an error or hang-up
  /// condition (the next read reports it). Level-triggered: called again while the condition stays.
  std::function<void(int fd)> cb{};
  /// Optional: called on the loop thread with `fd` when it is writable, but only while write
  /// interest is enabled with `set_write_interest(fd, true)` (off when registered).
  std::function<void(int fd)> on_writable_cb{};
};

/// A timer on a loop (timerfd). Created by `BaseEventLoop::create_timer`.
///
/// `start`, `start_once` and `stop` may be called from any thread, also from the timer's own
/// callback. Destroying the handle (or `reset()`) removes the timer: when it returns, the callback
/// is no longer called (if destroyed from another thread while the callback runs, it waits for the
/// callback to return). A handle must be destroyed before its loop.
class EventTimerHandle {
public:
  EventTimerHandle() = default;
  /// Used by `BaseEventLoop::create_timer`: takes ownership of the registered timerfd.
  EventTimerHandle(BaseEventLoop* loop, int fd) noexcept : m_loop{loop}, m_fd{fd} {}
  EventTimerHandle(const EventTimerHandle&) = delete;
  EventTimerHandle& operator=(const EventTimerHandle&) = delete;
  /// Takes the timer of `other`, which becomes empty.
  EventTimerHandle(EventTimerHandle&& other) noexcept;
  /// Removes this handle's timer (as `reset()`), then takes the one of `other`, which becomes empty.
  EventTimerHandle& operator=(EventTimerHandle&& other) noexcept;
  ~EventTimerHandle();

  /// Fires every `period` (first after one period), until stopped. Restarts a running timer.
  /// @throws EventLoopError if the handle is empty or `period` is not positive.
  void start(std::chrono::nanoseconds period);
  /// Fires once after `delay`. Restarts a running timer.
  /// @throws EventLoopError if the handle is empty or `delay` is not positive.
  void start_once(std::chrono::nanoseconds delay);
  /// Disarms the timer; a pending expiry that the loop has not handled yet may still fire once.
  void stop();
  /// Removes the timer from its loop and closes it; the handle becomes empty.
  void reset() noexcept;
  /// True when the handle holds a timer.
  [[nodiscard]] bool valid() const noexcept { return m_fd >= 0; }
  /// The timerfd, or -1.
  [[nodiscard]] int fd() const noexcept { return m_fd; }

private:
  BaseEventLoop* m_loop{nullptr};
  int m_fd{-1};
};

/// A signal on a loop (eventfd). Created by `BaseEventLoop::create_signal`.
///
/// `fire()` may be called from any thread (it is one `write` to an eventfd, lock-free and
/// async-signal-safe). Destruction behaves as for `EventTimerHandle`.
class EventSignalHandle {
public:
  EventSignalHandle() = default;
  /// Used by `BaseEventLoop::create_signal`: takes ownership of the registered eventfd.
  EventSignalHandle(BaseEventLoop* loop, int fd) noexcept : m_loop{loop}, m_fd{fd} {}
  EventSignalHandle(const EventSignalHandle&) = delete;
  EventSignalHandle& operator=(const EventSignalHandle&) = delete;
  /// Takes the signal of `other`, which becomes empty.
  EventSignalHandle(EventSignalHandle&& other) noexcept;
  /// Removes this handle's signal (as `reset()`), then takes the one of `other`, which becomes empty.
  EventSignalHandle& operator=(EventSignalHandle&& other) noexcept;
  ~EventSignalHandle();

  /// Makes the loop call the signal's callback. Several fires before the loop handles them
  /// coalesce into one call, unless the signal was created with `count_each_fire`.
  /// @throws EventLoopError if the handle is empty or the eventfd write fails.
  void fire() const;
  /// Removes the signal from its loop and closes it; the handle becomes empty.
  void reset() noexcept;
  /// True when the handle holds a signal.
  [[nodiscard]] bool valid() const noexcept { return m_fd >= 0; }
  /// The eventfd, or -1.
  [[nodiscard]] int fd() const noexcept { return m_fd; }

private:
  BaseEventLoop* m_loop{nullptr};
  int m_fd{-1};
};

/// The event-loop interface. Backends hold it by `std::shared_ptr`; create implementations with
/// `std::make_shared`.
class BaseEventLoop : public std::enable_shared_from_this<BaseEventLoop> {
public:
  BaseEventLoop() = default;
  BaseEventLoop(const BaseEventLoop&) = delete;
  BaseEventLoop& operator=(const BaseEventLoop&) = delete;
  BaseEventLoop(BaseEventLoop&&) = delete;
  BaseEventLoop& operator=(BaseEventLoop&&) = delete;
  virtual ~BaseEventLoop() = default;

  /// Starts watching `context.fd`. Callable from any thread.
  /// @throws EventLoopError if `fd < 0`, `cb` is empty, or the fd is already registered (when
  /// applied at once; a queued registration that fails is logged).
  virtual void register_fd(const EventContext& context) = 0;

  /// Stops watching `fd`; closes it if `close_fd`. Callable from any thread, also from the fd's own
  /// callback. With `wait` (or when called on the loop thread, or while the loop is not running)
  /// the removal is done when the call returns: the fd's callbacks are not called again and none
  /// is running. Without `wait`, from another thread, it is queued and applied soon. Removing an
  /// unknown fd is ignored (and the fd closed if asked).
  virtual void remove_fd(int fd, bool close_fd = false, bool wait = false) = 0;

  /// netio3 addition: whether `on_writable_cb` of `fd` is called when the fd is writable. Callable
  /// from any thread (queued like `register_fd`). Ignored for unknown fds.
  virtual void set_write_interest(int fd, bool enabled) = 0;

  /// Creates a stopped timer whose expiries call `cb` on the loop thread (coalesced: one call per
  /// wake-up, however many periods passed). Implemented on `register_fd`.
  /// @throws EventLoopError if the timerfd cannot be created (errno text in the message).
  virtual EventTimerHandle create_timer(std::function<void()> cb);

  /// Creates a signal whose `fire()` calls `cb` on the loop thread. With `count_each_fire`, `cb` is
  /// called once per `fire()` (eventfd semaphore mode); without it fires coalesce.
  /// @throws EventLoopError if the eventfd cannot be created (errno text in the message).
  virtual EventSignalHandle create_signal(std::function<void()> cb, bool count_each_fire = false);

  /// Runs the loop on the calling thread until `stop()`. Runs the init callback (if any) first.
  /// A stopped loop may be run again.
  /// @throws EventLoopError if the loop is already running.
  virtual void run() = 0;

  /// Like `run()`, but returns after `duration` at the latest.
  virtual void run_for(std::chrono::milliseconds duration) = 0;

  /// Like `run()`, but returns after `seconds` at the latest.
  void run_for(std::uint64_t seconds) { run_for(std::chrono::milliseconds{seconds * 1000U}); }

  /// Makes `run()` return after the callback now running (if any). Callable from any thread and
  /// from inside callbacks; a no-op when the loop is not running. A stop requested before `run()`
  /// starts is not remembered.
  virtual void stop() = 0;

  /// True between the start of `run()` and its return.
  [[nodiscard]] virtual bool is_running() const = 0;

  /// True when called from the thread that is running the loop.
  [[nodiscard]] virtual bool in_loop_thread() const = 0;
};

} // namespace netio3
