// The smallest netio3 sender: connects to the hello receiver example, sends ten copied messages,
// waits until each is reported sent, and closes (docs/guide.md, "Two processes").
//
//   netio3-example-hello-sender ADDRESS PORT

#include <netio3/EpollEventLoop.hpp>
#include <netio3/Netio3Backend.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

/// What the callbacks tell the sending thread.
struct Events {
  std::atomic<bool> connected{false};
  std::atomic<bool> refused{false};
  std::atomic<int> sent{0};
};

/// Waits until `done()` is true, checking every millisecond; throws after 10 s.
void wait_for(const std::function<bool()>& done, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error(std::string("timed out waiting for ") + what);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
}

// [guide:hello-send]
/// Connects, sends ten messages, waits until each is reported sent, closes. Throws on failure.
void send_ten(netio3::NetworkBackend& backend, const netio3::EndPointAddress& receiver, Events& events) {
  backend.open_send_endpoint(receiver, netio3::ConnectionParameters{}); // returns at once
  wait_for([&] { return events.connected || events.refused; }, "the connection");
  if (events.refused) {
    throw std::runtime_error("nobody listens on " + receiver.to_string());
  }
  for (std::uint64_t number = 0; number < 10; ++number) {
    const std::string text = "hello " + std::to_string(number);
    const std::span data{reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
    netio3::NetioStatus status = backend.send_data_copy(receiver, data, {}, number); // key: number
    while (status == netio3::NetioStatus::NO_RESOURCES) { // backpressure: nothing was sent, retry
      std::this_thread::yield();
      status = backend.send_data_copy(receiver, data, {}, number);
    }
    if (status != netio3::NetioStatus::OK) { // permanent for this message (or the connection)
      throw std::runtime_error("send_data_copy: " + std::string{netio3::to_string(status)});
    }
  }
  wait_for([&] { return events.sent == 10; }, "the sends to complete"); // one callback per key
  backend.close_send_endpoint(receiver);
}
// [guide:hello-send-end]

} // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: netio3-example-hello-sender ADDRESS PORT\n");
    return 2;
  }
  // [guide:hello-sender]
  auto loop = std::make_shared<netio3::EpollEventLoop>();
  Events events;
  netio3::NetworkConfig config; // thread_safety SAFE (the default): calls from any thread
  config.on_connection_established_cb = [&](const netio3::EndPointAddress&) { events.connected = true; };
  config.on_connection_refused_cb = [&](const netio3::EndPointAddress&) { events.refused = true; };
  config.on_send_completed_cb = [&](const netio3::EndPointAddress&, std::uint64_t /*key*/) { ++events.sent; };
  auto backend = netio3::NetworkBackend::create(netio3::NetworkType::ASYNCMSG, config, loop);
  std::thread loop_thread{[&] { loop->run(); }}; // the callbacks above run on this thread
  int status = 0;
  try {
    send_ten(*backend, {argv[1], static_cast<std::uint16_t>(std::atoi(argv[2]))}, events);
  } catch (const std::exception& error) { // e.g. an address that does not resolve
    std::fprintf(stderr, "hello sender: %s\n", error.what());
    status = 1;
  }
  while (!loop->is_running()) { // stop() acts on a running loop only (it is not remembered)
    std::this_thread::yield();
  }
  loop->stop();
  loop_thread.join();
  // [guide:hello-sender-end]
  return status;
}
