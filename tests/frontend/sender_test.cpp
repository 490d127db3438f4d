// NetioSender -> NetioReceiver over every backend: each method delivers tagged messages intact, in
// order, exactly once; flushing; backpressure; keys; bad input.

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "frontend/FrontendFixture.hpp"

namespace netio3::frontend_test {
namespace {

class Sender : public FrontendTest {
protected:
  /// A receiver listening on the test address and a sender connected to it.
  struct Pair {
    Collector collector;
    std::unique_ptr<NetioReceiver> receiver;
    std::unique_ptr<NetioSender> sender;
    EndPointAddress address;
    std::atomic<int> established{0};
    std::mutex mutex;
    std::multiset<std::uint64_t> completed;
    std::vector<std::uint64_t> returned;
    std::atomic<int> closed{0};
  };

  std::unique_ptr<Pair> make_pair(NetioSenderConfig config, ConnectionParametersRecv params = {}) {
    auto pair = std::make_unique<Pair>();
    LoopThread& loop = make_loop();
    pair->collector.set_loop_thread(loop.thread_id());
    pair->receiver = std::make_unique<NetioReceiver>(receiver_config(pair->collector), loop.loop());
    pair->address = pair->receiver->listen(any_port(), params);
    Pair* raw = pair.get();
    config.on_connection_established_cb = [raw](const EndPointAddress&) { ++raw->established; };
    config.on_send_completed_cb = [raw](const EndPointAddress&, std::uint64_t key) {
      const std::lock_guard lock{raw->mutex};
      raw->completed.insert(key);
    };
    config.on_connection_closed_cb = [raw](const EndPointAddress&, const std::vector<std::uint64_t>& keys) {
      const std::lock_guard lock{raw->mutex};
      raw->returned.insert(raw->returned.end(), keys.begin(), keys.end());
      ++raw->closed;
    };
    pair->sender = std::make_unique<NetioSender>(config, make_loop().loop());
    pair->sender->connect(pair->address);
    EXPECT_TRUE(eventually([&] { return pair->established.load() == 1; })) << "the connection was not established";
    return pair;
  }

  /// Sends `count` messages of `tags` tags round-robin, retrying NO_RESOURCES.
  static void send_all(Pair& pair, std::size_t count, std::size_t tags, std::size_t size,
                       std::span<std::uint8_t> region = {}) {
    std::vector<std::uint64_t> next(tags, 0);
    std::vector<std::uint8_t> scratch(std::max<std::size_t>(size, 8));
    for (std::size_t index = 0; index < count; ++index) {
      const std::uint64_t tag = 1000 + index % tags;
      const std::uint64_t seq = next[index % tags]++;
      std::span<std::uint8_t> payload{scratch};
      if (!region.empty()) {
        // Zero-copy: a slot of its own, reused only after its key came back.
        payload = region.subspan((index % 64) * scratch.size(), scratch.size());
        wait_for_keys(pair, index >= 64 ? index - 63 : 0);
      }
      fill_payload(payload, tag, seq);
      const auto deadline = conformance::deadline_from_now();
      NetioStatus status = NetioStatus::NO_RESOURCES;
      while ((status = pair.sender->send(pair.address, tag, payload, static_cast<std::uint8_t>(seq % 3), index)) ==
                 NetioStatus::NO_RESOURCES &&
             std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::microseconds{20});
      }
      ASSERT_EQ(status, NetioStatus::OK) << "message " << index;
      if (!region.empty()) {
        fill_payload(scratch, tag, seq); // the caller's scratch is untouched by zero-copy
      }
    }
  }

