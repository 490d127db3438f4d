// Tests of EpollEventLoop, its timers and its signals, with real eventfds, pipes and timerfds.
//
// No test asserts on timing: waits use a generous deadline only so that a broken loop fails the
// test instead of hanging it. "Round trips" (fire a signal, wait for its callback) prove that the
// loop went through further epoll_wait batches, so "never called again" can be checked exactly.

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include "netio3/EpollEventLoop.hpp"
#include "netio3/Exceptions.hpp"
#include "netio3/Log.hpp"

using namespace std::chrono_literals;
using netio3::EpollEventLoop;
using netio3::EventContext;
using netio3::EventLoopError;
using netio3::EventSignalHandle;
using netio3::EventTimerHandle;

namespace {

constexpr auto wait_deadline = 10s;

/// Polls `predicate` until it holds or the deadline passes.
bool wait_until(const std::function<bool()>& predicate, std::chrono::steady_clock::duration deadline = wait_deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (!predicate()) {
    if (std::chrono::steady_clock::now() > end) {
      return false;
    }
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

/// Number of open file descriptors of this process.
std::size_t count_open_fds() {
  std::size_t count{0};
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator{"/proc/self/fd"}) {
    ++count;
  }
  return count;
}

bool fd_is_open(int fd) {
  return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

/// An eventfd owned by the test.
class TestEventFd {
public:
  TestEventFd() : m_fd{::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)} {
    if (m_fd < 0) {
      throw std::runtime_error("eventfd failed");
    }
  }
  TestEventFd(const TestEventFd&) = delete;
  TestEventFd& operator=(const TestEventFd&) = delete;
  TestEventFd(TestEventFd&&) = delete;
  TestEventFd& operator=(TestEventFd&&) = delete;
  ~TestEventFd() {
    if (m_fd >= 0) {
      ::close(m_fd);
    }
  }
  [[nodiscard]] int fd() const { return m_fd; }
  /// Makes the fd readable (until `consume`).
  void signal() const {
    const std::uint64_t one{1};
    EXPECT_EQ(::write(m_fd, &one, sizeof(one)), static_cast<ssize_t>(sizeof(one)));
  }
  /// The loop closed it: do not close it again.
  void forget() { m_fd = -1; }

private:
  int m_fd;
};

void consume(int fd) {
  std::uint64_t value{0};
  [[maybe_unused]] const auto result = ::read(fd, &value, sizeof(value));
}

/// Runs a loop on its own thread for the lifetime of the object.
class LoopRunner {
public:
  explicit LoopRunner(std::shared_ptr<EpollEventLoop> loop) : m_loop{std::move(loop)} {
    m_thread = std::thread{[this] {
      try {
        m_loop->run();
      } catch (const std::exception& error) {
        m_error = error.what();
      }
      m_done.store(true);
    }};
    if (!wait_until([this] { return m_loop->is_running() || m_done.load(); })) {
      fail_hard("the loop did not start");
    }
  }
  LoopRunner(const LoopRunner&) = delete;
  LoopRunner& operator=(const LoopRunner&) = delete;
  LoopRunner(LoopRunner&&) = delete;
  LoopRunner& operator=(LoopRunner&&) = delete;
  ~LoopRunner() { stop_and_join(); }

  /// Stops the loop (unless it stopped already) and joins its thread.
  void stop_and_join() {
    if (!m_thread.joinable()) {
      return;
    }
    if (!wait_until([this] {
          m_loop->stop();
          return m_done.load();
        })) {
      fail_hard("the loop did not stop");
    }
    m_thread.join();
  }
  [[nodiscard]] bool done() const { return m_done.load(); }
  [[nodiscard]] std::thread::id thread_id() const { return m_thread.get_id(); }
  [[nodiscard]] const std::string& error() const { return m_error; }

private:
  [[noreturn]] static void fail_hard(const char* what) {
    // The loop thread cannot be joined: end the test binary instead of hanging it.
    std::fprintf(stderr, "event_loop_test: %s within the deadline\n", what);
    std::abort();
  }

  std::shared_ptr<EpollEventLoop> m_loop;
  std::thread m_thread;
  std::atomic<bool> m_done{false};
  std::string m_error;
};

/// A signal used to prove the loop went through another batch of events.
class RoundTrip {
public:
  explicit RoundTrip(EpollEventLoop& loop) : m_signal{loop.create_signal([this] { ++m_count; })} {}
  /// Fires and waits for the callback, twice (the second fire is made after the first callback, so
  /// it is handled by a later epoll_wait batch).
  [[nodiscard]] bool run() {
    for (int round = 0; round < 2; ++round) {
      const int before = m_count.load();
      m_signal.fire();
      if (!wait_until([&] { return m_count.load() > before; })) {
        return false;
      }
    }
    return true;
  }

private:
  std::atomic<int> m_count{0};
  EventSignalHandle m_signal;
};

/// Captures error log messages for the lifetime of the object.
class CapturedErrors {
public:
  CapturedErrors() {
    netio3::set_log_sink([this](netio3::LogLevel, std::string_view message) {
      const std::lock_guard lock{m_mutex};
      m_messages.emplace_back(message);
    });
    netio3::set_log_level(netio3::LogLevel::Error);
  }
  CapturedErrors(const CapturedErrors&) = delete;
  CapturedErrors& operator=(const CapturedErrors&) = delete;
  CapturedErrors(CapturedErrors&&) = delete;
  CapturedErrors& operator=(CapturedErrors&&) = delete;
  ~CapturedErrors() {
    netio3::set_log_level(netio3::LogLevel::Off);
    netio3::set_log_sink({});
  }
  [[nodiscard]] bool contains(const std::string& text) const {
    const std::lock_guard lock{m_mutex};
    for (const auto& message : m_messages) {
      if (message.find(text) != std::string::npos) {
        return true;
      }
    }
    return false;
  }

private:
  mutable std::mutex m_mutex;
  std::vector<std::string> m_messages;
};

} // namespace

// --- fds --------------------------------------------------------------------------------------

TEST(EpollEventLoop, FdRegisteredFromOtherThreadIsCalledOnLoopThread) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  EXPECT_TRUE(loop->is_running());
  EXPECT_FALSE(loop->in_loop_thread());
  TestEventFd event;
  std::atomic<int> calls{0};
  std::atomic<bool> on_loop_thread{true};
  std::atomic<bool> thread_matches{true};
  const auto runner_thread = runner.thread_id();
  loop->register_fd(EventContext{event.fd(), [&](int fd) {
                                   consume(fd);
                                   on_loop_thread = on_loop_thread && loop->in_loop_thread();
                                   thread_matches = thread_matches && std::this_thread::get_id() == runner_thread;
                                   ++calls;
                                 }});
  event.signal();
  ASSERT_TRUE(wait_until([&] { return calls.load() == 1; }));
  event.signal();
  ASSERT_TRUE(wait_until([&] { return calls.load() == 2; }));
  EXPECT_TRUE(on_loop_thread.load());
  EXPECT_TRUE(thread_matches.load());
  loop->remove_fd(event.fd(), false, true);
  EXPECT_TRUE(fd_is_open(event.fd())); // not closed unless asked
}

