// Conformance: waiting for room to send (NetworkBackend::wait_for_send_space), for completed sends
// (wait_for_completed_sends), for a free buffer of get_buffer (wait_for_buffer) and the loop-side
// notice (NetworkConfig::on_send_space_cb, also after a refused get_buffer): several
// waiting threads on one endpoint, closes from another thread, from the peer and by destroying the
// backend while a thread waits, timeouts and misuse, and no lost wake-up. No timing is asserted:
// waits that should end have timeouts far beyond the environment's deadline, and a lost wake-up
// shows as a wait that times out (or a test that ctest ends).

#include <atomic>
#include <future>
#include <thread>

#include "conformance/ConformanceFixture.hpp"

namespace netio3::conformance {
namespace {

using namespace std::chrono_literals;

/// Far longer than any wait that should end: a wait that returns TIMED_OUT with it was not woken.
std::chrono::milliseconds long_wait() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(4 * test_environment().deadline);
}

class SendWait : public ConformanceTest {
protected:
  /// Sender options: a small bound on unsent bytes, so that a receiver that does not read makes
  /// sends return NO_RESOURCES soon.
  static NodeOptions small_queue(std::size_t max_unsent = 64U << 10U) {
    NodeOptions options;
    options.configure = [max_unsent](NetworkConfig& config) { config.max_unsent_bytes = max_unsent; };
    return options;
  }

  /// Copying sends of `payload` bytes until the endpoint stays full (the receiver must be paused):
  /// until a send returns NO_RESOURCES and no room comes within a while (the loop may still be
  /// handing accepted bytes to the transport when the first NO_RESOURCES comes).
  static void fill(Node& sender, StreamSender& stream, std::size_t payload) {
    const std::size_t limit = 1U << 16U;
    for (std::size_t i = 0; i < limit; ++i) {
      const NetioStatus status = stream.try_send(SendMode::CopySpan, payload);
      if (status == NetioStatus::NO_RESOURCES) {
        if (sender.backend().wait_for_send_space(stream.destination(), message_header_size + payload, 200ms) ==
            WaitStatus::TIMED_OUT) {
          return;
        }
        continue;
      }
      ASSERT_EQ(status, NetioStatus::OK) << "send " << i;
    }
    FAIL() << "the endpoint took " << limit << " messages of " << payload
           << " bytes and stayed ready although the receiver reads nothing";
  }

  /// A sender and a paused receiver, connected, with the sender's endpoint full.
  struct Full {
    Node* receiver;
    Node* sender;
    EndPointAddress listening;
    std::unique_ptr<StreamSender> stream;
  };
  Full make_full(const NodeOptions& sender_options = small_queue()) {
    constexpr std::size_t max_payload = 16U << 10U;
    Node& receiver = make_node();
    Node& sender = make_node(sender_options);
    const EndPointAddress listening = receiver.listen(receive_params(max_payload, 4));
    AlignedMemory& region = make_region(64 * max_payload);
    EXPECT_TRUE(sender.connect(listening, send_params(max_payload, 4, &region)));
    receiver.recorder().pause_data(true);
    auto stream = std::make_unique<StreamSender>(sender, listening, 1, region.span(), max_payload);
    fill(sender, *stream, max_payload);
    return Full{&receiver, &sender, listening, std::move(stream)};
  }

  /// Writes message `seq` of `stream` (header and `payload` bytes) into `buffer`, so that the
  /// receiver's recorder checks it like any other.
  static void fill_message(NetworkBuffer& buffer, std::uint32_t stream, std::uint64_t seq, std::size_t payload) {
    buffer.set_pos(0);
    ASSERT_TRUE(buffer.append(make_message_header(stream, seq, payload)));
    fill_payload(buffer.data().subspan(buffer.pos(), payload), stream, seq);
    buffer.set_pos(buffer.pos() + payload);
  }

