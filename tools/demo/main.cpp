// netio3-demo: the README's first command (scripts/demo) in two processes on one machine. Built
// against the library only (no CLI or JSON library), so that a fresh clone shows it quickly; the
// measuring tool with every option is netio3-bench.
//
//   netio3-demo receive [ADDRESS]        listens (any free port), prints "listening on ADDRESS:PORT",
//                                        then, when the sender has gone, one line per message size
//   netio3-demo send ADDRESS PORT [SECONDS]   connects and sends copied messages of 64 B, 4 KiB,
//                                        64 KiB and 1 MiB, SECONDS (default 1) each, over the TCP backend
//
// The receiver measures: for each size, the messages and bytes that arrived between the first and
// the last message of that size.

#include <netio3/EpollEventLoop.hpp>
#include <netio3/Netio3Backend.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::array<std::size_t, 4> message_sizes{64, 4096, 65536, 1048576};

/// What arrived of one message size.
struct Arrivals {
  std::uint64_t messages{0};
  Clock::time_point first{};
  Clock::time_point last{};
};

std::string size_text(std::size_t bytes) {
  if (bytes >= 1048576 && bytes % 1048576 == 0) {
    return std::to_string(bytes / 1048576) + " MiB";
  }
  if (bytes >= 1024 && bytes % 1024 == 0) {
    return std::to_string(bytes / 1024) + " KiB";
  }
  return std::to_string(bytes) + " B";
}

int receive(const std::string& address) {
  auto loop = std::make_shared<netio3::EpollEventLoop>();
  std::map<std::size_t, Arrivals> arrivals; // touched on the loop thread only
  netio3::NetworkConfig config;
  config.on_data_cb = [&](std::span<const std::uint8_t> message) {
    const auto now = Clock::now();
    Arrivals& of_size = arrivals[message.size()];
    if (of_size.messages == 0) {
      of_size.first = now;
    }
    of_size.last = now;
    ++of_size.messages;
  };
  config.on_connection_closed_cb = [&](const netio3::EndPointAddress&, const std::vector<std::uint64_t>&) {
    loop->stop();
  };
  auto backend = netio3::NetworkBackend::create(netio3::NetworkType::ASYNCMSG, config, loop);
  netio3::ConnectionParametersRecv parameters;
  parameters.buf_size = message_sizes.back() + 4096; // the largest message and its header
  const netio3::EndPointAddress listening = backend->open_listen_endpoint({address, 0}, parameters);
  std::printf("listening on %s\n", listening.to_string().c_str());
  std::fflush(stdout);
  loop->run();

  std::printf("%10s %12s %14s %14s\n", "size", "messages", "messages/s", "throughput");
  for (const auto& [size, of_size] : arrivals) {
    const double seconds = std::chrono::duration<double>(of_size.last - of_size.first).count();
    const double rate = seconds > 0 ? static_cast<double>(of_size.messages - 1) / seconds : 0.0;
    const double gbit = rate * static_cast<double>(size) * 8.0 / 1e9;
    std::printf("%10s %12llu %14.0f %9.2f Gb/s\n", size_text(size).c_str(),
                static_cast<unsigned long long>(of_size.messages), rate, gbit);
  }
  return 0;
}

/// What the callbacks tell the sending thread.
struct Events {
  std::atomic<bool> connected{false};
  std::atomic<bool> refused{false};
  std::atomic<std::uint64_t> completed{0};
};

void wait_until(const std::atomic<bool>& flag_a, const std::atomic<bool>& flag_b) {
  const auto deadline = Clock::now() + std::chrono::seconds{10};
  while (!flag_a && !flag_b) {
    if (Clock::now() > deadline) {
      throw std::runtime_error("timed out waiting for the connection");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
}

void send_all(netio3::NetworkBackend& backend, const netio3::EndPointAddress& receiver, Events& events,
              double seconds_each) {
  backend.open_send_endpoint(receiver, netio3::ConnectionParameters{});
  wait_until(events.connected, events.refused);
  if (events.refused) {
    throw std::runtime_error("nobody listens on " + receiver.to_string());
  }
  const std::vector<std::uint8_t> payload(message_sizes.back(), 0x5a);
  std::uint64_t key = 0;
  for (const std::size_t size : message_sizes) {
    const std::span data{payload.data(), size};
    const auto end =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds_each));
    while (Clock::now() < end) {
      const netio3::NetioStatus status = backend.send_data_copy(receiver, data, {}, key);
      if (status == netio3::NetioStatus::NO_RESOURCES) { // backpressure: nothing was sent, retry
        std::this_thread::yield();
        continue;
      }
      if (status != netio3::NetioStatus::OK) {
        throw std::runtime_error("send_data_copy: " + std::string{netio3::to_string(status)});
      }
      ++key;
    }
    // Every message of this size is reported sent before the next size starts.
    const auto deadline = Clock::now() + std::chrono::seconds{30};
    while (events.completed < key) {
      if (Clock::now() > deadline) {
        throw std::runtime_error("timed out waiting for the sends to complete");
      }
      std::this_thread::sleep_for(std::chrono::microseconds{100});
    }
  }
  backend.close_send_endpoint(receiver);
}

int send(const std::string& address, std::uint16_t port, double seconds_each) {
  auto loop = std::make_shared<netio3::EpollEventLoop>();
  Events events;
  netio3::NetworkConfig config; // thread_safety SAFE (the default): sends from this thread
  config.on_connection_established_cb = [&](const netio3::EndPointAddress&) { events.connected = true; };
  config.on_connection_refused_cb = [&](const netio3::EndPointAddress&) { events.refused = true; };
  config.on_send_completed_cb = [&](const netio3::EndPointAddress&, std::uint64_t) { ++events.completed; };
  auto backend = netio3::NetworkBackend::create(netio3::NetworkType::ASYNCMSG, config, loop);
  std::thread loop_thread{[&] { loop->run(); }};
  int status = 0;
  try {
    send_all(*backend, {address, port}, events, seconds_each);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "netio3-demo send: %s\n", error.what());
    status = 1;
  }
  while (!loop->is_running()) { // stop() acts on a running loop only
    std::this_thread::yield();
  }
  loop->stop();
  loop_thread.join();
  return status;
}

int usage() {
  std::fprintf(stderr, "usage: netio3-demo receive [ADDRESS]\n"
                       "       netio3-demo send ADDRESS PORT [SECONDS]\n");
  return 2;
}

} // namespace

int main(int argc, char** argv) try {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "receive" && args.size() <= 2) {
    return receive(args.size() == 2 ? args[1] : "127.0.0.1");
  }
  if (!args.empty() && args[0] == "send" && (args.size() == 3 || args.size() == 4)) {
    const double seconds = args.size() == 4 ? std::atof(args[3].c_str()) : 1.0;
    return send(args[1], static_cast<std::uint16_t>(std::atoi(args[2].c_str())), seconds);
  }
  return usage();
} catch (const std::exception& error) { // e.g. the address does not resolve
  std::fprintf(stderr, "netio3-demo: %s\n", error.what());
  return 1;
}
