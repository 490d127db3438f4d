// NetioPublisher -> NetioSubscriber over every backend, in one process (each side on its own loop
// thread): every method, many tags, many subscribers, subscriptions changing while data flow,
// zero-copy completion, backpressure, vanishing subscribers and publishers, garbage on the
// subscription port.

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <netinet/in.h>
#include <numeric>
#include <set>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include "frontend/FrontendFixture.hpp"

namespace netio3::frontend_test {
namespace {

class PubSub : public FrontendTest {
protected:
  /// A subscriber on its own loop with its collector.
  struct Sub {
    Collector collector;
    std::unique_ptr<NetioSubscriber> subscriber;
  };

  std::unique_ptr<NetioPublisher> make_publisher(const NetioPublisherConfig& config) {
    return std::make_unique<NetioPublisher>(config, make_loop().loop(), any_port());
  }

  std::unique_ptr<Sub> make_subscriber(LoopThread* loop = nullptr,
                                       const std::function<void(NetioSubscriberConfig&)>& adjust = {}) {
    auto sub = std::make_unique<Sub>();
    LoopThread& thread = loop != nullptr ? *loop : make_loop();
    sub->collector.set_loop_thread(thread.thread_id());
    NetioSubscriberConfig config = subscriber_config(sub->collector);
    if (adjust) {
      adjust(config);
    }
    sub->subscriber = std::make_unique<NetioSubscriber>(config, thread.loop(), conformance::test_environment().address);
    return sub;
  }

  /// Subscribes to every tag of `tags` and waits for the acknowledgements.
  static void subscribe_all(Sub& sub, const NetioPublisher& publisher, const std::vector<std::uint64_t>& tags,
                            ConnectionParametersRecv params = {}) {
    for (const std::uint64_t tag : tags) {
      ASSERT_EQ(sub.subscriber->subscribe(tag, publisher.address(), params), NetioStatus::OK);
    }
    ASSERT_TRUE(sub.collector.wait([&](Collector& c) {
      return std::all_of(tags.begin(), tags.end(), [&](std::uint64_t tag) { return c.subscribed_unlocked(tag); });
    })) << sub.collector.lost_tags().size()
        << " tags reported lost, refusals: " << sub.collector.refusals().size();
  }

  static void expect_clean(Sub& sub) {
    const auto errors = sub.collector.errors();
    EXPECT_TRUE(errors.empty()) << errors.size() << " errors, the first: " << errors.front();
  }

