// Timer and signal handles, and their creation on top of `BaseEventLoop::register_fd`.

#include <cerrno>
#include <cstdint>
#include <ctime>
#include <exception>
#include <string>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <utility>

#include "core/Logging.hpp"
#include "core/Resolve.hpp"
#include "eventloop/LoopOwnedCallback.hpp"
#include "netio3/BaseEventLoop.hpp"
#include "netio3/Exceptions.hpp"

namespace netio3 {

namespace {

/// Removes `fd` from `loop` (waiting for a running callback) and closes it; never throws, because
/// it runs from destructors.
void remove_and_close(BaseEventLoop* loop, int fd, const char* what) noexcept {
  if (fd < 0) {
    return;
  }
  try {
    if (loop != nullptr) {
      loop->remove_fd(fd, true, true);
    } else {
      ::close(fd);
    }
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("Removing the {} fd {} from its event loop failed: {}", what, fd, error.what());
  } catch (...) {
    NETIO3_LOG_ERROR("Removing the {} fd {} from its event loop failed with an unknown exception", what, fd);
  }
}

timespec to_timespec(std::chrono::nanoseconds duration) noexcept {
  constexpr std::int64_t nanoseconds_per_second{1'000'000'000};
  const auto count = duration.count();
  return timespec{static_cast<time_t>(count / nanoseconds_per_second),
                  static_cast<long>(count % nanoseconds_per_second)};
}

void arm_timer(int fd, std::chrono::nanoseconds first, std::chrono::nanoseconds period, const char* caller) {
  if (fd < 0) {
    throw EventLoopError(std::string{caller} + ": the timer handle is empty");
  }
  if (first.count() <= 0) {
    throw EventLoopError(std::string{caller} + ": the duration must be positive, got " + std::to_string(first.count()) +
                         " ns");
  }
  const itimerspec setting{to_timespec(period), to_timespec(first)};
  if (::timerfd_settime(fd, 0, &setting, nullptr) != 0) {
    throw EventLoopError(std::string{caller} + ": timerfd_settime on fd " + std::to_string(fd) +
                         " failed: " + detail::errno_text(errno));
  }
}

} // namespace

// --- EventTimerHandle -------------------------------------------------------------------------

EventTimerHandle::EventTimerHandle(EventTimerHandle&& other) noexcept
  : m_loop{std::exchange(other.m_loop, nullptr)}, m_fd{std::exchange(other.m_fd, -1)} {}

EventTimerHandle& EventTimerHandle::operator=(EventTimerHandle&& other) noexcept {
  if (this != &other) {
    reset();
    m_loop = std::exchange(other.m_loop, nullptr);
    m_fd = std::exchange(other.m_fd, -1);
  }
  return *this;
}

EventTimerHandle::~EventTimerHandle() {
  reset();
}

void EventTimerHandle::start(std::chrono::nanoseconds period) {
  arm_timer(m_fd, period, period, "EventTimerHandle::start");
}

void EventTimerHandle::start_once(std::chrono::nanoseconds delay) {
  arm_timer(m_fd, delay, std::chrono::nanoseconds{0}, "EventTimerHandle::start_once");
}

void EventTimerHandle::stop() {
  if (m_fd < 0) {
    return;
  }
  const itimerspec disarmed{};
  if (::timerfd_settime(m_fd, 0, &disarmed, nullptr) != 0) {
    throw EventLoopError("EventTimerHandle::stop: timerfd_settime on fd " + std::to_string(m_fd) +
                         " failed: " + detail::errno_text(errno));
  }
}

void EventTimerHandle::reset() noexcept {
  remove_and_close(m_loop, std::exchange(m_fd, -1), "timer");
  m_loop = nullptr;
}

// --- EventSignalHandle ------------------------------------------------------------------------

EventSignalHandle::EventSignalHandle(EventSignalHandle&& other) noexcept
  : m_loop{std::exchange(other.m_loop, nullptr)}, m_fd{std::exchange(other.m_fd, -1)} {}

EventSignalHandle& EventSignalHandle::operator=(EventSignalHandle&& other) noexcept {
  if (this != &other) {
    reset();
    m_loop = std::exchange(other.m_loop, nullptr);
    m_fd = std::exchange(other.m_fd, -1);
  }
  return *this;
}

EventSignalHandle::~EventSignalHandle() {
  reset();
}

void EventSignalHandle::fire() const {
  if (m_fd < 0) {
    throw EventLoopError("EventSignalHandle::fire: the signal handle is empty");
  }
  const std::uint64_t one{1};
  ssize_t result{-1};
  do {
    result = ::write(m_fd, &one, sizeof(one));
  } while (result < 0 && errno == EINTR);
  if (result != static_cast<ssize_t>(sizeof(one))) {
    throw EventLoopError("EventSignalHandle::fire: write to eventfd " + std::to_string(m_fd) +
                         " failed: " + detail::errno_text(errno));
  }
}

void EventSignalHandle::reset() noexcept {
  remove_and_close(m_loop, std::exchange(m_fd, -1), "signal");
  m_loop = nullptr;
}

// --- creation ---------------------------------------------------------------------------------

EventTimerHandle BaseEventLoop::create_timer(std::function<void()> cb) {
  if (!cb) {
    throw EventLoopError("BaseEventLoop::create_timer: the callback is empty");
  }
  const int fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) {
    throw EventLoopError("BaseEventLoop::create_timer: timerfd_create failed: " + detail::errno_text(errno));
  }
  try {
    register_fd(EventContext{fd, detail::LoopOwnedCallback{std::move(cb)}, nullptr});
  } catch (...) {
    ::close(fd);
    throw;
  }
  return EventTimerHandle{this, fd};
}

EventSignalHandle BaseEventLoop::create_signal(std::function<void()> cb, bool count_each_fire) {
  if (!cb) {
    throw EventLoopError("BaseEventLoop::create_signal: the callback is empty");
  }
  const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | (count_each_fire ? EFD_SEMAPHORE : 0));
  if (fd < 0) {
    throw EventLoopError("BaseEventLoop::create_signal: eventfd failed: " + detail::errno_text(errno));
  }
  try {
    register_fd(EventContext{fd, detail::LoopOwnedCallback{std::move(cb)}, nullptr});
  } catch (...) {
    ::close(fd);
    throw;
  }
  return EventSignalHandle{this, fd};
}

} // namespace netio3