  /// A connected sender whose endpoint has `num_buf` buffers, all taken by get_buffer and held (not
  /// sent): get_buffer returns nullptr until one is sent and completes, whatever the receiver does.
  struct BuffersTaken {
    Node* receiver;
    Node* sender;
    EndPointAddress listening;
    std::vector<NetworkBuffer*> held;
  };
  BuffersTaken take_all_buffers(std::size_t num_buf = 2, const NodeOptions& sender_options = NodeOptions{}) {
    constexpr std::size_t max_payload = 1024;
    Node& receiver = make_node();
    Node& sender = make_node(sender_options);
    const EndPointAddress listening = receiver.listen(receive_params(max_payload, 4));
    EXPECT_TRUE(sender.connect(listening, send_params(max_payload, num_buf, nullptr)));
    BuffersTaken taken{&receiver, &sender, listening, {}};
    for (std::size_t i = 0; i < num_buf; ++i) {
      NetworkBuffer* buffer = sender.backend().get_buffer(listening);
      EXPECT_NE(buffer, nullptr) << "buffer " << i << " of " << num_buf << " on a new endpoint";
      if (buffer != nullptr) {
        taken.held.push_back(buffer);
      }
    }
    EXPECT_EQ(sender.backend().get_buffer(listening), nullptr) << "a buffer beyond num_buf";
    return taken;
  }
};

// Four threads send their own streams over one endpoint; every NO_RESOURCES is followed by a wait
// (room for copies, a completed send for zero-copy slots). Each thread starts while the receiver is
// paused, so every thread waits at least once. Everything arrives, in order per stream.
TEST_P(SendWait, SeveralThreadsWaitOnOneEndpoint) {
  constexpr std::size_t threads = 4;
  constexpr std::size_t max_payload = 8U << 10U;
  const std::size_t messages = count(1500, 100);
  Node& receiver = make_node();
  Node& sender = make_node(small_queue(32U << 10U));
  const EndPointAddress listening = receiver.listen(receive_params(max_payload, 8));
  AlignedMemory& region = make_region(threads * 16 * max_payload);
  ASSERT_TRUE(sender.connect(listening, send_params(max_payload, 0, &region)));
  receiver.recorder().pause_data(true);

  std::atomic<std::size_t> waiting_threads{0};
  std::atomic<std::size_t> waits{0};
  std::vector<std::future<std::string>> results;
  std::vector<std::unique_ptr<StreamSender>> streams;
  for (std::size_t t = 0; t < threads; ++t) {
    streams.push_back(std::make_unique<StreamSender>(sender, listening, static_cast<std::uint32_t>(t + 1),
                                                     region.span().subspan(t * 16 * max_payload, 16 * max_payload),
                                                     max_payload));
  }
  for (std::size_t t = 0; t < threads; ++t) {
    results.push_back(std::async(std::launch::async, [&, t]() -> std::string {
      StreamSender& stream = *streams[t];
      const SendMode mode = t % 2 == 0 ? SendMode::CopySpan : SendMode::ZeroCopySpan;
      bool counted = false;
      while (stream.sent() < messages) {
        const std::size_t payload = 1 + (stream.sent() * 977U) % max_payload;
        const std::uint64_t done = sender.backend().completed_sends(listening);
        const NetioStatus status = stream.try_send(mode, payload);
        if (status == NetioStatus::OK) {
          continue;
        }
        if (status != NetioStatus::NO_RESOURCES) {
          return "send returned " + std::string{to_string(status)};
        }
        if (!counted) {
          counted = true;
          waiting_threads.fetch_add(1);
        }
        waits.fetch_add(1);
        const WaitStatus waited =
            stream.last_refusal_was_local()
                ? sender.backend().wait_for_completed_sends(listening, done, long_wait())
                : sender.backend().wait_for_send_space(listening, message_header_size + payload, long_wait());
        if (waited != WaitStatus::READY) {
          return "wait after message " + std::to_string(stream.sent()) + " returned " + std::string{to_string(waited)};
        }
      }
      return {};
    }));
  }
  // Every thread met NO_RESOURCES while the receiver was paused (or already finished).
  const auto until = deadline_from_now();
  while (waiting_threads.load() < threads && std::chrono::steady_clock::now() < until &&
         std::any_of(results.begin(), results.end(), [](const std::future<std::string>& result) {
           return result.wait_for(0s) != std::future_status::ready;
         })) {
    std::this_thread::sleep_for(1ms);
  }
  receiver.recorder().pause_data(false);
  for (std::size_t t = 0; t < threads; ++t) {
    ASSERT_EQ(results[t].wait_for(long_wait()), std::future_status::ready) << "thread " << t << " hangs";
    EXPECT_EQ(results[t].get(), "") << "thread " << t;
  }
  EXPECT_GT(waits.load(), 0U) << "no thread ever waited: the test did not test waiting";
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) {
    for (std::uint32_t t = 1; t <= threads; ++t) {
      if (s.stream_progress(t) < messages) {
        return false;
      }
    }
    return true;
  })) << "not every stream arrived";
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
}

// A close from another thread wakes a waiting sender at once, also while the sender's loop thread
// is busy (the wake-up does not wait for the loop).
TEST_P(SendWait, CloseFromAnotherThreadWakesWaiterWithoutTheLoop) {
  Full full = make_full();
  Node& sender = *full.sender;
  std::promise<void> release_loop;
  std::shared_future<void> loop_released = release_loop.get_future().share();
  std::promise<void> loop_blocked;
  // Block the sender's loop thread in a task until the waiter returned.
  std::thread blocker{[&] {
    try {
      sender.loop_thread().run_on_loop([&] {
        loop_blocked.set_value();
        loop_released.wait_for(long_wait());
      });
    } catch (const std::runtime_error&) {
      // run_on_loop's own deadline passed (the waiter hung): the assertion below reports it.
    }
  }};
  loop_blocked.get_future().wait();
  auto waiter = std::async(std::launch::async, [&] {
    return sender.backend().wait_for_send_space(full.listening, 16U << 10U, long_wait());
  });
  std::this_thread::sleep_for(20ms); // let it start waiting (the result is the same if it has not)
  sender.backend().close_send_endpoint(full.listening);
  // Less than run_on_loop's deadline, which the blocked task counts against.
  const bool returned = waiter.wait_for(test_environment().deadline / 2) == std::future_status::ready;
  release_loop.set_value();
  blocker.join();
  ASSERT_TRUE(returned) << "the waiter did not return after close_send_endpoint while the loop was busy";
  EXPECT_EQ(waiter.get(), WaitStatus::CLOSED);
  full.receiver->recorder().pause_data(false);
  EXPECT_TRUE(sender.wait_closed(full.listening));
  // After the close: no endpoint, no wait.
  EXPECT_EQ(sender.backend().wait_for_send_space(full.listening, 1, long_wait()), WaitStatus::CLOSED);
  EXPECT_EQ(sender.backend().wait_for_completed_sends(full.listening, 0, long_wait()), WaitStatus::CLOSED);
}

