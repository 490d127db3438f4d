// EpollEventLoop: level-triggered epoll with an eventfd for wake-ups. Design notes: docs/eventloop.md.

#include "netio3/EpollEventLoop.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/Logging.hpp"
#include "core/Resolve.hpp"
#include "eventloop/LoopOwnedCallback.hpp"
#include "netio3/Exceptions.hpp"

namespace netio3::detail {

namespace {

/// Events fetched per `epoll_wait`.
constexpr std::size_t max_events_per_wait{256};

void close_fd_logged(int fd) noexcept {
  if (::close(fd) != 0) {
    NETIO3_LOG_WARNING("EpollEventLoop: closing fd {} failed: {}", fd, errno_text(errno));
  }
}

} // namespace

class EpollEventLoopImpl {
public:
  explicit EpollEventLoopImpl(std::function<void()> cb_init);
  EpollEventLoopImpl(const EpollEventLoopImpl&) = delete;
  EpollEventLoopImpl& operator=(const EpollEventLoopImpl&) = delete;
  EpollEventLoopImpl(EpollEventLoopImpl&&) = delete;
  EpollEventLoopImpl& operator=(EpollEventLoopImpl&&) = delete;
  ~EpollEventLoopImpl();

  void register_fd(const EventContext& context);
  void remove_fd(int fd, bool close_fd, bool wait);
  void set_write_interest(int fd, bool enabled);
  void run(std::optional<std::chrono::steady_clock::time_point> deadline);
  void stop();
  [[nodiscard]] bool is_running() const noexcept { return m_running.load(std::memory_order_acquire); }
  [[nodiscard]] bool in_loop_thread() const noexcept {
    return m_loop_thread.load(std::memory_order_acquire) == std::this_thread::get_id();
  }

private:
  /// One registered fd. Heap-allocated so that `epoll_event::data.ptr` can point at it; a removed
  /// entry is only flagged and kept alive until the batch of events that may still point at it has
  /// been handled (see `m_retired`).
  struct Entry {
    int fd{-1};
    std::function<void(int)> cb;
    std::function<void(int)> on_writable_cb;
    bool write_interest{false};
    bool removed{false};
    /// A timerfd/eventfd of the loop's own timers and signals: closed when the loop is destroyed.
    bool owned_by_loop{false};
  };

  /// A change requested from another thread while the loop runs.
  struct PendingChange {
    enum class Kind { Register, Remove, WriteInterest };
    Kind kind{Kind::Register};
    EventContext context{};
    bool flag{false}; ///< Remove: close the fd; WriteInterest: enable
  };

  // All apply_* run with m_mutex held, on the loop thread or while the loop is not running.
  void apply_register(const EventContext& context);
  void apply_remove(int fd, bool close_fd, std::vector<std::unique_ptr<Entry>>& graveyard);
  void apply_write_interest(int fd, bool enabled);
  void apply_pending_locked();
  /// True if a change requested now must be queued (loop running on another thread). m_mutex held.
  [[nodiscard]] bool must_queue_locked() const noexcept {
    return m_running.load(std::memory_order_relaxed) && !in_loop_thread();
  }
  void queue_locked(PendingChange change);
  void wake() noexcept;
  void drain_wake_fd() noexcept;
  void dispatch(std::size_t count);
  void finish_run() noexcept;
  void free_retired() noexcept;
  template <typename Callback>
  void invoke(const char* what, int fd, const Callback& callback) noexcept;

  std::function<void()> m_cb_init;
  int m_epoll_fd{-1};
  int m_wake_fd{-1};

  std::atomic<bool> m_running{false};
  std::atomic<bool> m_stop_requested{false};
  std::atomic<std::thread::id> m_loop_thread{};

  /// Guards m_entries, m_pending and the sequence numbers. Never held while a user callback runs.
  mutable std::mutex m_mutex;
  std::condition_variable m_applied_cv;
  std::unordered_map<int, std::unique_ptr<Entry>> m_entries;
  std::vector<PendingChange> m_pending;
  std::uint64_t m_queued_sequence{0};  ///< number of changes ever queued
  std::uint64_t m_applied_sequence{0}; ///< number of queued changes applied

