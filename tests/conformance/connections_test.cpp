// Conformance with many connections: hundreds into one listener, and one backend with many send
// endpoints.

#include <map>
#include <set>
#include <string>
#include <vector>

#include "conformance/ConformanceFixture.hpp"

namespace netio3::conformance {
namespace {

class Connections : public ConformanceTest {};

// Hundreds of connections into one listener, each from a backend of its own (all on one event
// loop): a backend may hold one send endpoint per destination, and connections into one listener
// address always differ in their source port.
TEST_P(Connections, HundredsOfConnectionsIntoOneListener) {
  // libfabric's legacy sockets provider starts progress threads for every backend (three each):
  // hundreds of backends on two cores take minutes, so it gets fewer.
  const std::size_t connections = under_test().provider == "sockets" ? scaled(40, 8) : count(200, 8);
  const std::uint64_t per_connection = count(20, 2);
  constexpr std::size_t max_payload = 1024;

  Node& receiver = make_node();
  const EndPointAddress listening = receiver.listen(receive_params(max_payload, 4));
  auto shared_loop = std::make_shared<LoopThread>();
  std::vector<Node*> senders;
  for (std::size_t i = 0; i < connections; ++i) {
    senders.push_back(&make_node({}, shared_loop));
  }
  // Half the connections send buffered (a pool per endpoint), half copying.
  for (std::size_t i = 0; i < connections; ++i) {
    senders[i]->open_send(listening, send_params(max_payload, i % 2 == 0 ? 0 : 2, nullptr));
  }
  for (std::size_t i = 0; i < connections; ++i) {
    ASSERT_TRUE(senders[i]->wait_established(listening)) << "connection " << i;
  }
  std::vector<StreamSender> streams;
  streams.reserve(connections);
  for (std::size_t i = 0; i < connections; ++i) {
    streams.emplace_back(*senders[i], listening, static_cast<std::uint32_t>(1000 + i), std::span<std::uint8_t>{},
                         max_payload);
  }
  for (std::uint64_t seq = 0; seq < per_connection; ++seq) {
    for (std::size_t i = 0; i < connections; ++i) {
      const SendMode mode = i % 2 == 0 ? SendMode::CopySpan : SendMode::Buffered;
      ASSERT_EQ(streams[i].send(mode, (seq * 13U + i) % max_payload), NetioStatus::OK)
          << "connection " << i << " message " << seq;
    }
  }
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) {
    return s.established.size() >= connections &&
           std::all_of(streams.begin(), streams.end(), [&](const StreamSender& stream) {
             return s.stream_progress(stream.stream()) >= per_connection;
           });
  })) << "received "
      << receiver.recorder().inspect([](const RecorderState& s) { return s.messages; }) << " of "
      << connections * per_connection << " messages on "
      << receiver.recorder().inspect([](const RecorderState& s) { return s.established.size(); }) << " of "
      << connections << " connections; data errors:\n"
      << receiver.recorder().data_errors_text();
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
  receiver.recorder().inspect([&](const RecorderState& s) {
    const std::set<EndPointAddress> distinct(s.established.begin(), s.established.end());
    EXPECT_EQ(distinct.size(), connections) << "accepted connections must have distinct remote addresses";
    EXPECT_EQ(s.requests.size(), connections) << "on_connection_request_cb must be asked once per connection";
    return 0;
  });

  for (std::size_t i = 0; i < connections; ++i) {
    senders[i]->backend().close_send_endpoint(listening);
  }
  for (std::size_t i = 0; i < connections; ++i) {
    ASSERT_TRUE(senders[i]->wait_closed(listening)) << "connection " << i;
  }
  EXPECT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.closed.size() >= connections; }))
      << "the receiver reported " << receiver.recorder().inspect([](const RecorderState& s) { return s.closed.size(); })
      << " of " << connections << " closes";
}