  static std::vector<std::uint64_t> tag_range(std::uint64_t first, std::uint64_t count) {
    std::vector<std::uint64_t> tags(count);
    std::iota(tags.begin(), tags.end(), first);
    return tags;
  }
};

TEST_P(PubSub, EveryMethodDeliversEveryMessageOfATagInOrder) {
  for (const SendMethod method : {SendMethod::BUFFERED, SendMethod::COPY, SendMethod::ZERO_COPY}) {
    SCOPED_TRACE(to_string(method));
    NetioPublisherConfig config = publisher_config(method);
    const std::size_t size = 200;
    conformance::AlignedMemory& region = make_region(1U << 20U);
    config.mr_start = region.data();
    config.mr_size = region.size();
    auto publisher = make_publisher(config);
    std::mutex completions_mutex;
    std::multiset<std::uint64_t> completed;
    publisher->set_on_publish_completed([&](std::uint64_t key) {
      const std::lock_guard lock{completions_mutex};
      completed.insert(key);
    });
    auto sub = make_subscriber();
    subscribe_all(*sub, *publisher, {42});
    const std::size_t messages = count(3000, 100);
    for (std::uint64_t seq = 0; seq < messages; ++seq) {
      // Zero-copy: slot `seq % 256`, reused only once its publish completed.
      auto payload = region.span().subspan((seq % 256) * size, size);
      const auto deadline = conformance::deadline_from_now();
      while (method == SendMethod::ZERO_COPY && seq >= 256) {
        {
          const std::lock_guard lock{completions_mutex};
          if (completed.size() > seq - 256) {
            break;
          }
        }
        ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "publishes do not complete";
        std::this_thread::sleep_for(std::chrono::microseconds{50});
      }
      fill_payload(payload, 42, seq);
      NetioPublisherStatus status = NetioPublisherStatus::NO_RESOURCES;
      while ((status = publisher->publish(42, payload, 5, seq)) == NetioPublisherStatus::NO_RESOURCES &&
             std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::microseconds{20});
      }
      ASSERT_EQ(status, NetioPublisherStatus::OK) << "message " << seq;
    }
    publisher->flush();
    ASSERT_TRUE(sub->collector.wait([&](Collector& c) { return c.received_unlocked(42) == messages; }))
        << sub->collector.received(42) << " of " << messages;
    EXPECT_EQ(sub->collector.last_status(42), 5);
    expect_clean(*sub);
    if (method == SendMethod::ZERO_COPY) {
      ASSERT_TRUE(eventually([&] {
        const std::lock_guard lock{completions_mutex};
        return completed.size() == messages;
      }));
      const std::lock_guard lock{completions_mutex};
      EXPECT_EQ(std::set<std::uint64_t>(completed.begin(), completed.end()).size(), messages)
          << "a publish completed twice";
    }
  }
}

TEST_P(PubSub, ManyTagsToManySubscribersReachExactlyTheirSubscribers) {
  auto publisher = make_publisher(publisher_config(SendMethod::BUFFERED));
  const std::size_t subscribers = std::min<std::size_t>(count(8, 3), 8);
  const std::uint64_t tags = count(400, 40);
  LoopThread& shared_loop = make_loop(); // several subscribers on one loop, as an application has them
  std::vector<std::unique_ptr<Sub>> subs;
  std::vector<std::vector<std::uint64_t>> their_tags(subscribers);
  for (std::size_t index = 0; index < subscribers; ++index) {
    subs.push_back(make_subscriber(index % 2 == 0 ? &shared_loop : nullptr));
    for (std::uint64_t tag = 0; tag < tags; ++tag) {
      if (tag % (index + 1) == 0) { // subscriber 0 has all, 1 every other one, ...
        their_tags[index].push_back(tag);
      }
    }
    subscribe_all(*subs.back(), *publisher, their_tags[index]);
  }
  EXPECT_EQ(publisher->subscriber_count(), subscribers);
  EXPECT_EQ(publisher->subscriber_count(0), subscribers);
  const std::uint64_t per_tag = count(40, 5);
  for (std::uint64_t seq = 0; seq < per_tag; ++seq) {
    for (std::uint64_t tag = 0; tag < tags; ++tag) {
      std::uint64_t published = 0;
      ASSERT_EQ(publish_sequence(*publisher, tag, seq, 1, 24, published), NetioPublisherStatus::OK);
    }
  }
  publisher->flush();
  for (std::size_t index = 0; index < subscribers; ++index) {
    const std::uint64_t expected = their_tags[index].size() * per_tag;
    ASSERT_TRUE(subs[index]->collector.wait([&](Collector& c) { return c.total_unlocked() == expected; }))
        << "subscriber " << index << ": " << subs[index]->collector.total() << " of " << expected;
    expect_clean(*subs[index]);
    for (const std::uint64_t tag : their_tags[index]) {
      EXPECT_EQ(subs[index]->collector.received(tag), per_tag) << "subscriber " << index << " tag " << tag;
    }
  }
  EXPECT_EQ(publisher->publish(tags + 1, make_payload(tags + 1, 0, 8)), NetioPublisherStatus::NO_SUBSCRIBERS);
}

TEST_P(PubSub, TenThousandTagsOnOneSubscriber) {
  auto publisher = make_publisher(publisher_config(SendMethod::BUFFERED));
  auto sub = make_subscriber();
  const std::vector<std::uint64_t> tags = tag_range(1ULL << 40U, count(10000, 1000));
  subscribe_all(*sub, *publisher, tags);
  EXPECT_EQ(publisher->subscriber_count(), 1U);
  for (const std::uint64_t tag : tags) {
    std::uint64_t published = 0;
    ASSERT_EQ(publish_sequence(*publisher, tag, 0, 2, 16, published), NetioPublisherStatus::OK);
  }
  publisher->flush();
  ASSERT_TRUE(sub->collector.wait([&](Collector& c) { return c.total_unlocked() == 2 * tags.size(); }))
      << sub->collector.total() << " of " << 2 * tags.size();
  expect_clean(*sub);
}

TEST_P(PubSub, SubscriptionsChangeWhileDataFlow) {
  NetioPublisherConfig config = publisher_config(SendMethod::BUFFERED);
  config.flush_interval = std::chrono::microseconds{100};
  auto publisher = make_publisher(config);
  constexpr std::uint64_t tags = 4;
  std::array<std::atomic<std::uint64_t>, tags> published{};
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> failures{0};
  std::thread publishing{[&] {
    std::vector<std::uint8_t> payload(32);
    std::array<std::uint64_t, tags> next{};
    while (!stop.load()) {
      for (std::uint64_t tag = 0; tag < tags; ++tag) {
        fill_payload(payload, tag, next[tag]);
        const NetioPublisherStatus status = publisher->publish(tag, payload);
        if (status == NetioPublisherStatus::OK || status == NetioPublisherStatus::NO_SUBSCRIBERS) {
          // Either way the sequence number is used: a subscriber sees a gap only before its
          // subscription was acknowledged.
          published[tag].store(++next[tag]);
        } else if (status != NetioPublisherStatus::NO_RESOURCES) {
          ++failures;
        }
      }
    }
  }};
  std::array<std::atomic<std::uint64_t>, tags> published_at_ack{};
  auto sub = make_subscriber(nullptr, [&](NetioSubscriberConfig& cfg) {
    cfg.on_subscribed_cb = [&, inner = cfg.on_subscribed_cb](std::uint64_t tag, const EndPointAddress& from) {
      if (tag < tags) {
        published_at_ack[tag].store(published[tag].load()); // everything from here on must arrive
      }
      inner(tag, from);
    };
  });
  const std::size_t rounds = count(6, 3);
  for (std::size_t round = 0; round < rounds; ++round) {
    for (std::uint64_t tag = 0; tag < tags; ++tag) {
      sub->collector.subscribing_again(tag);
      ASSERT_EQ(sub->subscriber->subscribe(tag, publisher->address(), {}), NetioStatus::OK);
    }
    ASSERT_TRUE(sub->collector.wait([&](Collector& c) {
      for (std::uint64_t tag = 0; tag < tags; ++tag) {
        if (!c.subscribed_unlocked(tag) || c.received_unlocked(tag) < 50 * (round + 1)) {
          return false;
        }
      }
      return true;
    })) << "round "
        << round;
    for (std::uint64_t tag = 0; tag < tags; ++tag) {
      // The first message seen was published no later than the acknowledgement.
      EXPECT_LE(sub->collector.range(tag).first, published_at_ack[tag].load() + 1) << "tag " << tag;
      ASSERT_EQ(sub->subscriber->unsubscribe(tag, publisher->address()), NetioStatus::OK);
    }
    ASSERT_TRUE(sub->collector.wait([&](Collector& c) {
      for (std::uint64_t tag = 0; tag < tags; ++tag) {
        if (c.unsubscribed_count_unlocked(tag) != round + 1) {
          return false;
        }
      }
      return true;
    })) << "round "
        << round;
    // A barrier: once a fresh subscriber of another tag has data published after this point,
    // anything of the unsubscribed tags still in flight would have arrived (one data connection).
    const std::uint64_t marker = 1000 + round;
    ASSERT_EQ(sub->subscriber->subscribe(marker, publisher->address(), {}), NetioStatus::OK);
    ASSERT_TRUE(sub->collector.wait([&](Collector& c) { return c.subscribed_unlocked(marker); }));
    std::uint64_t sent = 0;
    ASSERT_EQ(publish_sequence(*publisher, marker, 0, 1, 16, sent), NetioPublisherStatus::OK);
    publisher->flush();
    ASSERT_TRUE(sub->collector.wait([&](Collector& c) { return c.received_unlocked(marker) == 1; }));
  }
  stop = true;
  publishing.join();
  EXPECT_EQ(failures.load(), 0U);
  expect_clean(*sub); // includes "arrived after its unsubscribe acknowledgement" and gaps
}

TEST_P(PubSub, ZeroCopyPublishCompletesOnceAfterEverySubscriber) {
  NetioPublisherConfig config = publisher_config(SendMethod::ZERO_COPY);
  const std::size_t size = 4096;
  const std::size_t slots = 32;
  conformance::AlignedMemory& region = make_region(slots * size);
  config.mr_start = region.data();
  config.mr_size = region.size();
  // As many publisher slots as payload slots, so that both run out and every slot is reused.
  config.max_pending_publishes = slots;
  auto publisher = make_publisher(config);
  std::mutex mutex;
  std::vector<std::uint64_t> completed;
  publisher->set_on_publish_completed([&](std::uint64_t key) {
    const std::lock_guard lock{mutex};
    completed.push_back(key);
  });
  std::vector<std::unique_ptr<Sub>> subs;
  for (int index = 0; index < 3; ++index) {
    subs.push_back(make_subscriber());
    subscribe_all(*subs.back(), *publisher, {5});
  }
  const std::size_t messages = count(5000, 300);
  std::vector<bool> slot_free(slots, true);
  std::vector<std::uint64_t> slot_of_key(messages);
  std::size_t seen = 0;
  for (std::uint64_t seq = 0; seq < messages; ++seq) {
    const auto deadline = conformance::deadline_from_now();
    std::size_t slot = slots;
    while (slot == slots) {
      {
        const std::lock_guard lock{mutex};
        for (; seen < completed.size(); ++seen) {
          slot_free[slot_of_key[completed[seen]]] = true; // reusable: every subscriber has it
        }
      }
      slot = static_cast<std::size_t>(std::find(slot_free.begin(), slot_free.end(), true) - slot_free.begin());
      if (slot == slots) {
        ASSERT_LT(std::chrono::steady_clock::now(), deadline);
        std::this_thread::sleep_for(std::chrono::microseconds{20});
      }
    }
    slot_free[slot] = false;
    slot_of_key[seq] = slot;
    auto payload = region.span().subspan(slot * size, size);
    fill_payload(payload, 5, seq);
    NetioPublisherStatus status = NetioPublisherStatus::NO_RESOURCES;
    while ((status = publisher->publish(5, payload, 0, seq)) == NetioPublisherStatus::NO_RESOURCES &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds{20});
    }
    ASSERT_EQ(status, NetioPublisherStatus::OK);
  }
  for (auto& sub : subs) {
    // A completion before every subscriber's send had finished lets the slot be overwritten:
    // that subscriber then sees wrong bytes.
    ASSERT_TRUE(sub->collector.wait([&](Collector& c) { return c.received_unlocked(5) == messages; }));
    expect_clean(*sub);
  }
  ASSERT_TRUE(eventually([&] {
    const std::lock_guard lock{mutex};
    return completed.size() == messages;
  }));
  const std::lock_guard lock{mutex};
  EXPECT_EQ(std::set<std::uint64_t>(completed.begin(), completed.end()).size(), messages);
}