// The peer closes the connection while a sender waits: the wait returns CLOSED.
TEST_P(SendWait, PeerCloseWakesWaiter) {
  constexpr std::size_t max_payload = 16U << 10U;
  Node& receiver = make_node();
  Node& sender = make_node(small_queue());
  const EndPointAddress listening = receiver.listen(receive_params(max_payload, 4));
  AlignedMemory& region = make_region(16 * max_payload);
  ASSERT_TRUE(sender.connect(listening, send_params(max_payload, 0, &region)));
  // Waits for a completion that cannot come (far more than will ever be sent): only the close ends it.
  const std::uint64_t unreachable = sender.backend().completed_sends(listening) + (std::uint64_t{1} << 40U);
  auto waiter = std::async(std::launch::async, [&] {
    return sender.backend().wait_for_completed_sends(listening, unreachable, long_wait());
  });
  std::this_thread::sleep_for(20ms);
  receiver.destroy_backend(); // the peer goes away
  ASSERT_EQ(waiter.wait_for(long_wait()), std::future_status::ready) << "the waiter hangs after the peer closed";
  EXPECT_EQ(waiter.get(), WaitStatus::CLOSED);
  EXPECT_TRUE(sender.wait_closed(listening));
}

// Destroying the backend while threads wait: they return CLOSED, and the destructor returns.
TEST_P(SendWait, DestroyWhileThreadsWait) {
  Full full = make_full();
  Node& sender = *full.sender;
  NetworkBackend& backend = sender.backend();
  std::atomic<int> started{0};
  std::vector<std::future<WaitStatus>> waiters;
  waiters.push_back(std::async(std::launch::async, [&] {
    started.fetch_add(1);
    return backend.wait_for_send_space(full.listening, 16U << 10U, long_wait());
  }));
  const std::uint64_t unreachable = backend.completed_sends(full.listening) + (std::uint64_t{1} << 40U);
  waiters.push_back(std::async(std::launch::async, [&] {
    started.fetch_add(1);
    return backend.wait_for_completed_sends(full.listening, unreachable, long_wait());
  }));
  while (started.load() < 2) {
    std::this_thread::sleep_for(1ms);
  }
  // Starting a wait once destruction began is undefined: give both threads ample time to be inside.
  std::this_thread::sleep_for(200ms);
  sender.destroy_backend();
  for (auto& waiter : waiters) {
    ASSERT_EQ(waiter.wait_for(test_environment().deadline), std::future_status::ready);
    EXPECT_EQ(waiter.get(), WaitStatus::CLOSED);
  }
  full.receiver->recorder().pause_data(false);
}

// Timeouts, and the statuses and errors of misuse.
TEST_P(SendWait, TimeoutsAndMisuse) {
  Full full = make_full();
  NetworkBackend& backend = full.sender->backend();
  EXPECT_EQ(backend.wait_for_send_space(full.listening, 16U << 10U, 0ms), WaitStatus::TIMED_OUT);
  EXPECT_EQ(backend.wait_for_send_space(full.listening, 16U << 10U, 30ms), WaitStatus::TIMED_OUT);
  const std::uint64_t done = backend.completed_sends(full.listening);
  EXPECT_EQ(backend.wait_for_completed_sends(full.listening, done + (std::uint64_t{1} << 40U), 30ms),
            WaitStatus::TIMED_OUT);
  if (done > 0) {
    EXPECT_EQ(backend.wait_for_completed_sends(full.listening, done - 1, 0ms), WaitStatus::READY);
  }
  EXPECT_THROW(static_cast<void>(backend.wait_for_send_space(full.listening, 1, -1ms)), std::invalid_argument);
  EXPECT_THROW(static_cast<void>(backend.wait_for_completed_sends(full.listening, 0, -1ms)), std::invalid_argument);
  const EndPointAddress nobody{test_environment().address, 9};
  EXPECT_EQ(backend.wait_for_send_space(nobody, 1, long_wait()), WaitStatus::CLOSED);
  EXPECT_THROW(static_cast<void>(backend.completed_sends(nobody)), UnknownSendEndpoint);
  // On the loop thread: never blocks.
  WaitStatus on_loop = WaitStatus::READY;
  full.sender->loop_thread().run_on_loop(
      [&] { on_loop = backend.wait_for_send_space(full.listening, 16U << 10U, long_wait()); });
  EXPECT_EQ(on_loop, WaitStatus::ON_LOOP_THREAD);
  full.sender->loop_thread().run_on_loop(
      [&] { on_loop = backend.wait_for_completed_sends(full.listening, done, long_wait()); });
  EXPECT_EQ(on_loop, WaitStatus::ON_LOOP_THREAD);
  // Larger than the receiver accepts: READY at once (the send says MESSAGE_TOO_LARGE).
  EXPECT_EQ(backend.wait_for_send_space(full.listening, std::size_t{1} << 30U, long_wait()), WaitStatus::READY);
  full.receiver->recorder().pause_data(false);
  // Once the receiver reads again, the room comes back.
  EXPECT_EQ(backend.wait_for_send_space(full.listening, 16U << 10U, long_wait()), WaitStatus::READY);
}