// A listener on 0.0.0.0 and one sender with an endpoint to each of hundreds of 127.0.x.y aliases:
// every connection must reach the receiver under a remote address of its own, since callbacks name
// connections by it. A plain connect lets the kernel give connections to different destinations
// the same source port (4-tuples differ by the destination), so without a source port of its own
// per connection, two of 400 collide in nearly every run (about 6 pairs expected for 400 with the
// default 28,232 ephemeral ports; measured: 145 pairs among 2,000 plain connects here).
TEST_P(Connections, SendersThroughDifferentLocalAddressesAreToldApart) {
  if (!test_environment().loopback) {
    GTEST_SKIP() << "the test address " << test_environment().address
                 << " is not loopback (127.0.x.y aliases cannot reach its listener)";
  }
  // The legacy sockets provider connects slowly (tens per second under load): fewer there.
  const std::size_t connections = under_test().provider == "sockets" ? scaled(100, 8) : scaled(400, 40);
  Node& receiver = make_node();
  const EndPointAddress listening =
      receiver.backend().open_listen_endpoint(EndPointAddress{"0.0.0.0", 0}, receive_params(256, 2));
  Node& sender = make_node();
  std::vector<EndPointAddress> destinations;
  for (std::size_t i = 0; i < connections; ++i) {
    destinations.emplace_back("127.0." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1), listening.port());
    sender.open_send(destinations.back(), send_params(256, 0, nullptr));
  }
  for (std::size_t i = 0; i < connections; ++i) {
    ASSERT_TRUE(sender.wait_established(destinations[i])) << "endpoint " << i << " to " << destinations[i];
  }
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.established.size() >= connections; }))
      << "the receiver reported "
      << receiver.recorder().inspect([](const RecorderState& s) { return s.established.size(); }) << " of "
      << connections << " connections";
  receiver.recorder().inspect([&](const RecorderState& s) {
    std::map<EndPointAddress, std::size_t> seen;
    for (const auto& remote : s.established) {
      ++seen[remote];
    }
    std::string repeated;
    for (const auto& [remote, times] : seen) {
      if (times > 1) {
        repeated += " " + remote.to_string() + " (" + std::to_string(times) + " times)";
      }
    }
    EXPECT_EQ(seen.size(), connections) << "connections through different local addresses reported under the "
                                           "same remote address:"
                                        << repeated;
    EXPECT_EQ(s.violation_count, 0U) << join_lines(s.violations);
    return 0;
  });
  for (const auto& destination : destinations) {
    sender.backend().close_send_endpoint(destination);
  }
  for (const auto& destination : destinations) {
    ASSERT_TRUE(sender.wait_closed(destination)) << destination;
  }
  EXPECT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.closed.size() >= connections; }));
}

// One backend with many send endpoints at once (one per receiving backend, all receivers on one
// loop), every mode on each.
TEST_P(Connections, OneBackendWithManySendEndpoints) {
  const std::size_t endpoints = count(50, 4);
  const std::uint64_t per_endpoint = count(50, 5);
  constexpr std::size_t max_payload = 2048;
  auto shared_loop = std::make_shared<LoopThread>();
  std::vector<Node*> receivers;
  std::vector<EndPointAddress> destinations;
  for (std::size_t i = 0; i < endpoints; ++i) {
    receivers.push_back(&make_node({}, shared_loop));
    destinations.push_back(receivers.back()->listen(receive_params(max_payload, 4)));
  }
  Node& sender = make_node();
  AlignedMemory& region = make_region(endpoints * 8 * max_payload);
  std::vector<StreamSender> streams;
  streams.reserve(endpoints);
  for (std::size_t i = 0; i < endpoints; ++i) {
    sender.open_send(destinations[i], send_params(max_payload, 2, &region));
    streams.emplace_back(sender, destinations[i], static_cast<std::uint32_t>(3000 + i),
                         region.span().subspan(i * 8 * max_payload, 8 * max_payload), max_payload);
  }
  for (std::size_t i = 0; i < endpoints; ++i) {
    ASSERT_TRUE(sender.wait_established(destinations[i])) << "endpoint " << i << " to " << destinations[i];
  }
  for (std::uint64_t seq = 0; seq < per_endpoint; ++seq) {
    for (std::size_t i = 0; i < endpoints; ++i) {
      const SendMode mode = all_send_modes[(seq + i) % all_send_modes.size()];
      ASSERT_EQ(streams[i].send(mode, (seq * 97U + i) % max_payload), NetioStatus::OK)
          << to_string(mode) << " endpoint " << i << " message " << seq;
    }
  }
  for (std::size_t i = 0; i < endpoints; ++i) {
    const std::uint32_t stream = streams[i].stream();
    ASSERT_TRUE(receivers[i]->recorder().wait([&](const RecorderState& s) {
      return s.stream_progress(stream) >= per_endpoint;
    })) << "endpoint "
        << i << ": " << receivers[i]->recorder().data_errors_text();
    EXPECT_EQ(receivers[i]->recorder().data_error_count(), 0U) << receivers[i]->recorder().data_errors_text();
  }
  std::vector<std::uint64_t> zero_copy;
  std::vector<std::uint64_t> copy;
  for (const auto& stream : streams) {
    zero_copy.insert(zero_copy.end(), stream.zero_copy_keys().begin(), stream.zero_copy_keys().end());
    copy.insert(copy.end(), stream.copy_keys().begin(), stream.copy_keys().end());
  }
  ASSERT_TRUE(sender.recorder().wait(
      [&](const RecorderState& s) { return keys_reported(s) >= zero_copy.size() + copy.size(); }));
  const auto problems =
      sender.recorder().inspect([&](const RecorderState& s) { return key_problems(s, zero_copy, copy, false); });
  EXPECT_TRUE(problems.empty()) << join_lines(problems);
}