TEST_P(PubSub, SlowSubscriberMeansNoResourcesBoundedMemoryAndNoLoss) {
  NetioPublisherConfig config = publisher_config(SendMethod::BUFFERED);
  config.nbuffers = 4;
  config.max_unsent_bytes = 256 << 10;
  auto publisher = make_publisher(config);
  std::mutex hold;
  std::unique_lock held{hold};
  auto sub = make_subscriber(nullptr, [&](NetioSubscriberConfig& cfg) {
    cfg.on_data_cb = [&, inner = cfg.on_data_cb](std::uint64_t tag, std::span<const std::uint8_t> data,
                                                 std::uint8_t status) {
      { const std::lock_guard stuck{hold}; } // the subscriber's loop waits here until released
      inner(tag, data, status);
    };
  });
  subscribe_all(*sub, *publisher, {77});
  const std::size_t before = conformance::resident_bytes();
  std::vector<std::uint8_t> payload(1000);
  std::uint64_t accepted = 0;
  NetioPublisherStatus status = NetioPublisherStatus::OK;
  const auto deadline = conformance::deadline_from_now();
  for (std::uint64_t attempt = 0; attempt < (std::uint64_t{256} << 20U) / payload.size(); ++attempt) {
    fill_payload(payload, 77, accepted);
    status = publisher->publish(77, payload);
    if (status != NetioPublisherStatus::OK || std::chrono::steady_clock::now() > deadline) {
      break;
    }
    ++accepted;
  }
  EXPECT_EQ(status, NetioPublisherStatus::NO_RESOURCES) << "after " << accepted << " messages";
  EXPECT_LT(conformance::resident_bytes(), before + (48U << 20U)) << "the publisher's memory grew without bound";
  held.unlock();
  publisher->flush();
  ASSERT_TRUE(sub->collector.wait([&](Collector& c) { return c.received_unlocked(77) == accepted; }))
      << sub->collector.received(77) << " of " << accepted;
  expect_clean(*sub);
}