// An UNSAFE backend cannot be waited on.
TEST_P(SendWait, UnsafeBackendSaysNotThreadSafe) {
  NodeOptions options;
  options.thread_safety = ThreadSafetyModel::UNSAFE;
  Node& receiver = make_node();
  Node& sender = make_node(options);
  const EndPointAddress listening = receiver.listen(receive_params(1024));
  sender.call([&] { sender.open_send(listening, send_params(1024, 2, nullptr)); });
  ASSERT_TRUE(sender.wait_established(listening));
  WaitStatus space = WaitStatus::READY;
  WaitStatus completed = WaitStatus::READY;
  WaitStatus buffer = WaitStatus::READY;
  sender.call([&] {
    space = sender.backend().wait_for_send_space(listening, 1, long_wait());
    completed = sender.backend().wait_for_completed_sends(listening, 0, long_wait());
    buffer = sender.backend().wait_for_buffer(listening, long_wait());
  });
  EXPECT_EQ(space, WaitStatus::NOT_THREAD_SAFE);
  EXPECT_EQ(completed, WaitStatus::NOT_THREAD_SAFE);
  EXPECT_EQ(buffer, WaitStatus::NOT_THREAD_SAFE);
}

// No lost wake-up: two threads send small messages with room for about one message at a time and
// wait after every NO_RESOURCES (and a third waits for completions), so the loop's wake-ups race
// the waiters' checks thousands of times. A lost wake-up makes a wait time out (long_wait), which
// fails the test (or ctest's timeout ends it).
TEST_P(SendWait, NoLostWakeUp) {
  constexpr std::size_t payload = 100;
  const std::size_t messages = count(4000, 200);
  Node& receiver = make_node();
  Node& sender = make_node(small_queue(1));
  const EndPointAddress listening = receiver.listen(receive_params(payload, 2));
  ASSERT_TRUE(sender.connect(listening, send_params(payload, 0, nullptr)));
  std::vector<std::unique_ptr<StreamSender>> streams;
  for (std::uint32_t t = 1; t <= 2; ++t) {
    streams.push_back(std::make_unique<StreamSender>(sender, listening, t, std::span<std::uint8_t>{}, payload));
  }
  std::atomic<bool> senders_done{false};
  std::atomic<std::size_t> waits{0};
  auto send_all = [&](StreamSender& stream) -> std::string {
    while (stream.sent() < messages) {
      const NetioStatus status = stream.try_send(SendMode::CopySpan, payload);
      if (status == NetioStatus::OK) {
        continue;
      }
      if (status != NetioStatus::NO_RESOURCES) {
        return "send returned " + std::string{to_string(status)};
      }
      waits.fetch_add(1);
      const WaitStatus waited =
          sender.backend().wait_for_send_space(listening, message_header_size + payload, long_wait());
      if (waited != WaitStatus::READY) {
        return "wait returned " + std::string{to_string(waited)} + " after " + std::to_string(stream.sent());
      }
    }
    return {};
  };
  auto first = std::async(std::launch::async, [&] { return send_all(*streams[0]); });
  auto second = std::async(std::launch::async, [&] { return send_all(*streams[1]); });
  auto completions = std::async(std::launch::async, [&]() -> std::string {
    std::uint64_t seen = sender.backend().completed_sends(listening);
    while (!senders_done.load()) {
      const WaitStatus waited = sender.backend().wait_for_completed_sends(listening, seen, 50ms);
      if (waited == WaitStatus::READY) {
        const std::uint64_t now = sender.backend().completed_sends(listening);
        if (now <= seen) {
          return "READY without a new completion";
        }
        seen = now;
      } else if (waited != WaitStatus::TIMED_OUT) {
        return "completion wait returned " + std::string{to_string(waited)};
      }
    }
    return {};
  });
  ASSERT_EQ(first.wait_for(long_wait()), std::future_status::ready);
  ASSERT_EQ(second.wait_for(long_wait()), std::future_status::ready);
  senders_done.store(true);
  EXPECT_EQ(first.get(), "");
  EXPECT_EQ(second.get(), "");
  ASSERT_EQ(completions.wait_for(long_wait()), std::future_status::ready);
  EXPECT_EQ(completions.get(), "");
  EXPECT_GT(waits.load(), 0U);
  ASSERT_TRUE(receiver.recorder().wait(
      [&](const RecorderState& s) { return s.stream_progress(1) >= messages && s.stream_progress(2) >= messages; }));
  // The counter moves after the completion callbacks: wait for it rather than read it at once.
  EXPECT_EQ(sender.backend().wait_for_completed_sends(listening, 2 * messages - 1, long_wait()), WaitStatus::READY);
  EXPECT_EQ(sender.backend().completed_sends(listening), 2 * messages);
}