TEST(EpollEventLoop, RegisterRejectsBadArgumentsAndDuplicates) {
  auto loop = std::make_shared<EpollEventLoop>();
  TestEventFd event;
  EXPECT_THROW(loop->register_fd(EventContext{-1, [](int) {}}), EventLoopError);
  EXPECT_THROW(loop->register_fd(EventContext{event.fd(), nullptr}), EventLoopError);
  loop->register_fd(EventContext{event.fd(), [](int) {}});
  EXPECT_THROW(loop->register_fd(EventContext{event.fd(), [](int) {}}), EventLoopError);
  // A regular file cannot be watched by epoll: the error names the cause.
  const int file = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(file, 0);
  try {
    loop->register_fd(EventContext{file, [](int) {}});
    ADD_FAILURE() << "registering a regular file did not throw";
  } catch (const EventLoopError& error) {
    EXPECT_NE(std::string{error.what()}.find("Operation not permitted"), std::string::npos) << error.what();
  }
  ::close(file);
  loop->remove_fd(event.fd());
  loop->register_fd(EventContext{event.fd(), [](int) {}}); // removed, so allowed again
  loop->remove_fd(event.fd());
}

TEST(EpollEventLoop, RemoveUnknownFdClosesItWhenAsked) {
  auto loop = std::make_shared<EpollEventLoop>();
  TestEventFd event;
  loop->remove_fd(event.fd()); // ignored
  EXPECT_TRUE(fd_is_open(event.fd()));
  loop->remove_fd(event.fd(), true);
  EXPECT_FALSE(fd_is_open(event.fd()));
  event.forget();
}

