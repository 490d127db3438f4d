// A minimal netio3 publisher: waits for a subscriber of tag 42, publishes ten messages to it, and
// exits once that subscriber has left. Start it, then the subscriber example with the port it prints.
//
//   netio3-example-publisher [ADDRESS [PORT]]      default: 127.0.0.1, any free port

#include <netio3/Netio3.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

int main(int argc, char** argv) try {
  const std::uint64_t tag = 42;
  const std::string address = argc > 1 ? argv[1] : "127.0.0.1";
  const auto port = static_cast<std::uint16_t>(argc > 2 ? std::atoi(argv[2]) : 0);

  // [guide:publish]
  auto loop = std::make_shared<netio3::EpollEventLoop>();
  netio3::NetioPublisherConfig config; // asyncmsg (TCP), BUFFERED: a buffer leaves within 1 ms
  netio3::NetioPublisher publisher{config, loop, {address, port}};
  std::thread loop_thread{[&] { loop->run(); }}; // the publisher's work and callbacks run there
  std::printf("listening on %s\n", publisher.address().to_string().c_str());
  std::fflush(stdout);

  while (publisher.subscriber_count(tag) == 0) { // published to nobody, a message is dropped
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
  for (int number = 0; number < 10; ++number) {
    const std::string text = "message " + std::to_string(number);
    const std::span data{reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
    netio3::NetioPublisherStatus status = publisher.publish(tag, data);
    while (status == netio3::NetioPublisherStatus::NO_RESOURCES) { // backpressure: nothing was sent
      std::this_thread::yield();
      status = publisher.publish(tag, data);
    }
    if (status != netio3::NetioPublisherStatus::OK) {
      std::fprintf(stderr, "publish: %s\n", std::string{netio3::to_string(status)}.c_str());
    }
  }
  publisher.flush();
  // [guide:publish-end]
  while (publisher.subscriber_count() > 0) { // it leaves when it has what it wanted
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
  loop->stop();
  loop_thread.join();
  return 0;
} catch (const std::exception& error) { // e.g. the port is taken
  std::fprintf(stderr, "publisher: %s\n", error.what());
  return 1;
}