// The loop-side notice: a loop-thread sender that met NO_RESOURCES is called back once there is
// room again, on the loop thread, and its send then succeeds.
TEST_P(SendWait, SendSpaceCallbackOnTheLoop) {
  for (const ThreadSafetyModel model : {ThreadSafetyModel::UNSAFE, ThreadSafetyModel::SAFE}) {
    SCOPED_TRACE(to_string(model));
    constexpr std::size_t max_payload = 16U << 10U;
    struct Shared {
      std::mutex mutex;
      std::vector<NetioStatus> retries;
      std::size_t calls{0};
      bool on_loop{true};
    };
    auto shared = std::make_shared<Shared>();
    NetworkBackend* backend = nullptr;
    std::thread::id loop_id;
    std::uint64_t next_key = 1; // loop thread only: every key is reported once, so each send has its own
    std::vector<std::uint8_t> payload(max_payload, 0x5A);
    NodeOptions options;
    options.thread_safety = model;
    options.configure = [&, shared](NetworkConfig& config) {
      config.max_unsent_bytes = 64U << 10U;
      config.on_send_space_cb = [&, shared](const EndPointAddress& address) {
        const NetioStatus retry = backend->send_data_copy(address, payload, {}, next_key++);
        const std::lock_guard lock{shared->mutex};
        ++shared->calls;
        shared->on_loop = shared->on_loop && std::this_thread::get_id() == loop_id;
        shared->retries.push_back(retry);
      };
    };
    Node& receiver = make_node();
    Node& sender = make_node(options);
    backend = &sender.backend();
    loop_id = sender.loop_thread().thread_id();
    const EndPointAddress listening = receiver.listen(receive_params(max_payload, 4));
    sender.call([&] { sender.open_send(listening, send_params(max_payload, 0, nullptr)); });
    ASSERT_TRUE(sender.wait_established(listening));
    receiver.recorder().pause_data(true);
    std::size_t accepted = 0;
    NetioStatus last = NetioStatus::OK;
    // Fill from the loop thread (the thread an UNSAFE sender uses).
    sender.loop_thread().run_on_loop([&] {
      for (std::size_t i = 0; i < (1U << 16U) && last == NetioStatus::OK; ++i) {
        last = backend->send_data_copy(listening, payload, {}, next_key++);
        accepted += last == NetioStatus::OK ? 1 : 0;
      }
    });
    ASSERT_EQ(last, NetioStatus::NO_RESOURCES) << "accepted " << accepted;
    receiver.recorder().pause_data(false);
    const auto until = deadline_from_now();
    for (;;) {
      {
        const std::lock_guard lock{shared->mutex};
        if (shared->calls > 0 || std::chrono::steady_clock::now() > until) {
          break;
        }
      }
      std::this_thread::sleep_for(1ms);
    }
    {
      const std::lock_guard lock{shared->mutex};
      ASSERT_GE(shared->calls, 1U) << "on_send_space_cb was not called after the receiver read again";
      EXPECT_TRUE(shared->on_loop) << "on_send_space_cb ran on another thread than the loop's";
      EXPECT_EQ(shared->retries.front(), NetioStatus::OK) << "no room when on_send_space_cb said so";
    }
    sender.call([&] { sender.backend().close_send_endpoint(listening); });
    EXPECT_TRUE(sender.wait_closed(listening));
    destroy_node(sender);
    destroy_node(receiver);
  }
}

// --- waiting for a free buffer of get_buffer (wait_for_buffer) ----------------------------------

// Four threads send buffered streams over one endpoint with two buffers: get_buffer's nullptr is
// followed by wait_for_buffer, send_buffer's NO_RESOURCES by wait_for_send_space. The receiver is
// paused at first, until every thread has waited or finished (a long pause ended the connection,
// probably by TCP_USER_TIMEOUT), so buffers run out and threads wait. Everything arrives, in order
// per stream.
TEST_P(SendWait, SeveralThreadsWaitForBuffersOnOneEndpoint) {
  constexpr std::size_t threads = 4;
  constexpr std::size_t max_payload = 8U << 10U;
  const std::size_t messages = count(1500, 100);
  Node& receiver = make_node();
  Node& sender = make_node(small_queue(32U << 10U));
  const EndPointAddress listening = receiver.listen(receive_params(max_payload, 8));
  ASSERT_TRUE(sender.connect(listening, send_params(max_payload, 2, nullptr)));
  receiver.recorder().pause_data(true);

  std::atomic<std::size_t> buffer_waits{0};
  std::atomic<std::size_t> waiting_threads{0};
  std::vector<std::unique_ptr<StreamSender>> streams;
  for (std::size_t t = 0; t < threads; ++t) {
    streams.push_back(std::make_unique<StreamSender>(sender, listening, static_cast<std::uint32_t>(t + 1),
                                                     std::span<std::uint8_t>{}, max_payload));
  }
  std::vector<std::future<std::string>> results;
  for (std::size_t t = 0; t < threads; ++t) {
    results.push_back(std::async(std::launch::async, [&, t]() -> std::string {
      StreamSender& stream = *streams[t];
      bool counted = false;
      while (stream.sent() < messages) {
        const std::size_t payload = 1 + (stream.sent() * 977U) % max_payload;
        const NetioStatus status = stream.try_send(SendMode::Buffered, payload);
        if (status == NetioStatus::OK) {
          continue;
        }
        if (status != NetioStatus::NO_RESOURCES) {
          return "send returned " + std::string{to_string(status)};
        }
        // A thread that holds a refused buffer waits for room, the others for a buffer: with two
        // buffers, not every thread can wait for one while the receiver is paused.
        if (!counted) {
          counted = true;
          waiting_threads.fetch_add(1);
        }
        WaitStatus waited{};
        if (stream.has_pending_buffer()) {
          waited = sender.backend().wait_for_send_space(listening, message_header_size + payload, long_wait());
        } else {
          buffer_waits.fetch_add(1);
          waited = sender.backend().wait_for_buffer(listening, long_wait());
        }
        if (waited != WaitStatus::READY) {
          return "wait after message " + std::to_string(stream.sent()) + " returned " + std::string{to_string(waited)};
        }
      }
      if (!counted) {
        waiting_threads.fetch_add(1); // done without a wait: the pause must not wait for it
      }
      return {};
    }));
  }
  // Let every thread wait while the receiver is paused (or finish).
  const auto until = deadline_from_now();
  while (waiting_threads.load() < threads && std::chrono::steady_clock::now() < until &&
         std::any_of(results.begin(), results.end(), [](const std::future<std::string>& result) {
           return result.wait_for(0s) != std::future_status::ready;
         })) {
    std::this_thread::sleep_for(1ms);
  }
  receiver.recorder().pause_data(false);
  for (std::size_t t = 0; t < threads; ++t) {
    ASSERT_EQ(results[t].wait_for(long_wait()), std::future_status::ready) << "thread " << t << " hangs";
    EXPECT_EQ(results[t].get(), "") << "thread " << t;
  }
  EXPECT_GT(buffer_waits.load(), 0U) << "no thread ever waited for a buffer: the test did not test it";
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) {
    for (std::uint32_t t = 1; t <= threads; ++t) {
      if (s.stream_progress(t) < messages) {
        return false;
      }
    }
    return true;
  })) << "not every stream arrived";
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
}