// Connections that come and go while others on the same backends keep sending. Backends share
// completion machinery among their connections (libfabric: a completion queue per domain and role),
// so a connection's end must not disturb the others: entries it leaves behind in a shared queue
// are dropped, and the streams of the steady connections arrive whole and in order. Both ends
// churn: the receiver accepts and loses connections while steady ones deliver, and one sender
// closes and reopens an endpoint while its other endpoint streams.
TEST_P(Connections, ConnectionsComeAndGoWhileOthersSend) {
  const std::size_t rounds = count(40, 6);
  constexpr std::size_t steady_senders = 3;
  constexpr std::uint64_t steady_per_round = 3;
  constexpr std::size_t max_payload = 1024;
  auto shared_loop = std::make_shared<LoopThread>();
  Node& receiver = make_node();
  const EndPointAddress listening = receiver.listen(receive_params(max_payload, 4));
  Node& other_receiver = make_node({}, shared_loop);
  const EndPointAddress other_listening = other_receiver.listen(receive_params(max_payload, 4));

  std::vector<Node*> steady;
  std::vector<StreamSender> streams;
  streams.reserve(steady_senders + 1);
  for (std::size_t i = 0; i < steady_senders; ++i) {
    steady.push_back(&make_node({}, shared_loop));
    ASSERT_TRUE(steady.back()->connect(listening, send_params(max_payload, 2, nullptr))) << "steady sender " << i;
    streams.emplace_back(*steady.back(), listening, static_cast<std::uint32_t>(5000 + i), std::span<std::uint8_t>{},
                         max_payload);
  }
  // The churning sender streams to the other listener all along, over a second endpoint.
  Node& churner = make_node({}, shared_loop);
  AlignedMemory& region = make_region(8 * max_payload);
  ASSERT_TRUE(churner.connect(other_listening, send_params(max_payload, 2, &region)));
  streams.emplace_back(churner, other_listening, 5999U, region.span(), max_payload);
  const ConnectionParameters churn_params = send_params(max_payload, 2, nullptr);

  for (std::size_t round = 0; round < rounds; ++round) {
    ASSERT_TRUE(churner.connect(listening, churn_params)) << "round " << round;
    StreamSender churned{churner, listening, static_cast<std::uint32_t>(6000 + round), std::span<std::uint8_t>{},
                         max_payload};
    for (std::uint64_t seq = 0; seq < steady_per_round; ++seq) {
      for (std::size_t i = 0; i < streams.size(); ++i) {
        const SendMode mode = i == steady_senders ? all_send_modes[(round + seq) % all_send_modes.size()]
                                                  : (i % 2 == 0 ? SendMode::CopySpan : SendMode::Buffered);
        ASSERT_EQ(streams[i].send(mode, (round * 31U + seq * 7U + i) % max_payload), NetioStatus::OK)
            << "stream " << i << " round " << round;
      }
      ASSERT_EQ(churned.send(SendMode::CopySpan, (round + seq) % max_payload), NetioStatus::OK) << "round " << round;
    }
    // Closed with its last messages possibly still in flight or in the queues.
    churner.backend().close_send_endpoint(listening);
    ASSERT_TRUE(churner.wait_closed(listening, round + 1)) << "round " << round;
  }

  for (std::size_t i = 0; i < steady_senders; ++i) {
    const std::uint32_t stream = streams[i].stream();
    ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) {
      return s.stream_progress(stream) >= rounds * steady_per_round;
    })) << "steady stream "
        << i << ": " << receiver.recorder().data_errors_text();
  }
  const std::uint32_t churner_stream = streams[steady_senders].stream();
  ASSERT_TRUE(other_receiver.recorder().wait([&](const RecorderState& s) {
    return s.stream_progress(churner_stream) >= rounds * steady_per_round;
  })) << other_receiver.recorder().data_errors_text();
  // Every churned connection was accepted and reported closed at the receiver.
  EXPECT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.closed.size() >= rounds; }))
      << "the receiver reported " << receiver.recorder().inspect([](const RecorderState& s) { return s.closed.size(); })
      << " of " << rounds << " closes";
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
  EXPECT_EQ(other_receiver.recorder().data_error_count(), 0U) << other_receiver.recorder().data_errors_text();
  // The steady endpoints are unharmed: they still send.
  for (std::size_t i = 0; i < steady_senders; ++i) {
    EXPECT_EQ(streams[i].send(SendMode::CopySpan, 10), NetioStatus::OK) << "steady stream " << i << " after the churn";
  }
}

} // namespace

NETIO3_INSTANTIATE_CONFORMANCE(Connections);

} // namespace netio3::conformance