TEST(EpollEventLoop, RemoveWithWaitWhileCallbackRunsStopsAllFurtherCalls) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  RoundTrip round_trip{*loop};
  TestEventFd event;
  event.signal(); // never consumed: level-triggered, so the callback runs on every batch
  std::atomic<int> calls{0};
  std::atomic<bool> in_callback{false};
  loop->register_fd(EventContext{event.fd(), [&](int) {
                                   in_callback = true;
                                   std::this_thread::sleep_for(2ms); // widens the window for the race
                                   ++calls;
                                   in_callback = false;
                                 }});
  ASSERT_TRUE(wait_until([&] { return calls.load() >= 3; }));
  ASSERT_TRUE(wait_until([&] { return in_callback.load(); }));
  loop->remove_fd(event.fd(), false, true);
  EXPECT_FALSE(in_callback.load());
  const int calls_at_removal = calls.load();
  ASSERT_TRUE(round_trip.run());
  EXPECT_EQ(calls.load(), calls_at_removal);
}

TEST(EpollEventLoop, RemoveFromOwnCallbackStopsFurtherCalls) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  RoundTrip round_trip{*loop};
  TestEventFd event;
  std::atomic<int> calls{0};
  loop->register_fd(EventContext{event.fd(), [&](int fd) {
                                   ++calls;
                                   consume(fd);    // reading orders the test thread's write before the close
                                   event.signal(); // readable again: only the removal stops further calls
                                   loop->remove_fd(fd, true);
                                 }});
  event.signal();
  ASSERT_TRUE(wait_until([&] { return calls.load() == 1; }));
  ASSERT_TRUE(round_trip.run());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_FALSE(fd_is_open(event.fd()));
  event.forget();
}

TEST(EpollEventLoop, FdRemovedEarlierInTheSameBatchIsNotCalled) {
  auto loop = std::make_shared<EpollEventLoop>();
  TestEventFd first;
  TestEventFd second;
  first.signal();
  second.signal(); // both readable before run(): the first epoll_wait reports both
  std::atomic<int> calls{0};
  loop->register_fd(EventContext{first.fd(), [&](int) {
                                   ++calls;
                                   loop->remove_fd(second.fd());
                                   loop->remove_fd(first.fd());
                                 }});
  loop->register_fd(EventContext{second.fd(), [&](int) {
                                   ++calls;
                                   loop->remove_fd(first.fd());
                                   loop->remove_fd(second.fd());
                                 }});
  auto stopper = loop->create_signal([&] { loop->stop(); });
  stopper.fire();
  loop->run();
  EXPECT_EQ(calls.load(), 1);
}

TEST(EpollEventLoop, HangUpIsReportedToReadCallback) {
  auto loop = std::make_shared<EpollEventLoop>();
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC), 0);
  std::atomic<bool> saw_end{false};
  loop->register_fd(EventContext{pipe_fds[0], [&](int fd) {
                                   char byte{};
                                   if (::read(fd, &byte, 1) == 0) {
                                     saw_end = true;
                                     loop->remove_fd(fd, true);
                                     loop->stop();
                                   }
                                 }});
  ::close(pipe_fds[1]);
  loop->run_for(std::chrono::milliseconds{wait_deadline});
  EXPECT_TRUE(saw_end.load());
}

TEST(EpollEventLoop, WriteInterestControlsWritableCallback) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  RoundTrip round_trip{*loop};
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC), 0);
  std::atomic<int> writable_calls{0};
  std::atomic<int> read_calls{0};
  std::atomic<bool> disable_in_callback{false};
  // The write end of an empty pipe is always writable.
  loop->register_fd(EventContext{pipe_fds[1], [&](int) { ++read_calls; },
                                 [&](int fd) {
                                   ++writable_calls;
                                   if (disable_in_callback.load()) {
                                     loop->set_write_interest(fd, false);
                                   }
                                 }});
  ASSERT_TRUE(round_trip.run());
  EXPECT_EQ(writable_calls.load(), 0); // off when registered

  loop->set_write_interest(pipe_fds[1], true); // queued from another thread
  ASSERT_TRUE(wait_until([&] { return writable_calls.load() >= 3; }));
  loop->set_write_interest(pipe_fds[1], false);
  ASSERT_TRUE(round_trip.run()); // the change is applied before the round trip's batches
  const int calls_when_disabled = writable_calls.load();
  ASSERT_TRUE(round_trip.run());
  EXPECT_EQ(writable_calls.load(), calls_when_disabled);

  disable_in_callback = true;
  const int before = writable_calls.load();
  loop->set_write_interest(pipe_fds[1], true);
  ASSERT_TRUE(wait_until([&] { return writable_calls.load() > before; }));
  ASSERT_TRUE(round_trip.run());
  EXPECT_EQ(writable_calls.load(), before + 1); // disabled inside its first call
  EXPECT_EQ(read_calls.load(), 0);

  loop->remove_fd(pipe_fds[1], true, true);
  ::close(pipe_fds[0]);
  loop->set_write_interest(pipe_fds[1], true); // unknown fd: ignored
}