// A close from another thread wakes a thread waiting for a buffer at once, also while the loop
// thread is busy; afterwards the wait returns CLOSED without waiting.
TEST_P(SendWait, CloseWakesBufferWaiterWithoutTheLoop) {
  BuffersTaken taken = take_all_buffers();
  Node& sender = *taken.sender;
  std::promise<void> release_loop;
  std::shared_future<void> loop_released = release_loop.get_future().share();
  std::promise<void> loop_blocked;
  std::thread blocker{[&] {
    try {
      sender.loop_thread().run_on_loop([&] {
        loop_blocked.set_value();
        loop_released.wait_for(long_wait());
      });
    } catch (const std::runtime_error&) {
      // run_on_loop's own deadline passed (the waiter hung): the assertion below reports it.
    }
  }};
  loop_blocked.get_future().wait();
  auto waiter =
      std::async(std::launch::async, [&] { return sender.backend().wait_for_buffer(taken.listening, long_wait()); });
  std::this_thread::sleep_for(20ms); // let it start waiting (the result is the same if it has not)
  sender.backend().close_send_endpoint(taken.listening);
  const bool returned = waiter.wait_for(test_environment().deadline / 2) == std::future_status::ready;
  release_loop.set_value();
  blocker.join();
  ASSERT_TRUE(returned) << "the buffer waiter did not return after close_send_endpoint while the loop was busy";
  EXPECT_EQ(waiter.get(), WaitStatus::CLOSED);
  EXPECT_TRUE(sender.wait_closed(taken.listening));
  EXPECT_EQ(sender.backend().wait_for_buffer(taken.listening, long_wait()), WaitStatus::CLOSED);
}

// Destroying the backend while a thread waits for a buffer: the wait returns CLOSED.
TEST_P(SendWait, DestroyWakesBufferWaiter) {
  BuffersTaken taken = take_all_buffers();
  NetworkBackend& backend = taken.sender->backend();
  std::atomic<bool> started{false};
  auto waiter = std::async(std::launch::async, [&] {
    started.store(true);
    return backend.wait_for_buffer(taken.listening, long_wait());
  });
  while (!started.load()) {
    std::this_thread::sleep_for(1ms);
  }
  // Starting a wait once destruction began is undefined: give the thread ample time to be inside.
  std::this_thread::sleep_for(200ms);
  taken.sender->destroy_backend();
  ASSERT_EQ(waiter.wait_for(test_environment().deadline), std::future_status::ready);
  EXPECT_EQ(waiter.get(), WaitStatus::CLOSED);
}