TEST_P(PubSub, AVanishedSubscriberIsDroppedFromEveryTagAndPublishingGoesOn) {
  auto publisher = make_publisher(publisher_config(SendMethod::BUFFERED));
  auto staying = make_subscriber();
  auto leaving = make_subscriber();
  subscribe_all(*staying, *publisher, {1, 2, 3});
  subscribe_all(*leaving, *publisher, {1, 2, 3, 4});
  EXPECT_EQ(publisher->subscriber_count(1), 2U);
  leaving.reset(); // its connections close (the destructor unsubscribes first, best effort)
  EXPECT_TRUE(eventually([&] { return publisher->subscriber_count() == 1 && publisher->subscriber_count(4) == 0; }));
  EXPECT_EQ(publisher->subscriber_count(), 1U);
  EXPECT_EQ(publisher->subscriber_count(1), 1U);
  EXPECT_EQ(publisher->publish(4, make_payload(4, 0, 8)), NetioPublisherStatus::NO_SUBSCRIBERS);
  for (std::uint64_t tag = 1; tag <= 3; ++tag) {
    std::uint64_t published = 0;
    ASSERT_EQ(publish_sequence(*publisher, tag, 0, 100, 64, published), NetioPublisherStatus::OK);
  }
  publisher->flush();
  ASSERT_TRUE(staying->collector.wait([&](Collector& c) { return c.total_unlocked() == 300; }));
  expect_clean(*staying);
}