TEST(EpollEventLoop, ConcurrentRegisterAndRemoveFromManyThreads) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  constexpr int thread_count = 4;
  constexpr int rounds = 200;
  std::atomic<int> calls_after_removal{0};
  std::atomic<int> calls{0};
  std::vector<std::thread> threads;
  for (int thread_index = 0; thread_index < thread_count; ++thread_index) {
    threads.emplace_back([&, thread_index] {
      for (int round = 0; round < rounds; ++round) {
        TestEventFd event;
        event.signal();
        auto removed = std::make_shared<std::atomic<bool>>(false);
        loop->register_fd(EventContext{event.fd(), [&, removed](int) {
                                         if (removed->load()) {
                                           ++calls_after_removal;
                                         }
                                         ++calls;
                                       }});
        if ((round + thread_index) % 2 == 0) {
          std::this_thread::yield();
        }
        loop->remove_fd(event.fd(), false, true);
        removed->store(true);
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  RoundTrip round_trip{*loop};
  ASSERT_TRUE(round_trip.run());
  EXPECT_EQ(calls_after_removal.load(), 0);
  EXPECT_GT(calls.load(), 0);
}

TEST(EpollEventLoop, QueuedRemoveWithoutWaitIsAppliedInOrder) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  RoundTrip round_trip{*loop};
  TestEventFd event;
  std::atomic<int> calls{0};
  // register, remove, register again: applied in that order, so the final registration counts
  // (in another order the second registration would fail as a duplicate). The first callback may
  // see the event before the queued removal is applied; it leaves it readable for the second.
  loop->register_fd(EventContext{event.fd(), [&](int) {}});
  loop->remove_fd(event.fd());
  loop->register_fd(EventContext{event.fd(), [&](int fd) {
                                   consume(fd);
                                   ++calls;
                                 }});
  event.signal();
  ASSERT_TRUE(wait_until([&] { return calls.load() == 1; }));
  loop->remove_fd(event.fd(), true); // queued, closes on the loop thread
  ASSERT_TRUE(round_trip.run());
  EXPECT_FALSE(fd_is_open(event.fd()));
  event.forget();
}

// --- exceptions -------------------------------------------------------------------------------

TEST(EpollEventLoop, ExceptionInCallbackIsLoggedAndLoopGoesOn) {
  const CapturedErrors errors;
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  TestEventFd event;
  event.signal(); // stays readable: the same fd must fire again after throwing
  std::atomic<int> calls{0};
  loop->register_fd(EventContext{event.fd(), [&](int) {
                                   ++calls;
                                   throw std::runtime_error("callback failure for the test");
                                 }});
  ASSERT_TRUE(wait_until([&] { return calls.load() >= 3; }));
  RoundTrip round_trip{*loop};
  ASSERT_TRUE(round_trip.run());
  EXPECT_TRUE(errors.contains("callback failure for the test"));
  loop->remove_fd(event.fd(), false, true);
}

// --- run / stop -------------------------------------------------------------------------------

TEST(EpollEventLoop, StopFromInsideCallbackEndsRun) {
  auto loop = std::make_shared<EpollEventLoop>();
  std::atomic<int> calls{0};
  auto signal = loop->create_signal([&] {
    ++calls;
    loop->stop();
  });
  signal.fire();
  loop->run(); // returns only because of the stop in the callback
  EXPECT_EQ(calls.load(), 1);
  EXPECT_FALSE(loop->is_running());
}

TEST(EpollEventLoop, StopFromCallbackSkipsTheRestOfTheBatch) {
  auto loop = std::make_shared<EpollEventLoop>();
  TestEventFd first;
  TestEventFd second;
  first.signal();
  second.signal(); // both readable before run(): the first epoll_wait reports both
  std::atomic<int> calls{0};
  const auto stop_on_call = [&](int) {
    ++calls;
    loop->stop();
  };
  loop->register_fd(EventContext{first.fd(), stop_on_call});
  loop->register_fd(EventContext{second.fd(), stop_on_call});
  loop->run();
  EXPECT_EQ(calls.load(), 1);
  loop->run(); // level-triggered: both are still readable, so this run stops at once too
  EXPECT_EQ(calls.load(), 2);
  loop->remove_fd(first.fd());
  loop->remove_fd(second.fd());
}

TEST(EpollEventLoop, StopFromOtherThreadEndsRun) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  loop->stop();
  ASSERT_TRUE(wait_until([&] { return runner.done(); }));
  EXPECT_FALSE(loop->is_running());
  EXPECT_TRUE(runner.error().empty()) << runner.error();
}

TEST(EpollEventLoop, StopBeforeRunIsNotRemembered) {
  auto loop = std::make_shared<EpollEventLoop>();
  loop->stop(); // not running: a no-op
  std::atomic<int> calls{0};
  auto signal = loop->create_signal([&] {
    ++calls;
    loop->stop();
  });
  signal.fire();
  loop->run();
  EXPECT_EQ(calls.load(), 1); // run() got as far as the callback
}

TEST(EpollEventLoop, InitCallbackRunsOnLoopThreadAtEveryRun) {
  std::atomic<int> init_calls{0};
  std::atomic<bool> init_in_loop_thread{true};
  std::shared_ptr<EpollEventLoop> loop;
  loop = std::make_shared<EpollEventLoop>([&] {
    ++init_calls;
    init_in_loop_thread = init_in_loop_thread && loop->in_loop_thread() && loop->is_running();
    loop->stop(); // a stop in the init callback ends the run too
  });
  loop->run();
  loop->run_for(std::chrono::milliseconds{wait_deadline});
  EXPECT_EQ(init_calls.load(), 2);
  EXPECT_TRUE(init_in_loop_thread.load());
}

TEST(EpollEventLoop, RunForReturnsAfterDuration) {
  auto loop = std::make_shared<EpollEventLoop>();
  for (const auto duration : {20ms, 0ms, -5ms}) {
    std::atomic<bool> returned{false};
    std::thread thread{[&] {
      loop->run_for(duration);
      returned = true;
    }};
    const bool returned_in_time = wait_until([&] { return returned.load(); });
    if (!returned_in_time) {
      wait_until([&] {
        loop->stop(); // so that join() ends
        return returned.load();
      });
    }
    thread.join();
    EXPECT_TRUE(returned_in_time) << "run_for(" << duration.count() << " ms) did not return";
    EXPECT_FALSE(loop->is_running());
  }
}

TEST(EpollEventLoop, RunForReturnsEarlyOnStop) {
  auto loop = std::make_shared<EpollEventLoop>();
  auto signal = loop->create_signal([&] { loop->stop(); });
  signal.fire();
  std::atomic<bool> returned{false};
  std::thread thread{[&] {
    loop->run_for(std::chrono::hours{1});
    returned = true;
  }};
  const bool returned_in_time = wait_until([&] { return returned.load(); });
  if (!returned_in_time) {
    std::fprintf(stderr, "event_loop_test: run_for ignored stop()\n");
    std::abort();
  }
  thread.join();
}

TEST(EpollEventLoop, RunWhileRunningThrows) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  EXPECT_THROW(loop->run(), EventLoopError);
  EXPECT_THROW(loop->run_for(10ms), EventLoopError);
  std::atomic<int> nested_throws{0};
  auto signal = loop->create_signal([&] {
    try {
      loop->run();
    } catch (const EventLoopError&) {
      ++nested_throws;
    }
  });
  signal.fire();
  ASSERT_TRUE(wait_until([&] { return nested_throws.load() == 1; }));
  EXPECT_TRUE(loop->is_running()); // the failed calls did not end the running loop
}