// Timeouts and misuse of wait_for_buffer; a buffer that comes back ends the wait.
TEST_P(SendWait, BufferWaitTimeoutsAndMisuse) {
  BuffersTaken taken = take_all_buffers();
  Node& sender = *taken.sender;
  NetworkBackend& backend = sender.backend();
  EXPECT_EQ(backend.wait_for_buffer(taken.listening, 0ms), WaitStatus::TIMED_OUT);
  EXPECT_EQ(backend.wait_for_buffer(taken.listening, 30ms), WaitStatus::TIMED_OUT);
  EXPECT_THROW(static_cast<void>(backend.wait_for_buffer(taken.listening, -1ms)), std::invalid_argument);
  const EndPointAddress nobody{test_environment().address, 9};
  EXPECT_EQ(backend.wait_for_buffer(nobody, long_wait()), WaitStatus::CLOSED);
  WaitStatus on_loop = WaitStatus::READY;
  sender.loop_thread().run_on_loop([&] { on_loop = backend.wait_for_buffer(taken.listening, long_wait()); });
  EXPECT_EQ(on_loop, WaitStatus::ON_LOOP_THREAD);
  // An endpoint without buffers would never get one: an error, not a wait.
  const EndPointAddress unbuffered_listening = taken.receiver->listen(receive_params(1024, 4));
  ASSERT_TRUE(sender.connect(unbuffered_listening, send_params(1024, 0, nullptr)));
  EXPECT_THROW(static_cast<void>(backend.wait_for_buffer(unbuffered_listening, long_wait())), NoBuffersAllocated);
  // Sending a held buffer gives it back once sent, which ends a wait in progress. The wait starts
  // while the loop thread is blocked, so that the buffer comes back after it began (with the
  // completion the loop drains, or at once from a direct write): without a wake-up it would hang.
  ASSERT_FALSE(taken.held.empty());
  std::promise<void> release_loop;
  std::shared_future<void> loop_released = release_loop.get_future().share();
  std::promise<void> loop_blocked;
  std::thread blocker{[&] {
    try {
      sender.loop_thread().run_on_loop([&] {
        loop_blocked.set_value();
        loop_released.wait_for(long_wait());
      });
    } catch (const std::runtime_error&) {
      // run_on_loop's own deadline passed: the assertions below report what went wrong.
    }
  }};
  loop_blocked.get_future().wait();
  auto waiter = std::async(std::launch::async, [&] { return backend.wait_for_buffer(taken.listening, long_wait()); });
  std::this_thread::sleep_for(20ms); // let it start waiting (the result is the same if it has not)
  fill_message(*taken.held.front(), 1, 0, 100);
  const NetioStatus sent = backend.send_buffer(taken.listening, taken.held.front());
  release_loop.set_value();
  blocker.join();
  ASSERT_EQ(sent, NetioStatus::OK);
  ASSERT_EQ(waiter.wait_for(long_wait()), std::future_status::ready) << "the buffer waiter hangs";
  EXPECT_EQ(waiter.get(), WaitStatus::READY);
  EXPECT_NE(backend.get_buffer(taken.listening), nullptr);
  ASSERT_TRUE(taken.receiver->recorder().wait([](const RecorderState& s) { return s.stream_progress(1) >= 1; }));
}

// No lost wake-up for buffers: three threads share one buffer and one message of room, and wait
// after every refusal, so the returns of the buffer (by the loop after a completion, or at once by
// the thread whose send wrote it) race the waiters' checks thousands of times. A lost wake-up makes
// a wait time out (long_wait), which fails the test (or ctest's timeout ends it). The receiver is
// paused until every thread has waited once or finished (a long pause ended the connection,
// probably by TCP_USER_TIMEOUT): a direct write over TCP returns the buffer within microseconds, so
// without the pause a run may never find it taken.
TEST_P(SendWait, NoLostWakeUpForBuffers) {
  constexpr std::size_t payload = 4096;
  constexpr std::uint32_t threads = 3;
  const std::size_t messages = count(3000, 200);
  Node& receiver = make_node();
  Node& sender = make_node(small_queue(1));
  const EndPointAddress listening = receiver.listen(receive_params(payload, 2));
  ASSERT_TRUE(sender.connect(listening, send_params(payload, 1, nullptr)));
  std::vector<std::unique_ptr<StreamSender>> streams;
  for (std::uint32_t t = 1; t <= threads; ++t) {
    streams.push_back(std::make_unique<StreamSender>(sender, listening, t, std::span<std::uint8_t>{}, payload));
  }
  std::atomic<std::size_t> buffer_waits{0};
  std::atomic<std::uint32_t> threads_waited{0};
  receiver.recorder().pause_data(true);
  auto send_all = [&](StreamSender& stream) -> std::string {
    bool counted = false;
    while (stream.sent() < messages) {
      const NetioStatus status = stream.try_send(SendMode::Buffered, payload);
      if (status == NetioStatus::OK) {
        continue;
      }
      if (status != NetioStatus::NO_RESOURCES) {
        return "send returned " + std::string{to_string(status)};
      }
      // The thread that holds the refused buffer waits for room, the others for the buffer.
      if (!counted) {
        counted = true;
        threads_waited.fetch_add(1);
      }
      WaitStatus waited{};
      if (stream.has_pending_buffer()) {
        waited = sender.backend().wait_for_send_space(listening, message_header_size + payload, long_wait());
      } else {
        buffer_waits.fetch_add(1);
        waited = sender.backend().wait_for_buffer(listening, long_wait());
      }
      if (waited != WaitStatus::READY) {
        return "wait returned " + std::string{to_string(waited)} + " after " + std::to_string(stream.sent());
      }
    }
    if (!counted) {
      threads_waited.fetch_add(1); // done without a wait: the pause must not wait for it
    }
    return {};
  };
  std::vector<std::future<std::string>> results;
  for (std::uint32_t t = 0; t < threads; ++t) {
    results.push_back(std::async(std::launch::async, [&, t] { return send_all(*streams[t]); }));
  }
  const auto until = deadline_from_now();
  while (threads_waited.load() < threads && std::chrono::steady_clock::now() < until &&
         std::any_of(results.begin(), results.end(), [](const std::future<std::string>& result) {
           return result.wait_for(0s) != std::future_status::ready;
         })) {
    std::this_thread::sleep_for(1ms);
  }
  receiver.recorder().pause_data(false);
  for (std::uint32_t t = 0; t < threads; ++t) {
    ASSERT_EQ(results[t].wait_for(long_wait()), std::future_status::ready) << "thread " << t << " hangs";
    EXPECT_EQ(results[t].get(), "") << "thread " << t;
  }
  EXPECT_GT(buffer_waits.load(), 0U);
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) {
    for (std::uint32_t t = 1; t <= threads; ++t) {
      if (s.stream_progress(t) < messages) {
        return false;
      }
    }
    return true;
  }));
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
}