  /// Entries removed on the loop thread while running; freed (outside m_mutex, since destroying a
  /// callback may run arbitrary destructors that call back into the loop) after the current batch.
  std::vector<std::unique_ptr<Entry>> m_retired;
  std::vector<std::unique_ptr<Entry>> m_retired_swap;
  std::array<epoll_event, max_events_per_wait> m_events{};
};

EpollEventLoopImpl::EpollEventLoopImpl(std::function<void()> cb_init) : m_cb_init{std::move(cb_init)} {
  m_epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (m_epoll_fd < 0) {
    throw EventLoopError("EpollEventLoop: epoll_create1 failed: " + errno_text(errno));
  }
  m_wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (m_wake_fd < 0) {
    const int error = errno;
    ::close(m_epoll_fd);
    throw EventLoopError("EpollEventLoop: eventfd for wake-ups failed: " + errno_text(error));
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.ptr = nullptr; // nullptr marks the wake-up eventfd
  if (::epoll_ctl(m_epoll_fd, EPOLL_CTL_ADD, m_wake_fd, &event) != 0) {
    const int error = errno;
    ::close(m_wake_fd);
    ::close(m_epoll_fd);
    throw EventLoopError("EpollEventLoop: adding the wake-up eventfd to epoll failed: " + errno_text(error));
  }
}

EpollEventLoopImpl::~EpollEventLoopImpl() {
  if (is_running()) {
    NETIO3_LOG_ERROR("EpollEventLoop destroyed while running; stop it and wait for run() to return first");
  }
  // Entries are taken out one at a time and destroyed without m_mutex held: destroying a callback
  // may run destructors (of captured objects, even of timer/signal handles) that call remove_fd on
  // this loop for other entries, which must then still be found and removed normally.
  while (true) {
    std::unique_ptr<Entry> entry;
    {
      const std::lock_guard lock{m_mutex};
      if (m_entries.empty()) {
        break;
      }
      const auto first = m_entries.begin();
      entry = std::move(first->second);
      m_entries.erase(first);
    }
    const int fd = entry->fd;
    const bool owned_by_loop = entry->owned_by_loop;
    entry.reset();
    if (owned_by_loop) {
      close_fd_logged(fd); // a timer or signal whose handle was never destroyed
    }
  }
  std::vector<std::unique_ptr<Entry>> retired;
  {
    const std::lock_guard lock{m_mutex};
    retired.swap(m_retired);
  }
  retired.clear();
  close_fd_logged(m_wake_fd);
  close_fd_logged(m_epoll_fd);
}

// --- changes ----------------------------------------------------------------------------------

void EpollEventLoopImpl::register_fd(const EventContext& context) {
  if (context.fd < 0) {
    throw EventLoopError("EpollEventLoop::register_fd: invalid fd " + std::to_string(context.fd));
  }
  if (!context.cb) {
    throw EventLoopError("EpollEventLoop::register_fd: the callback for fd " + std::to_string(context.fd) +
                         " is empty");
  }
  const std::lock_guard lock{m_mutex};
  if (must_queue_locked()) {
    queue_locked(PendingChange{PendingChange::Kind::Register, context, false});
    return;
  }
  apply_register(context);
}

void EpollEventLoopImpl::remove_fd(int fd, bool close_fd, bool wait) {
  std::vector<std::unique_ptr<Entry>> graveyard; // freed after the lock is released
  {
    std::unique_lock lock{m_mutex};
    if (must_queue_locked()) {
      EventContext context{};
      context.fd = fd;
      queue_locked(PendingChange{PendingChange::Kind::Remove, std::move(context), close_fd});
      if (wait) {
        // The loop applies every queued change before run() returns, so this always ends.
        const std::uint64_t sequence = m_queued_sequence;
        m_applied_cv.wait(lock, [&] { return m_applied_sequence >= sequence; });
      }
      return;
    }
    apply_remove(fd, close_fd, in_loop_thread() ? m_retired : graveyard);
  }
}

void EpollEventLoopImpl::set_write_interest(int fd, bool enabled) {
  const std::lock_guard lock{m_mutex};
  if (must_queue_locked()) {
    EventContext context{};
    context.fd = fd;
    queue_locked(PendingChange{PendingChange::Kind::WriteInterest, std::move(context), enabled});
    return;
  }
  apply_write_interest(fd, enabled);
}

void EpollEventLoopImpl::queue_locked(PendingChange change) {
  // One wake-up per batch of queued changes: the loop applies all of them after any wake-up, so a
  // second write while changes are pending would only cost a syscall.
  const bool first_pending = m_pending.empty();
  m_pending.push_back(std::move(change));
  ++m_queued_sequence;
  if (first_pending) {
    wake();
  }
}

void EpollEventLoopImpl::apply_register(const EventContext& context) {
  auto [slot, inserted] = m_entries.try_emplace(context.fd);
  if (!inserted) {
    throw EventLoopError("EpollEventLoop::register_fd: fd " + std::to_string(context.fd) + " is already registered");
  }
  auto entry = std::make_unique<Entry>();
  entry->fd = context.fd;
  entry->cb = context.cb;
  entry->on_writable_cb = context.on_writable_cb;
  entry->owned_by_loop = context.cb.target<LoopOwnedCallback>() != nullptr;
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.ptr = entry.get();
  if (::epoll_ctl(m_epoll_fd, EPOLL_CTL_ADD, context.fd, &event) != 0) {
    const int error = errno;
    m_entries.erase(slot);
    throw EventLoopError("EpollEventLoop::register_fd: epoll_ctl(ADD) for fd " + std::to_string(context.fd) +
                         " failed: " + errno_text(error));
  }
  slot->second = std::move(entry);
}

void EpollEventLoopImpl::apply_remove(int fd, bool close_fd, std::vector<std::unique_ptr<Entry>>& graveyard) {
  const auto found = m_entries.find(fd);
  if (found != m_entries.end()) {
    // ENOENT/EBADF are expected when the caller closed the fd already (the kernel dropped it then).
    if (::epoll_ctl(m_epoll_fd, EPOLL_CTL_DEL, fd, nullptr) != 0 && errno != ENOENT && errno != EBADF) {
      NETIO3_LOG_WARNING("EpollEventLoop::remove_fd: epoll_ctl(DEL) for fd {} failed: {}", fd, errno_text(errno));
    }
    found->second->removed = true;
    graveyard.push_back(std::move(found->second));
    m_entries.erase(found);
  }
  if (close_fd) {
    close_fd_logged(fd);
  }
}

void EpollEventLoopImpl::apply_write_interest(int fd, bool enabled) {
  const auto found = m_entries.find(fd);
  if (found == m_entries.end()) {
    return;
  }
  Entry& entry = *found->second;
  if (entry.write_interest == enabled) {
    return;
  }
  epoll_event event{};
  event.events = EPOLLIN | (enabled && entry.on_writable_cb ? static_cast<std::uint32_t>(EPOLLOUT) : 0U);
  event.data.ptr = &entry;
  if (::epoll_ctl(m_epoll_fd, EPOLL_CTL_MOD, fd, &event) != 0) {
    NETIO3_LOG_ERROR("EpollEventLoop::set_write_interest: epoll_ctl(MOD) for fd {} failed: {}", fd, errno_text(errno));
    return;
  }
  entry.write_interest = enabled;
}

void EpollEventLoopImpl::apply_pending_locked() {
  if (m_pending.empty()) {
    return;
  }
  for (auto& change : m_pending) {
    try {
      switch (change.kind) {
      case PendingChange::Kind::Register: apply_register(change.context); break;
      case PendingChange::Kind::Remove: apply_remove(change.context.fd, change.flag, m_retired); break;
      case PendingChange::Kind::WriteInterest: apply_write_interest(change.context.fd, change.flag); break;
      }
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("EpollEventLoop: applying a queued change failed: {}", error.what());
    }
  }
  m_pending.clear();
  m_applied_sequence = m_queued_sequence;
  m_applied_cv.notify_all();
}

// --- wake-ups ---------------------------------------------------------------------------------

void EpollEventLoopImpl::wake() noexcept {
  const std::uint64_t one{1};
  ssize_t result{-1};
  do {
    result = ::write(m_wake_fd, &one, sizeof(one));
  } while (result < 0 && errno == EINTR);
  // EAGAIN means the counter is huge, so the loop is woken anyway.
  if (result < 0 && errno != EAGAIN) {
    NETIO3_LOG_ERROR("EpollEventLoop: writing the wake-up eventfd failed: {}", errno_text(errno));
  }
}

void EpollEventLoopImpl::drain_wake_fd() noexcept {
  std::uint64_t counter{0};
  ssize_t result{-1};
  do {
    result = ::read(m_wake_fd, &counter, sizeof(counter));
  } while (result < 0 && errno == EINTR);
}

void EpollEventLoopImpl::stop() {
  {
    const std::lock_guard lock{m_mutex};
    if (!m_running.load(std::memory_order_relaxed)) {
      return; // not remembered for a later run()
    }
    m_stop_requested.store(true, std::memory_order_release);
  }
  if (!in_loop_thread()) {
    wake();
  }
}

// --- running ----------------------------------------------------------------------------------

template <typename Callback>
void EpollEventLoopImpl::invoke(const char* what, int fd, const Callback& callback) noexcept {
  try {
    callback(fd);
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("EpollEventLoop: the {} callback of fd {} threw: {}", what, fd, error.what());
  } catch (...) {
    NETIO3_LOG_ERROR("EpollEventLoop: the {} callback of fd {} threw an unknown exception", what, fd);
  }
}

void EpollEventLoopImpl::dispatch(std::size_t count) {
  for (std::size_t index = 0; index < count; ++index) {
    const epoll_event& event = m_events[index];
    auto* entry = static_cast<Entry*>(event.data.ptr);
    if (entry == nullptr) {
      drain_wake_fd(); // queued changes are applied before the next wait
      continue;
    }
    if (entry->removed) {
      continue; // removed by an earlier callback of this batch
    }
    if ((event.events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0U) {
      invoke("readable", entry->fd, entry->cb);
    }
    if ((event.events & EPOLLOUT) != 0U && !entry->removed && entry->write_interest && entry->on_writable_cb) {
      invoke("writable", entry->fd, entry->on_writable_cb);
    }
    if (m_stop_requested.load(std::memory_order_acquire)) {
      return; // level-triggered: the rest of the batch is reported again by the next run
    }
  }
}

void EpollEventLoopImpl::free_retired() noexcept {
  if (m_retired.empty()) {
    return;
  }
  {
    const std::lock_guard lock{m_mutex};
    m_retired_swap.swap(m_retired);
  }
  m_retired_swap.clear(); // may run destructors that call back into the loop
}

void EpollEventLoopImpl::finish_run() noexcept {
  {
    const std::lock_guard lock{m_mutex};
    // Apply what other threads queued, so that nothing is lost and remove_fd(wait) returns.
    apply_pending_locked();
    m_loop_thread.store(std::thread::id{}, std::memory_order_release);
    m_running.store(false, std::memory_order_release);
    m_stop_requested.store(false, std::memory_order_relaxed);
  }
  drain_wake_fd();
  free_retired();
}

void EpollEventLoopImpl::run(std::optional<std::chrono::steady_clock::time_point> deadline) {
  {
    const std::lock_guard lock{m_mutex};
    if (m_running.load(std::memory_order_relaxed)) {
      throw EventLoopError("EpollEventLoop::run: the loop is already running");
    }
    m_stop_requested.store(false, std::memory_order_relaxed);
    m_loop_thread.store(std::this_thread::get_id(), std::memory_order_release);
    m_running.store(true, std::memory_order_release);
  }
  // Runs on every exit path (stop, deadline, epoll_wait failure).
  class FinishOnExit {
  public:
    explicit FinishOnExit(EpollEventLoopImpl* loop) noexcept : m_loop{loop} {}
    FinishOnExit(const FinishOnExit&) = delete;
    FinishOnExit& operator=(const FinishOnExit&) = delete;
    FinishOnExit(FinishOnExit&&) = delete;
    FinishOnExit& operator=(FinishOnExit&&) = delete;
    ~FinishOnExit() { m_loop->finish_run(); }

  private:
    EpollEventLoopImpl* m_loop;
  };
  const FinishOnExit finish_on_exit{this};

  if (m_cb_init) {
    try {
      m_cb_init();
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("EpollEventLoop: the init callback threw: {}", error.what());
    } catch (...) {
      NETIO3_LOG_ERROR("EpollEventLoop: the init callback threw an unknown exception");
    }
  }

  while (true) {
    {
      const std::lock_guard lock{m_mutex};
      apply_pending_locked();
    }
    free_retired();
    if (m_stop_requested.load(std::memory_order_acquire)) {
      return;
    }
    int timeout_ms{-1};
    if (deadline) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= *deadline) {
        return;
      }
      const auto remaining = std::chrono::ceil<std::chrono::milliseconds>(*deadline - now).count();
      timeout_ms = static_cast<int>(std::min<std::int64_t>(remaining, INT_MAX));
    }
    const int count = ::epoll_wait(m_epoll_fd, m_events.data(), static_cast<int>(m_events.size()), timeout_ms);
    if (count < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw EventLoopError("EpollEventLoop::run: epoll_wait failed: " + errno_text(errno));
    }
    dispatch(static_cast<std::size_t>(count));
    free_retired();
  }
}

} // namespace netio3::detail

namespace netio3 {

EpollEventLoop::EpollEventLoop(std::function<void()> cb_init)
  : m_impl{std::make_unique<detail::EpollEventLoopImpl>(std::move(cb_init))} {}

EpollEventLoop::~EpollEventLoop() = default;

void EpollEventLoop::register_fd(const EventContext& context) {
  m_impl->register_fd(context);
}

void EpollEventLoop::remove_fd(int fd, bool close_fd, bool wait) {
  m_impl->remove_fd(fd, close_fd, wait);
}

void EpollEventLoop::set_write_interest(int fd, bool enabled) {
  m_impl->set_write_interest(fd, enabled);
}

void EpollEventLoop::run() {
  m_impl->run(std::nullopt);
}

void EpollEventLoop::run_for(std::chrono::milliseconds duration) {
  m_impl->run(std::chrono::steady_clock::now() + duration);
}

void EpollEventLoop::stop() {
  m_impl->stop();
}

bool EpollEventLoop::is_running() const {
  return m_impl->is_running();
}

bool EpollEventLoop::in_loop_thread() const {
  return m_impl->in_loop_thread();
}

} // namespace netio3