TEST(EpollEventLoop, RunsAgainAfterStopOnAnotherThread) {
  auto loop = std::make_shared<EpollEventLoop>();
  TestEventFd event;
  std::atomic<int> calls{0};
  std::atomic<std::thread::id> last_thread{};
  loop->register_fd(EventContext{event.fd(), [&](int fd) {
                                   consume(fd);
                                   last_thread = std::this_thread::get_id();
                                   if (++calls == 4) {
                                     loop->stop();
                                   }
                                 }});
  for (int run = 1; run <= 3; ++run) {
    LoopRunner runner{loop};
    event.signal();
    ASSERT_TRUE(wait_until([&] { return calls.load() == run; }));
    EXPECT_EQ(last_thread.load(), runner.thread_id());
    runner.stop_and_join();
    EXPECT_FALSE(loop->is_running());
  }
  // and on this thread
  event.signal();
  loop->run_for(std::chrono::milliseconds{wait_deadline}); // stopped by the fourth call
  EXPECT_EQ(calls.load(), 4);
  EXPECT_EQ(last_thread.load(), std::this_thread::get_id());
  loop->remove_fd(event.fd());
}

TEST(EpollEventLoop, StopRacingWithWaitingRemoveNeverDeadlocks) {
  auto loop = std::make_shared<EpollEventLoop>();
  for (int round = 0; round < 100; ++round) {
    TestEventFd event;
    event.signal();
    loop->register_fd(EventContext{event.fd(), [](int) {}});
    LoopRunner runner{loop};
    std::thread stopper{[&] { loop->stop(); }};
    std::atomic<bool> removed{false};
    std::thread remover{[&] {
      loop->remove_fd(event.fd(), false, true); // queued or direct, depending on who wins
      removed = true;
    }};
    if (!wait_until([&] { return removed.load(); })) {
      std::fprintf(stderr, "event_loop_test: remove_fd(wait) racing with stop() deadlocked\n");
      std::abort();
    }
    remover.join();
    stopper.join();
    runner.stop_and_join();
    // The removal was applied either way: registering the fd again is accepted.
    EXPECT_NO_THROW(loop->register_fd(EventContext{event.fd(), [](int) {}}));
    loop->remove_fd(event.fd());
  }
}