// The loop-side notice after a refused get_buffer: a loop-thread sender that got nullptr is called
// back once a buffer is free again (here: after it sent one it held), on the loop thread, and
// get_buffer then returns a buffer. With its own pool, and with the shared pool, where the buffer
// comes back from another endpoint's send.
TEST_P(SendWait, SendSpaceCallbackAfterRefusedGetBuffer) {
  for (const ThreadSafetyModel model : {ThreadSafetyModel::UNSAFE, ThreadSafetyModel::SAFE}) {
    for (const bool shared_pool : {false, true}) {
      SCOPED_TRACE(std::string{to_string(model)} + (shared_pool ? ", shared pool" : ", own pool"));
      constexpr std::size_t max_payload = 1024;
      constexpr std::size_t num_buf = 2;
      struct Shared {
        std::mutex mutex;
        std::vector<EndPointAddress> called;
        std::vector<bool> got_buffer;
        bool on_loop{true};
      };
      auto shared = std::make_shared<Shared>();
      NetworkBackend* backend = nullptr;
      std::thread::id loop_id;
      NodeOptions options;
      options.thread_safety = model;
      options.configure = [&, shared, shared_pool](NetworkConfig& config) {
        config.use_shared_send_buffers = shared_pool;
        config.shared_send_buf_size = max_payload + message_header_size;
        config.shared_send_num_buf = num_buf;
        config.on_send_space_cb = [&, shared](const EndPointAddress& address) {
          const bool got = backend->get_buffer(address) != nullptr; // held: the close reclaims it
          const std::lock_guard lock{shared->mutex};
          shared->called.push_back(address);
          shared->got_buffer.push_back(got);
          shared->on_loop = shared->on_loop && std::this_thread::get_id() == loop_id;
        };
      };
      Node& receiver = make_node();
      Node& sender = make_node(options);
      backend = &sender.backend();
      loop_id = sender.loop_thread().thread_id();
      ConnectionParameters params = send_params(max_payload, shared_pool ? 0 : num_buf, nullptr);
      params.use_shared_send_buffers = shared_pool;
      // With the shared pool: `first` takes and sends the buffers, `second` is refused.
      const EndPointAddress first = receiver.listen(receive_params(max_payload, 4));
      const EndPointAddress second = shared_pool ? receiver.listen(receive_params(max_payload, 4)) : first;
      sender.call([&] {
        sender.open_send(first, params);
        if (shared_pool) {
          sender.open_send(second, params);
        }
      });
      ASSERT_TRUE(sender.wait_established(first));
      ASSERT_TRUE(sender.wait_established(second));
      std::vector<NetworkBuffer*> held;
      bool refused = false;
      sender.loop_thread().run_on_loop([&] {
        for (NetworkBuffer* buffer = nullptr; (buffer = backend->get_buffer(first)) != nullptr;) {
          held.push_back(buffer);
        }
        refused = backend->get_buffer(second) == nullptr; // arms the notice for `second`
        // Sending one held buffer gives it back once sent.
        fill_message(*held.front(), 1, 0, 100);
        ASSERT_EQ(backend->send_buffer(first, held.front()), NetioStatus::OK);
      });
      ASSERT_EQ(held.size(), num_buf);
      ASSERT_TRUE(refused);
      const auto until = deadline_from_now();
      for (;;) {
        {
          const std::lock_guard lock{shared->mutex};
          if (!shared->called.empty() || std::chrono::steady_clock::now() > until) {
            break;
          }
        }
        std::this_thread::sleep_for(1ms);
      }
      {
        const std::lock_guard lock{shared->mutex};
        ASSERT_FALSE(shared->called.empty()) << "on_send_space_cb was not called after a buffer came back";
        EXPECT_EQ(shared->called.front(), second);
        EXPECT_TRUE(shared->on_loop) << "on_send_space_cb ran on another thread than the loop's";
        EXPECT_TRUE(shared->got_buffer.front()) << "get_buffer returned nullptr when on_send_space_cb said so";
      }
      ASSERT_TRUE(receiver.recorder().wait([](const RecorderState& s) { return s.stream_progress(1) >= 1; }));
      sender.call([&] {
        sender.backend().close_send_endpoint(first);
        if (shared_pool) {
          sender.backend().close_send_endpoint(second);
        }
      });
      EXPECT_TRUE(sender.wait_closed(first));
      EXPECT_TRUE(sender.wait_closed(second));
      destroy_node(sender);
      destroy_node(receiver);
    }
  }
}

NETIO3_INSTANTIATE_CONFORMANCE(SendWait);

} // namespace
} // namespace netio3::conformance
