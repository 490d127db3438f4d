// The other process of libfabric_keepalive_test (started by the test, not by hand): one libfabric
// backend that listens or connects on the test address and then only keeps its connection, so that
// the test can stop it with SIGSTOP and watch the other side notice. One line per event on standard
// output:
//
//   keepalive_peer listen <provider> <peer_timeout_ms>         prints "PORT <port>", then
//                                                              "ESTABLISHED" and "CLOSED"
//   keepalive_peer connect <provider> <peer_timeout_ms> <port> prints "ESTABLISHED", "CLOSED",
//                                                              "REFUSED"
//
// It exits with the test (SIGKILL when its parent dies) and after 120 s at the latest.

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <sys/prctl.h>
#include <vector>

#include "netio3/EpollEventLoop.hpp"
#include "netio3/Netio3Backend.hpp"

namespace {

void say(const std::string& line) {
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
}

/// The address to use (NETIO3_TEST_ADDRESS, default 127.0.0.1), as the tests' Harness.hpp does.
std::string test_address() {
  const char* address = std::getenv("NETIO3_TEST_ADDRESS");
  return address != nullptr && address[0] != '\0' ? std::string{address} : std::string{"127.0.0.1"};
}

int usage() {
  std::fputs("usage: keepalive_peer listen <provider> <peer_timeout_ms>\n"
             "       keepalive_peer connect <provider> <peer_timeout_ms> <port>\n",
             stderr);
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL); // never outlive the test
  if (argc < 4) {
    return usage();
  }
  const std::string role = argv[1];
  if ((role != "listen" && role != "connect") || (role == "connect" && argc < 5)) {
    return usage();
  }
  try {
    using namespace netio3;
    auto loop = std::make_shared<EpollEventLoop>();
    NetworkConfig config;
    config.mode = NetworkMode::TCP;
    config.thread_safety = ThreadSafetyModel::UNSAFE; // everything happens on the loop thread
    config.provider = argv[2];
    config.peer_timeout = std::chrono::milliseconds{std::stoll(argv[3])};
    config.on_connection_established_cb = [](const EndPointAddress&) { say("ESTABLISHED"); };
    config.on_connection_closed_cb = [](const EndPointAddress&, const std::vector<std::uint64_t>&) { say("CLOSED"); };
    config.on_connection_refused_cb = [](const EndPointAddress&) { say("REFUSED"); };
    config.on_data_cb = [](std::span<const std::uint8_t>) {};
    auto backend = NetworkBackend::create(NetworkType::LIBFABRIC, config, loop);
    const std::string address = test_address();
    if (role == "listen") {
      ConnectionParametersRecv params;
      params.buf_size = 4096;
      params.num_buf = 8;
      const EndPointAddress listening = backend->open_listen_endpoint(EndPointAddress{address, 0}, params);
      say("PORT " + std::to_string(listening.port()));
    } else {
      const auto port = static_cast<std::uint16_t>(std::stoul(argv[4]));
      backend->open_send_endpoint(EndPointAddress{address, port}, ConnectionParameters{});
    }
    loop->run_for(std::chrono::seconds{120});
    backend.reset();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "keepalive_peer: %s\n", error.what());
    return 1;
  }
  return 0;
}