// --- timers -----------------------------------------------------------------------------------

TEST(EventTimer, OneShotFiresOnce) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  std::atomic<int> calls{0};
  std::atomic<int> later_calls{0};
  auto timer = loop->create_timer([&] { ++calls; });
  auto later = loop->create_timer([&] { ++later_calls; });
  EXPECT_TRUE(timer.valid());
  timer.start_once(1ms);
  later.start_once(100ms); // expires after the first one's only expiry
  ASSERT_TRUE(wait_until([&] { return later_calls.load() == 1; }));
  RoundTrip round_trip{*loop};
  ASSERT_TRUE(round_trip.run());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(later_calls.load(), 1);
}

TEST(EventTimer, PeriodicFiresUntilStoppedFromItsCallback) {
  auto loop = std::make_shared<EpollEventLoop>();
  std::atomic<int> calls{0};
  EventTimerHandle timer; // assigned before the loop thread starts, which then reads it
  timer = loop->create_timer([&] {
    if (++calls == 5) {
      timer.stop();
    }
  });
  LoopRunner runner{loop};
  timer.start(1ms);
  ASSERT_TRUE(wait_until([&] { return calls.load() >= 5; }));
  std::atomic<bool> later_fired{false};
  auto later = loop->create_timer([&] { later_fired = true; });
  later.start_once(20ms); // a periodic timer still armed would fire many times meanwhile
  ASSERT_TRUE(wait_until([&] { return later_fired.load(); }));
  RoundTrip round_trip{*loop};
  ASSERT_TRUE(round_trip.run());
  EXPECT_EQ(calls.load(), 5);
}

TEST(EventTimer, RestartAndStopFromOtherThread) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  RoundTrip round_trip{*loop};
  std::atomic<int> calls{0};
  auto timer = loop->create_timer([&] { ++calls; });
  std::thread other{[&] { timer.start_once(1ms); }};
  other.join();
  ASSERT_TRUE(wait_until([&] { return calls.load() == 1; }));
  timer.start_once(1ms); // restart after it fired
  ASSERT_TRUE(wait_until([&] { return calls.load() == 2; }));
  timer.start(1ms);
  ASSERT_TRUE(wait_until([&] { return calls.load() >= 5; }));
  std::thread stopper{[&] { timer.stop(); }};
  stopper.join();
  ASSERT_TRUE(round_trip.run()); // an expiry pending at stop() may still be handled here
  const int calls_after_stop = calls.load();
  std::atomic<bool> later_fired{false};
  auto later = loop->create_timer([&] { later_fired = true; });
  later.start_once(20ms);
  ASSERT_TRUE(wait_until([&] { return later_fired.load(); }));
  ASSERT_TRUE(round_trip.run());
  EXPECT_EQ(calls.load(), calls_after_stop);

  // Armed and stopped at once: never fires, although a later timer does.
  std::atomic<int> stopped_calls{0};
  auto stopped = loop->create_timer([&] { ++stopped_calls; });
  stopped.start_once(1ms);
  stopped.stop();
  later_fired = false;
  later.start_once(50ms);
  ASSERT_TRUE(wait_until([&] { return later_fired.load(); }));
  ASSERT_TRUE(round_trip.run());
  EXPECT_EQ(stopped_calls.load(), 0);
}

