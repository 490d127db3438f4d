// The smallest netio3 receiver: listens, prints every message it gets, and exits when the sender's
// connection closes. Start it, then the hello sender example with the port it prints
// (docs/guide.md, "Two processes").
//
//   netio3-example-hello-receiver [ADDRESS [PORT]]      default: 127.0.0.1, any free port

#include <netio3/EpollEventLoop.hpp>
#include <netio3/Netio3Backend.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) try {
  const std::string address = argc > 1 ? argv[1] : "127.0.0.1";
  const auto port = static_cast<std::uint16_t>(argc > 2 ? std::atoi(argv[2]) : 0);

  // [guide:hello-receiver]
  auto loop = std::make_shared<netio3::EpollEventLoop>();
  netio3::NetworkConfig config;
  config.on_data_cb = [](std::span<const std::uint8_t> message) { // valid during the call only
    std::printf("received: %.*s\n", static_cast<int>(message.size()), reinterpret_cast<const char*>(message.data()));
  };
  config.on_connection_closed_cb = [&](const netio3::EndPointAddress& /*sender*/,
                                       const std::vector<std::uint64_t>& /*pending_keys*/) { loop->stop(); };
  auto backend = netio3::NetworkBackend::create(netio3::NetworkType::ASYNCMSG, config, loop);
  const netio3::EndPointAddress listening =
      backend->open_listen_endpoint({address, port}, netio3::ConnectionParametersRecv{}); // 1 MiB messages
  std::printf("listening on %s\n", listening.to_string().c_str());
  std::fflush(stdout);
  loop->run(); // every callback runs here, on this thread, until loop->stop()
  // [guide:hello-receiver-end]
  return 0;
} catch (const std::exception& error) { // e.g. the port is taken
  std::fprintf(stderr, "hello receiver: %s\n", error.what());
  return 1;
}