  static void wait_for_keys(Pair& pair, std::size_t count) {
    const auto deadline = conformance::deadline_from_now();
    for (;;) {
      {
        const std::lock_guard lock{pair.mutex};
        if (pair.completed.size() >= count) {
          return;
        }
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "zero-copy keys did not come back";
        return;
      }
      std::this_thread::sleep_for(std::chrono::microseconds{50});
    }
  }
};

TEST_P(Sender, BufferedMessagesOfManyTagsArriveInOrderExactlyOnce) {
  NetioSenderConfig config = sender_config(SendMethod::BUFFERED);
  auto pair = make_pair(config);
  const std::size_t messages = count(20000, 500);
  send_all(*pair, messages, 37, 40);
  pair->sender->flush();
  ASSERT_TRUE(pair->collector.wait([&](Collector& c) { return c.total_unlocked() == messages; }))
      << pair->collector.total() << " of " << messages;
  EXPECT_TRUE(pair->collector.errors().empty()) << pair->collector.errors().front();
  EXPECT_EQ(pair->collector.received(1000), (messages + 36) / 37);
  EXPECT_EQ(pair->collector.last_status(1000), static_cast<std::uint8_t>(((messages + 36) / 37 - 1) % 3));
}

TEST_P(Sender, CopyMessagesArriveAtOnceEachInABufferOfItsOwn) {
  NetioSenderConfig config = sender_config(SendMethod::COPY);
  config.flush_interval = std::chrono::microseconds{0}; // COPY needs no timer
  auto pair = make_pair(config);
  const std::size_t messages = count(4000, 200);
  send_all(*pair, messages, 3, 1000);
  ASSERT_TRUE(pair->collector.wait([&](Collector& c) { return c.total_unlocked() == messages; }))
      << pair->collector.total() << " of " << messages;
  EXPECT_TRUE(pair->collector.errors().empty()) << pair->collector.errors().front();
}

TEST_P(Sender, ZeroCopyMessagesArriveAndEveryKeyComesBackOnce) {
  NetioSenderConfig config = sender_config(SendMethod::ZERO_COPY);
  const std::size_t size = 3000;
  conformance::AlignedMemory& region = make_region(64 * size);
  config.mr_start = region.data();
  config.mr_size = region.size();
  auto pair = make_pair(config);
  const std::size_t messages = count(4000, 200);
  send_all(*pair, messages, 5, size, region.span());
  ASSERT_TRUE(pair->collector.wait([&](Collector& c) { return c.total_unlocked() == messages; }));
  wait_for_keys(*pair, messages);
  EXPECT_TRUE(pair->collector.errors().empty()) << pair->collector.errors().front();
  const std::lock_guard lock{pair->mutex};
  EXPECT_EQ(pair->completed.size(), messages);
  EXPECT_EQ(std::set<std::uint64_t>(pair->completed.begin(), pair->completed.end()).size(), messages)
      << "a key was reported twice";
}

TEST_P(Sender, ALoneBufferedMessageIsFlushedByTheTimer) {
  NetioSenderConfig config = sender_config(SendMethod::BUFFERED);
  config.flush_interval = std::chrono::microseconds{200};
  auto pair = make_pair(config);
  for (std::uint64_t seq = 0; seq < 5; ++seq) {
    // One message at a time, far from filling a buffer: only the timer sends it.
    const auto payload = make_payload(7, seq, 16);
    ASSERT_EQ(pair->sender->send(pair->address, 7, payload), NetioStatus::OK);
    ASSERT_TRUE(pair->collector.wait([&](Collector& c) { return c.received_unlocked(7) == seq + 1; }))
        << "message " << seq << " was not flushed";
  }
  EXPECT_TRUE(pair->collector.errors().empty()) << pair->collector.errors().front();
}

TEST_P(Sender, ExplicitFlushSendsWithoutATimer) {
  NetioSenderConfig config = sender_config(SendMethod::BUFFERED);
  config.flush_interval = std::chrono::microseconds{0}; // only full buffers and flush()
  auto pair = make_pair(config);
  const auto payload = make_payload(8, 0, 16);
  ASSERT_EQ(pair->sender->send(pair->address, 8, payload), NetioStatus::OK);
  ASSERT_EQ(pair->sender->flush(pair->address), NetioStatus::OK);
  ASSERT_TRUE(pair->collector.wait([&](Collector& c) { return c.received_unlocked(8) == 1; }));
  EXPECT_EQ(pair->sender->flush(pair->address), NetioStatus::OK); // nothing to send is fine too
}

TEST_P(Sender, OversizedAndInvalidMessagesAreRefusedAndNothingIsSent) {
  NetioSenderConfig config = sender_config(SendMethod::BUFFERED);
  config.buffersize = 1024;
  auto pair = make_pair(config);
  const std::vector<std::uint8_t> largest(1024 - BufferFormatter::max_overhead);
  const std::vector<std::uint8_t> too_large(largest.size() + 1);
  EXPECT_EQ(pair->sender->send(pair->address, 1, too_large), NetioStatus::MESSAGE_TOO_LARGE);
  EXPECT_EQ(
      pair->sender->send(pair->address, 1, std::span<const std::uint8_t>{static_cast<const std::uint8_t*>(nullptr), 4}),
      NetioStatus::INVALID_ARGUMENT);
  auto payload = make_payload(1, 0, largest.size());
  EXPECT_EQ(pair->sender->send(pair->address, 1, payload, 200), NetioStatus::OK);
  pair->sender->flush();
  ASSERT_TRUE(pair->collector.wait([&](Collector& c) { return c.received_unlocked(1) == 1; }));
  EXPECT_EQ(pair->collector.last_status(1), 200);
  EXPECT_EQ(pair->collector.total(), 1U);
  EXPECT_THROW((void)pair->sender->send(EndPointAddress{"127.0.0.1", 1}, 1, payload), UnknownSendEndpoint);
}

TEST_P(Sender, AFullPoolReturnsNoResourcesAndLosesNothing) {
  NetioSenderConfig config = sender_config(SendMethod::COPY);
  config.nbuffers = 2;
  config.buffersize = 4096;
  // A receiver whose loop is held: nothing completes, so the two buffers stay in use.
  Collector collector;
  LoopThread& receiver_loop = make_loop();
  std::mutex hold;
  std::unique_lock held{hold};
  NetioReceiverConfig receiver_cfg = receiver_config(collector);
  receiver_cfg.on_data_cb = [&](std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t status) {
    const std::lock_guard wait_here{hold};
    collector.on_data(tag, data, status);
  };
  NetioReceiver receiver{receiver_cfg, receiver_loop.loop()};
  ConnectionParametersRecv params;
  params.num_buf = 2;
  const EndPointAddress address = receiver.listen(any_port(), params);
  std::atomic<bool> established{false};
  config.on_connection_established_cb = [&](const EndPointAddress&) { established = true; };
  NetioSender sender{config, make_loop().loop()};
  sender.connect(address);
  ASSERT_TRUE(eventually([&] { return established.load(); }));
  std::uint64_t accepted = 0;
  const auto deadline = conformance::deadline_from_now();
  NetioStatus status = NetioStatus::OK;
  // The loop is stuck in the first data callback; the socket and the provider buffer a few MiB.
  const auto payload_size = 4096 - BufferFormatter::max_overhead;
  while ((status = sender.send(address, 3, make_payload(3, accepted, payload_size))) == NetioStatus::OK &&
         std::chrono::steady_clock::now() < deadline) {
    ++accepted;
  }
  EXPECT_EQ(status, NetioStatus::NO_RESOURCES) << "after " << accepted << " messages";
  held.unlock();
  ASSERT_TRUE(collector.wait([&](Collector& c) { return c.received_unlocked(3) == accepted; }))
      << collector.received(3) << " of " << accepted;
  EXPECT_TRUE(collector.errors().empty()) << collector.errors().front();
}

TEST_P(Sender, ClosingReturnsEveryPendingZeroCopyKeyOnce) {
  NetioSenderConfig config = sender_config(SendMethod::ZERO_COPY);
  conformance::AlignedMemory& region = make_region(1U << 20U);
  config.mr_start = region.data();
  config.mr_size = region.size();
  config.max_unsent_bytes = 64 << 10;
  auto pair = make_pair(config);
  std::size_t accepted = 0;
  for (std::size_t index = 0; index < 64; ++index) {
    auto slot = region.span().subspan(index * 16384, 16384);
    fill_payload(slot, 9, index);
    if (pair->sender->send(pair->address, 9, slot, 0, index) == NetioStatus::OK) {
      ++accepted;
    }
  }
  pair->sender->disconnect(pair->address);
  ASSERT_TRUE(eventually([&] { return pair->closed.load() == 1; }));
  const std::lock_guard lock{pair->mutex};
  std::multiset<std::uint64_t> all = pair->completed;
  all.insert(pair->returned.begin(), pair->returned.end());
  EXPECT_EQ(all.size(), accepted);
  EXPECT_EQ(std::set<std::uint64_t>(all.begin(), all.end()).size(), accepted) << "a key was reported twice";
}

TEST_P(Sender, AReceiverCanBeConnectedAgainAsSoonAsDisconnectReturns) {
  auto pair = make_pair(sender_config(SendMethod::BUFFERED));
  for (std::uint64_t round = 0; round < 3; ++round) {
    const auto payload = make_payload(20 + round, 0, 32);
    ASSERT_EQ(pair->sender->send(pair->address, 20 + round, payload), NetioStatus::OK);
    ASSERT_EQ(pair->sender->flush(pair->address), NetioStatus::OK);
    ASSERT_TRUE(pair->collector.wait([&](Collector& c) { return c.received_unlocked(20 + round) == 1; }));
    pair->sender->disconnect(pair->address);
    pair->sender->connect(pair->address); // the backend allows it once close returns; so does the sender
    ASSERT_TRUE(eventually([&] { return pair->established.load() == static_cast<int>(round) + 2; }))
        << "round " << round;
  }
  EXPECT_TRUE(eventually([&] { return pair->closed.load() == 3; }));
  EXPECT_TRUE(pair->collector.errors().empty()) << pair->collector.errors().front();
}

TEST_P(Sender, InvalidConfigurationsAreRefusedAtConstruction) {
  LoopThread& loop = make_loop();
  NetioSenderConfig config = sender_config(SendMethod::BUFFERED);
  config.nbuffers = 0;
  EXPECT_THROW(NetioSender(config, loop.loop()), UnsupportedConfiguration);
  config = sender_config(SendMethod::BUFFERED);
  config.buffersize = BufferFormatter::max_overhead;
  EXPECT_THROW(NetioSender(config, loop.loop()), UnsupportedConfiguration);
  config = sender_config(SendMethod::BUFFERED);
  config.flush_interval = std::chrono::microseconds{-1};
  EXPECT_THROW(NetioSender(config, loop.loop()), UnsupportedConfiguration);
  EXPECT_THROW(NetioSender(sender_config(SendMethod::COPY), nullptr), std::invalid_argument);
  Collector collector;
  NetioReceiverConfig receiver = receiver_config(collector);
  receiver.on_data_cb = nullptr;
  EXPECT_THROW(NetioReceiver(receiver, loop.loop()), std::invalid_argument);
}

NETIO3_INSTANTIATE_FRONTEND(Sender);

} // namespace
} // namespace netio3::frontend_test