TEST(EventTimer, InvalidUseThrows) {
  auto loop = std::make_shared<EpollEventLoop>();
  EventTimerHandle empty;
  EXPECT_FALSE(empty.valid());
  EXPECT_EQ(empty.fd(), -1);
  EXPECT_THROW(empty.start(1ms), EventLoopError);
  EXPECT_THROW(empty.start_once(1ms), EventLoopError);
  EXPECT_NO_THROW(empty.stop());
  auto timer = loop->create_timer([] {});
  EXPECT_THROW(timer.start(0ms), EventLoopError);
  EXPECT_THROW(timer.start_once(-1ms), EventLoopError);
  EXPECT_THROW((void)loop->create_timer(nullptr), EventLoopError);
  EXPECT_THROW((void)loop->create_signal(nullptr), EventLoopError);
  EventSignalHandle empty_signal;
  EXPECT_THROW(empty_signal.fire(), EventLoopError);
}

TEST(EventTimer, MovedHandleKeepsTheTimer) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  std::atomic<int> calls{0};
  auto original = loop->create_timer([&] { ++calls; });
  const int fd = original.fd();
  EventTimerHandle moved{std::move(original)};
  EXPECT_FALSE(original.valid()); // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_EQ(moved.fd(), fd);
  EventTimerHandle assigned;
  assigned = std::move(moved);
  assigned.start_once(1ms);
  ASSERT_TRUE(wait_until([&] { return calls.load() == 1; }));
  assigned.reset();
  EXPECT_FALSE(assigned.valid());
  EXPECT_FALSE(fd_is_open(fd));
}

TEST(EventTimer, DestroyWhileCallbackRunsWaitsForIt) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  RoundTrip round_trip{*loop};
  std::atomic<int> calls{0};
  std::atomic<bool> in_callback{false};
  auto timer = std::make_unique<EventTimerHandle>(loop->create_timer([&] {
    in_callback = true;
    std::this_thread::sleep_for(2ms); // widens the window for the race
    ++calls;
    in_callback = false;
  }));
  timer->start(1ms);
  ASSERT_TRUE(wait_until([&] { return in_callback.load(); }));
  timer.reset();
  EXPECT_FALSE(in_callback.load());
  const int calls_at_destruction = calls.load();
  ASSERT_TRUE(round_trip.run());
  EXPECT_EQ(calls.load(), calls_at_destruction);
}

TEST(EventTimer, ResetFromOwnCallback) {
  auto loop = std::make_shared<EpollEventLoop>();
  RoundTrip round_trip{*loop}; // created first, so that it does not reuse the timer's fd number
  std::atomic<int> calls{0};
  EventTimerHandle timer; // assigned before the loop thread starts, which then resets it
  timer = loop->create_timer([&] {
    ++calls;
    timer.reset();
  });
  const int fd = timer.fd();
  timer.start(1ms); // before the loop thread starts, which then writes the handle
  LoopRunner runner{loop};
  ASSERT_TRUE(wait_until([&] { return calls.load() >= 1; }));
  ASSERT_TRUE(round_trip.run());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_FALSE(fd_is_open(fd));
}

// --- signals ----------------------------------------------------------------------------------