TEST_P(PubSub, ALostPublisherIsReportedWithItsTags) {
  auto publisher = make_publisher(publisher_config(SendMethod::BUFFERED));
  auto sub = make_subscriber();
  subscribe_all(*sub, *publisher, {10, 11, 12});
  const EndPointAddress address = publisher->address();
  publisher.reset();
  ASSERT_TRUE(sub->collector.wait([](Collector& c) { return c.lost_count_unlocked() == 1; }));
  std::vector<std::uint64_t> lost = sub->collector.lost_tags();
  std::sort(lost.begin(), lost.end());
  EXPECT_EQ(lost, (std::vector<std::uint64_t>{10, 11, 12}));
  // Subscribing again to a publisher that is gone reports it lost again (the connect is refused).
  ASSERT_EQ(sub->subscriber->subscribe(10, address, {}), NetioStatus::OK);
  ASSERT_TRUE(sub->collector.wait([](Collector& c) { return c.lost_count_unlocked() == 2; }));
  expect_clean(*sub);
}

TEST_P(PubSub, RefusalsSayWhy) {
  NetioPublisherConfig config = publisher_config(SendMethod::BUFFERED);
  config.buffersize = 64 << 10;
  config.max_tags_per_subscriber = 2;
  auto publisher = make_publisher(config);
  // Receive buffers smaller than the publisher's buffers: refused with the reason.
  auto small = make_subscriber();
  ConnectionParametersRecv params;
  params.buf_size = 4096;
  ASSERT_EQ(small->subscriber->subscribe(1, publisher->address(), params), NetioStatus::OK);
  ASSERT_TRUE(small->collector.wait([](Collector& c) { return c.lost_count_unlocked() == 1; }));
  ASSERT_EQ(small->collector.refusals().size(), 1U);
  EXPECT_NE(small->collector.refusals()[0].find("buf_size >= buffersize"), std::string::npos)
      << small->collector.refusals()[0];
  // More tags than allowed: the third is refused, the first two stay.
  auto greedy = make_subscriber();
  subscribe_all(*greedy, *publisher, {1, 2});
  ASSERT_EQ(greedy->subscriber->subscribe(3, publisher->address(), {}), NetioStatus::OK);
  ASSERT_TRUE(greedy->collector.wait([](Collector& c) { return c.refusal_count_unlocked() == 1; }));
  EXPECT_NE(greedy->collector.refusals().at(0).find("at most 2 tags"), std::string::npos);
  EXPECT_EQ(publisher->subscriber_count(1), 1U);
  expect_clean(*greedy);
}

