// A minimal netio3 subscriber: subscribes to tag 42 of a publisher, prints ten messages and exits
// (status 1 if the publisher is lost first).
//
//   netio3-example-subscriber PUBLISHER_HOST PUBLISHER_PORT [LOCAL_IP]   LOCAL_IP: default 0.0.0.0

#include <netio3/Netio3.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s PUBLISHER_HOST PUBLISHER_PORT [LOCAL_IP]\n", argv[0]);
    return 2;
  }
  const std::uint64_t tag = 42;
  const netio3::EndPointAddress publisher{argv[1], static_cast<std::uint16_t>(std::atoi(argv[2]))};
  auto loop = std::make_shared<netio3::EpollEventLoop>();
  int received = 0;
  int exit_status = 0;

  // [guide:subscribe]
  netio3::NetioSubscriberConfig config; // asyncmsg (TCP), as the publisher's; callbacks on the loop
  config.on_subscribed_cb = [](std::uint64_t subscribed, const netio3::EndPointAddress& from) {
    // The acknowledgement has a connection of its own: the first messages may come before it.
    std::fprintf(stderr, "subscribed to tag %llu at %s\n", static_cast<unsigned long long>(subscribed),
                 from.to_string().c_str());
  };
  config.on_data_cb = [&](std::uint64_t message_tag, std::span<const std::uint8_t> data, std::uint8_t /*status*/) {
    std::printf("tag %llu: %.*s\n", static_cast<unsigned long long>(message_tag), static_cast<int>(data.size()),
                reinterpret_cast<const char*>(data.data())); // data: valid during the call only
    if (++received == 10) {
      loop->stop();
    }
  };
  config.on_publisher_lost_cb = [&](const netio3::EndPointAddress& from, const std::vector<std::uint64_t>&) {
    std::fprintf(stderr, "lost the publisher at %s\n", from.to_string().c_str());
    exit_status = 1;
    loop->stop();
  };
  netio3::NetioSubscriber subscriber{config, loop, argc > 3 ? argv[3] : "0.0.0.0"};
  subscriber.subscribe(tag, publisher, netio3::ConnectionParametersRecv{});
  loop->run(); // until stop(): every callback above runs here, on this thread
  // [guide:subscribe-end]
  return exit_status;                   // the subscriber's destructor unsubscribes
} catch (const std::exception& error) { // e.g. a malformed address
  std::fprintf(stderr, "subscriber: %s\n", error.what());
  return 1;
}
