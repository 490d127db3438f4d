// Tests of the TCP backend's request/response path: sends from inside callbacks that are written at
// once (their completions reported when the callback's event ends), mixed with sends that have to
// be queued, the brief wait for a response on the receiving connection, and closing an endpoint
// while such completions are still to be reported. Real sockets on 127.0.0.1.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "TestSupport.hpp"

namespace netio3::asyncmsg {
namespace {

using namespace netio3::asyncmsg::testing;

const std::string localhost{"127.0.0.1"};

/// One side of a ping-pong: a backend on its own loop thread with a listen endpoint, a send
/// endpoint to the other side, and a record of what it received and which keys completed.
struct Side {
  explicit Side(std::uint32_t side_id) : id{side_id} {}

  const std::uint32_t id;
  EndPointAddress listening;
  EndPointAddress peer;
  std::atomic<bool> established{false};

  std::mutex mutex;
  std::vector<std::uint64_t> received_sequences; ///< first 8 bytes of every message received
  std::vector<std::uint64_t> completed_keys;
  std::vector<std::vector<std::uint64_t>> closed_pending;
  std::size_t data_errors{0};
  std::atomic<bool> off_loop_thread{false};

  // Last, so that they go first: no callback runs once the record above is destroyed.
  LoopThread loop;
  std::unique_ptr<NetworkBackend> backend;
};

/// Message `sequence` of side `id`: the sequence, the side, then a pattern; its size varies so that
/// some frames are assembled on the stack, some written from several pieces, and some (hundreds of
/// KiB) do not fit into the socket at once and are queued.
std::vector<std::uint8_t> message_for(std::uint32_t id, std::uint64_t sequence) {
  static constexpr std::array<std::size_t, 6> sizes{16, 64, 500, 3000, 20000, 300000};
  std::vector<std::uint8_t> bytes = pattern(sizes[sequence % sizes.size()], static_cast<std::uint32_t>(sequence) ^ id);
  std::memcpy(bytes.data(), &sequence, sizeof(sequence));
  std::memcpy(bytes.data() + sizeof(sequence), &id, sizeof(id));
  return bytes;
}

bool check_message(std::uint32_t id, std::uint64_t sequence, std::span<const std::uint8_t> data) {
  const auto expected = message_for(id, sequence);
  return data.size() == expected.size() && std::equal(data.begin(), data.end(), expected.begin());
}

// Both sides answer every message they receive from inside the data callback, with a burst of
// three messages of different sizes; every message arrives intact and in order, and every key of
// every send completes exactly once, in send order, although some sends were written at once and
// some (those behind a message too large for the socket) were queued.
TEST(ReplyPath, RequestResponseBurstsFromCallbacks) {
  constexpr std::uint64_t rounds = 300;
  std::atomic<std::uint64_t> a_next{0};
  std::atomic<std::uint64_t> b_next{0};
  Side a{1};
  Side b{2};

  const auto configure = [](Side& side, Side& other, std::atomic<std::uint64_t>& next_to_send, bool starts) {
    NetworkConfig config;
    config.thread_safety = ThreadSafetyModel::SAFE;
    config.max_unsent_bytes = std::size_t{16} << 20U;
    std::weak_ptr<BaseEventLoop> loop = side.loop.loop();
    const auto on_loop = [&side, loop] {
      const auto current = loop.lock();
      if (!current || !current->in_loop_thread()) {
        side.off_loop_thread = true;
      }
    };
    // Sends the next burst of three (queued behind each other when the socket is full).
    const auto send_burst = [&side, &next_to_send] {
      for (int count = 0; count < 3; ++count) {
        const std::uint64_t sequence = next_to_send.load();
        const auto message = message_for(side.id, sequence);
        if (side.backend->send_data_copy(side.peer, std::span<const std::uint8_t>{message}, {}, sequence) !=
            NetioStatus::OK) {
          const std::lock_guard lock{side.mutex};
          ++side.data_errors; // the bound is far above what the test queues
          return;
        }
        next_to_send = sequence + 1;
      }
    };
    config.on_connection_established_cb = [&side, on_loop, send_burst, starts](const EndPointAddress& where) {
      on_loop();
      if (where == side.peer) {
        side.established = true;
        if (starts) {
          send_burst();
        }
      }
    };
    config.on_data_from_cb = [&side, &other, on_loop, send_burst, &next_to_send](const EndPointAddress&,
                                                                                 std::span<const std::uint8_t> data) {
      on_loop();
      std::uint64_t sequence = 0;
      bool intact = data.size() >= sizeof(sequence);
      if (intact) {
        std::memcpy(&sequence, data.data(), sizeof(sequence));
        intact = check_message(other.id, sequence, data);
      }
      bool answer = false;
      {
        const std::lock_guard lock{side.mutex};
        if (!intact || sequence != side.received_sequences.size()) {
          ++side.data_errors;
        }
        side.received_sequences.push_back(sequence);
        // Answer the last message of each burst, until both sides sent `rounds` bursts.
        answer = sequence % 3 == 2 && next_to_send.load() < 3 * rounds;
      }
      if (answer) {
        send_burst();
      }
    };
    config.on_send_completed_cb = [&side, on_loop](const EndPointAddress& where, std::uint64_t key) {
      on_loop();
      const std::lock_guard lock{side.mutex};
      if (where != side.peer) {
        ++side.data_errors;
      }
      side.completed_keys.push_back(key);
    };
    config.on_connection_closed_cb = [&side, on_loop](const EndPointAddress&, const std::vector<std::uint64_t>& keys) {
      on_loop();
      const std::lock_guard lock{side.mutex};
      side.closed_pending.push_back(keys);
    };
    side.backend = NetworkBackend::create(NetworkType::ASYNCMSG, config, side.loop.loop());
    side.listening = side.backend->open_listen_endpoint({localhost, 0}, {std::size_t{1} << 20U, 0, false});
  };
  configure(a, b, a_next, true);
  configure(b, a, b_next, false);
  a.peer = b.listening;
  b.peer = a.listening;
  b.backend->open_send_endpoint(b.peer, {});
  const auto wait_for = [](const auto& condition) {
    const auto deadline = std::chrono::steady_clock::now() + wait_limit;
    while (!condition()) {
      if (std::chrono::steady_clock::now() > deadline) {
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
    return true;
  };
  ASSERT_TRUE(wait_for([&] { return b.established.load(); }));
  a.backend->open_send_endpoint(a.peer, {}); // A's first burst starts the exchange

  const auto done = [](Side& side, std::uint64_t count) {
    const std::lock_guard lock{side.mutex};
    return side.received_sequences.size() >= count && side.data_errors == 0;
  };
  ASSERT_TRUE(wait_for([&] { return done(a, 3 * rounds) && done(b, 3 * rounds); }))
      << "A received " << a.received_sequences.size() << ", B " << b.received_sequences.size() << "; errors "
      << a.data_errors << " / " << b.data_errors;
  for (Side* side : {&a, &b}) {
    const std::uint64_t sent = side == &a ? a_next.load() : b_next.load();
    EXPECT_EQ(sent, 3 * rounds);
    ASSERT_TRUE(wait_for([&] {
      const std::lock_guard lock{side->mutex};
      return side->completed_keys.size() >= sent;
    }));
    const std::lock_guard lock{side->mutex};
    EXPECT_EQ(side->data_errors, 0U);
    ASSERT_EQ(side->completed_keys.size(), sent);
    for (std::uint64_t index = 0; index < sent; ++index) {
      ASSERT_EQ(side->completed_keys[index], index) << "side " << side->id << ": completions out of order";
    }
    EXPECT_FALSE(side->off_loop_thread);
    EXPECT_TRUE(side->closed_pending.empty());
  }
}

/// A backend on its own loop whose callbacks run `on_established` and `on_completed` (inside its
/// event handlers) and record every completion and close. A barrier connection (`barrier`) is kept
/// out of both: its callbacks only record that the barrier passed.
struct CallbackSender {
  std::mutex mutex;
  std::vector<std::uint64_t> completed;
  std::vector<std::vector<std::uint64_t>> closed;
  std::size_t completions_after_close{0};
  bool barrier_completed{false};
  EndPointAddress barrier_address;
  std::function<void(const EndPointAddress&)> on_established;
  std::function<void(const EndPointAddress&, std::uint64_t)> on_completed;
  // Last, so that they go first: no callback runs once the members above are destroyed.
  LoopThread loop;
  std::unique_ptr<NetworkBackend> backend;

  CallbackSender() {
    NetworkConfig config;
    config.on_connection_established_cb = [this](const EndPointAddress& where) {
      if (is_barrier(where)) {
        return;
      }
      if (on_established) {
        on_established(where);
      }
    };
    config.on_send_completed_cb = [this](const EndPointAddress& where, std::uint64_t key) {
      {
        const std::lock_guard lock{mutex};
        if (where == barrier_address && key == barrier_key) {
          barrier_completed = true;
          return;
        }
        completed.push_back(key);
        if (!closed.empty()) {
          ++completions_after_close;
        }
      }
      if (on_completed) {
        on_completed(where, key);
      }
    };
    config.on_connection_closed_cb = [this](const EndPointAddress&, const std::vector<std::uint64_t>& keys) {
      const std::lock_guard lock{mutex};
      closed.push_back(keys);
    };
    backend = NetworkBackend::create(NetworkType::ASYNCMSG, config, loop.loop());
  }

  bool is_barrier(const EndPointAddress& where) {
    const std::lock_guard lock{mutex};
    return where == barrier_address;
  }

  /// A barrier for "nothing more is reported": one message with `barrier_key` to `listening` (a
  /// listen endpoint that no other connection of this sender uses) through this backend, and a
  /// wait for its completion. The backend's callbacks run one after another on its loop, so
  /// whatever it still had to report before (a late completion, a second close) has been recorded
  /// by then. False if the deadline passed first.
  bool barrier(const EndPointAddress& listening) {
    {
      const std::lock_guard lock{mutex};
      barrier_address = listening;
    }
    backend->open_send_endpoint(listening, {});
    const std::vector<std::uint8_t> message(8, 0xba);
    const auto deadline = std::chrono::steady_clock::now() + wait_limit;
    NetioStatus status = NetioStatus::NO_RESOURCES;
    while ((status = backend->send_data_copy(listening, std::span<const std::uint8_t>{message}, {}, barrier_key)) ==
               NetioStatus::NO_RESOURCES &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds{1}); // until the connection is established
    }
    while (status == NetioStatus::OK && std::chrono::steady_clock::now() < deadline) {
      {
        const std::lock_guard lock{mutex};
        if (barrier_completed) {
          return true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
    return false;
  }

  bool wait_closed() {
    const auto deadline = std::chrono::steady_clock::now() + wait_limit;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        const std::lock_guard lock{mutex};
        if (!closed.empty()) {
          return true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
    return false;
  }
};

// Messages written at once from inside a callback, and the endpoint closed in the same callback:
// their keys come back with the close, in send order, and nothing completes afterwards.
TEST(ReplyPath, CloseInTheCallbackThatSentReturnsTheKeys) {
  LoopThread receiver_loop;
  Events receiver_events;
  auto receiver = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(receiver_events, receiver_loop.loop()),
                                         receiver_loop.loop());
  const EndPointAddress address = receiver->open_listen_endpoint({localhost, 0}, {});
  const auto message = pattern(64, 1);
  std::vector<std::uint64_t> accepted;
  CallbackSender sender;
  sender.on_established = [&](const EndPointAddress& where) {
    for (std::uint64_t key = 0; key < 5; ++key) {
      if (sender.backend->send_data_copy(where, std::span<const std::uint8_t>{message}, {}, key) == NetioStatus::OK) {
        accepted.push_back(key);
      }
    }
    sender.backend->close_send_endpoint(where);
  };
  sender.backend->open_send_endpoint(address, {});
  ASSERT_TRUE(sender.wait_closed());
  ASSERT_TRUE(sender.barrier(receiver->open_listen_endpoint({localhost, 0}, {}))); // anything late shows up now
  const std::lock_guard lock{sender.mutex};
  EXPECT_EQ(accepted, (std::vector<std::uint64_t>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(sender.completed.empty()) << "closed in the same callback: the keys come with the close";
  ASSERT_EQ(sender.closed.size(), 1U);
  EXPECT_EQ(sender.closed.front(), accepted);
}

// The endpoint is closed from the completion callback of the first of several messages written at
// once: that key completed, the others come back with the close, each once and in order.
TEST(ReplyPath, CloseFromACompletionCallbackReturnsTheRest) {
  LoopThread receiver_loop;
  Events receiver_events;
  auto receiver = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(receiver_events, receiver_loop.loop()),
                                         receiver_loop.loop());
  const EndPointAddress address = receiver->open_listen_endpoint({localhost, 0}, {});
  const auto message = pattern(64, 2);
  CallbackSender sender;
  sender.on_established = [&](const EndPointAddress& where) {
    for (std::uint64_t key = 0; key < 6; ++key) {
      EXPECT_EQ(sender.backend->send_data_copy(where, std::span<const std::uint8_t>{message}, {}, key),
                NetioStatus::OK);
    }
  };
  sender.on_completed = [&](const EndPointAddress& where, std::uint64_t key) {
    if (key == 0) {
      sender.backend->close_send_endpoint(where);
    }
  };
  sender.backend->open_send_endpoint(address, {});
  ASSERT_TRUE(sender.wait_closed());
  ASSERT_TRUE(sender.barrier(receiver->open_listen_endpoint({localhost, 0}, {}))); // anything late shows up now
  const std::lock_guard lock{sender.mutex};
  EXPECT_EQ(sender.completed, (std::vector<std::uint64_t>{0}));
  ASSERT_EQ(sender.closed.size(), 1U);
  EXPECT_EQ(sender.closed.front(), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(sender.completions_after_close, 0U);
  const auto sent_messages = [&] {
    return std::count_if(receiver_events.received.begin(), receiver_events.received.end(),
                         [&](const auto& entry) { return entry.second == message; });
  };
  EXPECT_TRUE(receiver_events.wait([&] { return sent_messages() >= 6; }))
      << "the messages were on the wire before the close";
  const std::lock_guard receiver_lock{receiver_events.mutex};
  EXPECT_EQ(sent_messages(), 6);
}

// A callback that sends on every completion keeps the loop busy only for a bounded number of
// rounds: another connection on the same loop still gets its messages through meanwhile, and the
// chain's keys complete in order.
TEST(ReplyPath, CompletionChainsDoNotStarveTheLoop) {
  LoopThread loop;
  Events receiver_events;
  receiver_events.count_only = true;
  auto receiver =
      NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(receiver_events, loop.loop()), loop.loop());
  const EndPointAddress chain_address = receiver->open_listen_endpoint({localhost, 0}, {});
  const EndPointAddress other_address = receiver->open_listen_endpoint({localhost, 0}, {});
  const auto message = pattern(32, 3);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> next{0};
  CallbackSender chain;
  chain.on_established = [&](const EndPointAddress& where) {
    if (chain.backend->send_data_copy(where, std::span<const std::uint8_t>{message}, {}, 0) == NetioStatus::OK) {
      next = 1;
    }
  };
  chain.on_completed = [&](const EndPointAddress& where, std::uint64_t) {
    const std::uint64_t key = next.load();
    if (!stop.load() &&
        chain.backend->send_data_copy(where, std::span<const std::uint8_t>{message}, {}, key) == NetioStatus::OK) {
      next = key + 1;
    }
  };
  chain.backend->open_send_endpoint(chain_address, {});
  // A second sender on the chain's loop thread: its messages must get through while the chain runs.
  Events other_events;
  auto other = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(other_events, chain.loop.loop()),
                                      chain.loop.loop());
  other->open_send_endpoint(other_address, {});
  ASSERT_TRUE(other_events.wait([&] { return other_events.established.size() == 1; }));
  ASSERT_TRUE(receiver_events.wait([&] { return receiver_events.received_count > 1000; })) << "the chain did not run";
  for (std::uint64_t key = 0; key < 100; ++key) {
    NetioStatus status = NetioStatus::NO_RESOURCES;
    while ((status = other->send_data_copy(other_address, std::span<const std::uint8_t>{message}, {}, key)) ==
           NetioStatus::NO_RESOURCES) {
      std::this_thread::yield();
    }
    ASSERT_EQ(status, NetioStatus::OK);
  }
  EXPECT_TRUE(other_events.wait([&] { return other_events.completed.size() == 100; }))
      << "the other connection starved";
  stop = true;
  // Barrier: one more message from the other backend on the chain's loop thread. Callbacks on that
  // thread run one at a time, so once its completion has been reported, a chain callback that was
  // running when `stop` was set has returned, and every later one sees `stop`: `next` is final.
  NetioStatus barrier_status = NetioStatus::NO_RESOURCES;
  while ((barrier_status = other->send_data_copy(other_address, std::span<const std::uint8_t>{message}, {}, 100)) ==
         NetioStatus::NO_RESOURCES) {
    std::this_thread::yield();
  }
  ASSERT_EQ(barrier_status, NetioStatus::OK);
  ASSERT_TRUE(other_events.wait([&] { return other_events.completed.size() == 101; }));
  const std::uint64_t sent = next.load();
  const auto deadline = std::chrono::steady_clock::now() + wait_limit;
  while (std::chrono::steady_clock::now() < deadline) {
    {
      const std::lock_guard lock{chain.mutex};
      if (chain.completed.size() >= sent) {
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
  const std::lock_guard lock{chain.mutex};
  ASSERT_EQ(chain.completed.size(), sent);
  for (std::uint64_t key = 0; key < sent; ++key) {
    ASSERT_EQ(chain.completed[key], key);
  }
}

// The endpoint is closed from another thread while a chain of completion callbacks keeps sending
// on it: every accepted key is reported exactly once, completed or pending, in send order.
TEST(ReplyPath, CloseWhileACompletionChainRuns) {
  LoopThread receiver_loop;
  Events receiver_events;
  receiver_events.count_only = true;
  auto receiver = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(receiver_events, receiver_loop.loop()),
                                         receiver_loop.loop());
  const EndPointAddress address = receiver->open_listen_endpoint({localhost, 0}, {});
  const EndPointAddress barrier_listening = receiver->open_listen_endpoint({localhost, 0}, {});
  for (int cycle = 0; cycle < 20; ++cycle) {
    const auto message = pattern(48, 4);
    std::atomic<std::uint64_t> next{0};
    CallbackSender chain;
    const auto send_next = [&](const EndPointAddress& where) {
      const std::uint64_t key = next.load();
      try {
        if (chain.backend->send_data_copy(where, std::span<const std::uint8_t>{message}, {}, key) == NetioStatus::OK) {
          next = key + 1;
        }
      } catch (const UnknownSendEndpoint&) {
        // closed meanwhile
      }
    };
    chain.on_established = [&](const EndPointAddress& where) {
      for (int count = 0; count < 4; ++count) {
        send_next(where);
      }
    };
    chain.on_completed = [&](const EndPointAddress& where, std::uint64_t) { send_next(where); };
    chain.backend->open_send_endpoint(address, {});
    std::size_t started = 0;
    {
      const std::lock_guard lock{receiver_events.mutex};
      started = receiver_events.received_count;
    }
    ASSERT_TRUE(receiver_events.wait([&] { return receiver_events.received_count > started + 200; }));
    chain.backend->close_send_endpoint(address);
    ASSERT_TRUE(chain.wait_closed());
    ASSERT_TRUE(chain.barrier(barrier_listening)) << "cycle " << cycle; // anything late shows up now
    const std::uint64_t sent = next.load();
    const std::lock_guard lock{chain.mutex};
    ASSERT_EQ(chain.closed.size(), 1U);
    std::vector<std::uint64_t> reported = chain.completed;
    reported.insert(reported.end(), chain.closed.front().begin(), chain.closed.front().end());
    ASSERT_EQ(reported.size(), sent) << "cycle " << cycle;
    for (std::uint64_t key = 0; key < sent; ++key) {
      ASSERT_EQ(reported[key], key) << "cycle " << cycle;
    }
    EXPECT_EQ(chain.completions_after_close, 0U);
  }
}

} // namespace
} // namespace netio3::asyncmsg