TEST_P(PubSub, OversizedPublishesAreRefusedAndPublishingGoesOn) {
  NetioPublisherConfig config = publisher_config(SendMethod::BUFFERED);
  config.buffersize = 2048;
  auto publisher = make_publisher(config);
  auto sub = make_subscriber();
  subscribe_all(*sub, *publisher, {9});
  const std::vector<std::uint8_t> too_large(2048 - BufferFormatter::max_overhead + 1);
  EXPECT_EQ(publisher->publish(9, too_large), NetioPublisherStatus::MESSAGE_TOO_LARGE);
  EXPECT_EQ(publisher->publish(9, std::span<const std::uint8_t>{static_cast<const std::uint8_t*>(nullptr), 3}),
            NetioPublisherStatus::INVALID_ARGUMENT);
  std::uint64_t published = 0;
  ASSERT_EQ(publish_sequence(*publisher, 9, 0, 10, 2048 - BufferFormatter::max_overhead, published),
            NetioPublisherStatus::OK);
  publisher->flush();
  ASSERT_TRUE(sub->collector.wait([](Collector& c) { return c.received_unlocked(9) == 10; }));
  expect_clean(*sub);
}

/// A plain TCP client of the subscription port.
class RawClient {
public:
  explicit RawClient(const EndPointAddress& to) {
    m_fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(to.port());
    ::inet_pton(AF_INET, to.address().c_str(), &address.sin_addr);
    if (::connect(m_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      ADD_FAILURE() << "connect to " << to << " failed";
    }
    timeval timeout{30, 0};
    ::setsockopt(m_fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  }
  ~RawClient() { ::close(m_fd); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  RawClient(RawClient&&) = delete;
  RawClient& operator=(RawClient&&) = delete;
  void send(const std::string& bytes) const { (void)::send(m_fd, bytes.data(), bytes.size(), MSG_NOSIGNAL); }
  /// Everything until the publisher closes the connection (or the timeout).
  [[nodiscard]] std::string read_to_end() const {
    std::string text;
    char chunk[4096];
    for (;;) {
      const ssize_t got = ::recv(m_fd, chunk, sizeof(chunk), 0);
      if (got <= 0) {
        return got == 0 ? text : text + "<no EOF>";
      }
      text.append(chunk, static_cast<std::size_t>(got));
    }
  }

private:
  int m_fd{-1};
};

TEST_P(PubSub, GarbageOnTheSubscriptionPortClosesOnlyThatConnection) {
  if (conformance::test_environment().address.find(':') != std::string::npos) {
    GTEST_SKIP() << "the raw client speaks IPv4";
  }
  auto publisher = make_publisher(publisher_config(SendMethod::BUFFERED));
  auto sub = make_subscriber();
  subscribe_all(*sub, *publisher, {3});
  std::vector<std::pair<std::string, std::string>> cases{
      {"\x16\x03\x01 hello?\n", "not JSON"},
      {R"({"op":"subscribe","tag":1})"
       "\n",
       "before the hello"},
      {R"({"op":"hello","version":1,"data_host":"127.0.0.1","data_port":1,"receive_limit":1})"
       "\n",
       "but this publisher sends buffers of"},
      {std::string(8192, 'x'), ""}, // no newline: closed once over the line limit
      {R"({"op":"hello","version":9})"
       "\n",
       "version 9"},
  };
  // Requests keep coming after the one that is refused: the publisher must still deliver its
  // error line and end with a clean close, not a reset that would discard the line.
  std::string flood;
  for (int line = 0; line < 3000; ++line) {
    flood += "{\"op\":\"subscribe\",\"tag\":1}\n";
  }
  cases.emplace_back(flood, "before the hello");
  for (const auto& [garbage, reason] : cases) {
    RawClient client{publisher->address()};
    client.send(garbage);
    const std::string reply = client.read_to_end();
    EXPECT_EQ(reply.find("<no EOF>"), std::string::npos) << "the publisher kept a connection that sent garbage";
    EXPECT_NE(reply.find(reason), std::string::npos) << "reply: " << reply << "\nexpected: " << reason;
  }
  std::uint64_t published = 0;
  ASSERT_EQ(publish_sequence(*publisher, 3, 0, 50, 32, published), NetioPublisherStatus::OK);
  publisher->flush();
  ASSERT_TRUE(sub->collector.wait([](Collector& c) { return c.received_unlocked(3) == 50; }));
  expect_clean(*sub);
}

TEST_P(PubSub, SafeModePublishersOnSeveralThreads) {
  auto publisher = make_publisher(publisher_config(SendMethod::BUFFERED));
  auto sub = make_subscriber();
  subscribe_all(*sub, *publisher, {0, 1, 2, 3});
  const std::uint64_t per_thread = count(20000, 1000);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (std::uint64_t tag = 0; tag < 4; ++tag) {
    threads.emplace_back([&, tag] {
      std::uint64_t published = 0;
      if (publish_sequence(*publisher, tag, 0, per_thread, 20 + tag * 10, published) != NetioPublisherStatus::OK) {
        ++failures;
      }
      if (tag == 0) {
        publisher->flush();
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  publisher->flush();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE(sub->collector.wait([&](Collector& c) { return c.total_unlocked() == 4 * per_thread; }))
      << sub->collector.total() << " of " << 4 * per_thread;
  expect_clean(*sub);
}

TEST_P(PubSub, UnsubscribingFromAnUnknownPublisherIsAcknowledged) {
  auto sub = make_subscriber();
  ASSERT_EQ(sub->subscriber->unsubscribe(5, EndPointAddress{"127.0.0.1", 9}), NetioStatus::OK);
  ASSERT_TRUE(sub->collector.wait([](Collector& c) { return c.unsubscribed_count_unlocked(5) == 1; }));
  EXPECT_THROW((void)NetioSubscriber(subscriber_config(sub->collector), make_loop().loop(), "not..valid"),
               InvalidEndpointAddress);
}

NETIO3_INSTANTIATE_FRONTEND(PubSub);

} // namespace
} // namespace netio3::frontend_test