TEST(EventSignal, CountingModeCallsOncePerFireFromManyThreads) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  constexpr int thread_count = 8;
  constexpr int fires_per_thread = 500;
  std::atomic<int> calls{0};
  auto signal = loop->create_signal([&] { ++calls; }, true);
  std::vector<std::thread> threads;
  for (int thread_index = 0; thread_index < thread_count; ++thread_index) {
    threads.emplace_back([&] {
      for (int fire = 0; fire < fires_per_thread; ++fire) {
        signal.fire();
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  ASSERT_TRUE(wait_until([&] { return calls.load() >= thread_count * fires_per_thread; }));
  RoundTrip round_trip{*loop};
  ASSERT_TRUE(round_trip.run());
  EXPECT_EQ(calls.load(), thread_count * fires_per_thread);
}

TEST(EventSignal, CoalescingModeCallsAtLeastOnceAndAtMostOncePerFire) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  constexpr int thread_count = 8;
  constexpr int fires_per_thread = 500;
  std::atomic<int> calls{0};
  std::atomic<int> fires_done{0};
  std::atomic<bool> called_after_all_fires{false};
  auto signal = loop->create_signal([&] {
    ++calls;
    if (fires_done.load() == thread_count * fires_per_thread) {
      called_after_all_fires = true;
    }
  });
  std::vector<std::thread> threads;
  for (int thread_index = 0; thread_index < thread_count; ++thread_index) {
    threads.emplace_back([&] {
      for (int fire = 0; fire < fires_per_thread; ++fire) {
        ++fires_done; // counted before the write, so the call that consumes the last write sees all
        signal.fire();
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  ASSERT_TRUE(wait_until([&] { return called_after_all_fires.load(); })); // no fire is lost
  RoundTrip round_trip{*loop};
  ASSERT_TRUE(round_trip.run());
  EXPECT_GE(calls.load(), 1);
  EXPECT_LE(calls.load(), fires_done.load());
}

TEST(EventSignal, CoalescesFiresBeforeTheLoopRuns) {
  auto loop = std::make_shared<EpollEventLoop>();
  std::atomic<int> coalesced_calls{0};
  std::atomic<int> counted_calls{0};
  auto coalesced = loop->create_signal([&] { ++coalesced_calls; });
  auto counted = loop->create_signal(
      [&] {
        if (++counted_calls == 10) {
          loop->stop();
        }
      },
      true);
  for (int fire = 0; fire < 10; ++fire) {
    coalesced.fire();
    counted.fire();
  }
  // Both are readable from the first batch on: the coalesced one is called in that batch, the
  // counted one in ten batches.
  loop->run_for(std::chrono::milliseconds{wait_deadline});
  EXPECT_EQ(coalesced_calls.load(), 1);
  EXPECT_EQ(counted_calls.load(), 10);
}

TEST(EventSignal, MovedHandleFires) {
  auto loop = std::make_shared<EpollEventLoop>();
  LoopRunner runner{loop};
  std::atomic<int> calls{0};
  auto original = loop->create_signal([&] { ++calls; });
  EventSignalHandle moved;
  moved = std::move(original);
  EXPECT_FALSE(original.valid()); // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_THROW(original.fire(), EventLoopError);
  moved.fire();
  ASSERT_TRUE(wait_until([&] { return calls.load() == 1; }));
}

// --- resources --------------------------------------------------------------------------------

TEST(EpollEventLoop, DestructionLeaksNoFds) {
  const std::size_t fds_before = count_open_fds();
  {
    auto loop = std::make_shared<EpollEventLoop>();
    TestEventFd event;
    {
      LoopRunner runner{loop};
      std::atomic<int> timer_calls{0};
      auto timer = loop->create_timer([&] { ++timer_calls; });
      auto signal = loop->create_signal([] {}, true);
      loop->register_fd(EventContext{event.fd(), [](int fd) { consume(fd); }});
      timer.start(1ms);
      signal.fire();
      event.signal();
      ASSERT_TRUE(wait_until([&] { return timer_calls.load() >= 2; }));
    }
    EXPECT_TRUE(fd_is_open(event.fd())); // the caller's fd is still registered and stays open
  }
  EXPECT_EQ(count_open_fds(), fds_before);
}

TEST(EpollEventLoop, DestructionClosesFdsOfTimersAndSignalsStillRegistered) {
  const std::size_t fds_before = count_open_fds();
  // Handles whose destructors never run (storage without a destructor call) leave their fds
  // registered; the loop owns those and closes them.
  alignas(EventTimerHandle) unsigned char timer_storage[sizeof(EventTimerHandle)];
  alignas(EventSignalHandle) unsigned char signal_storage[sizeof(EventSignalHandle)];
  {
    auto loop = std::make_shared<EpollEventLoop>();
    auto* timer = new (timer_storage) EventTimerHandle{loop->create_timer([] {})};
    auto* signal = new (signal_storage) EventSignalHandle{loop->create_signal([] {})};
    EXPECT_TRUE(fd_is_open(timer->fd()));
    EXPECT_TRUE(fd_is_open(signal->fd()));
    EXPECT_EQ(count_open_fds(), fds_before + 4); // epoll, wake-up eventfd, timerfd, eventfd
  }
  EXPECT_EQ(count_open_fds(), fds_before);
}
