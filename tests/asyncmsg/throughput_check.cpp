// A quick loopback check of the TCP backend's speed in one process (not a test and not the
// project's benchmark, which is netio3-bench): receiver-side message rate of copying sends, and
// ping-pong latency next to a raw blocking TCP ping-pong.
//
// Usage: asyncmsg_throughput_check [loop|thread|pingpong|raw-pingpong] [messages] [size]
//   loop          the sender sends from its own loop thread (UNSAFE), completions refill the queue
//   thread        an application thread sends (SAFE) while the sender's loop runs on another thread
//   pingpong      one message back and forth over two connections; prints one-way latency
//   raw-pingpong  the same with plain blocking sockets (the reference for latency)

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "netio3/EpollEventLoop.hpp"
#include "netio3/Netio3Backend.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace netio3;

struct LoopRunner {
  std::shared_ptr<EpollEventLoop> loop = std::make_shared<EpollEventLoop>();
  std::thread thread{[this] { loop->run(); }};
  LoopRunner() {
    while (!loop->is_running()) {
      std::this_thread::yield();
    }
  }
  LoopRunner(const LoopRunner&) = delete;
  LoopRunner& operator=(const LoopRunner&) = delete;
  LoopRunner(LoopRunner&&) = delete;
  LoopRunner& operator=(LoopRunner&&) = delete;
  ~LoopRunner() {
    loop->stop();
    thread.join();
  }
};

void wait_until(const std::atomic<bool>& flag) {
  while (!flag.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
}

int throughput(bool from_loop, std::size_t messages, std::size_t size) {
  LoopRunner receiver_loop;
  LoopRunner sender_loop;
  std::atomic<std::size_t> received{0};
  std::atomic<bool> done{false};
  Clock::time_point first{};
  Clock::time_point last{};
  NetworkConfig receiver_config;
  receiver_config.thread_safety = ThreadSafetyModel::UNSAFE;
  receiver_config.on_data_cb = [&](std::span<const std::uint8_t>) {
    const std::size_t count = received.load(std::memory_order_relaxed) + 1;
    received.store(count, std::memory_order_relaxed);
    if (count == 1) {
      first = Clock::now();
    }
    if (count == messages) {
      last = Clock::now();
      done = true;
    }
  };
  auto receiver = NetworkBackend::create(NetworkType::ASYNCMSG, receiver_config, receiver_loop.loop);
  const EndPointAddress address = receiver->open_listen_endpoint({"127.0.0.1", 0}, {});

  std::vector<std::uint8_t> payload(size, 0x5A);
  std::atomic<bool> established{false};
  std::size_t sent = 0;
  NetworkBackend* sender_pointer = nullptr;
  const auto pump = [&](std::size_t at_most) {
    for (std::size_t count = 0; count < at_most && sent < messages; ++count) {
      if (sender_pointer->send_data_copy(address, std::span<const std::uint8_t>{payload}, {}, sent) !=
          NetioStatus::OK) {
        return;
      }
      ++sent;
    }
  };
  NetworkConfig sender_config;
  sender_config.thread_safety = from_loop ? ThreadSafetyModel::UNSAFE : ThreadSafetyModel::SAFE;
  sender_config.max_unsent_bytes = std::size_t{1} << 20U;
  sender_config.on_connection_established_cb = [&](const EndPointAddress&) {
    established = true;
    if (from_loop) {
      pump(10000);
    }
  };
  if (from_loop) {
    sender_config.on_send_completed_cb = [&](const EndPointAddress&, std::uint64_t) { pump(4); };
  }
  auto sender = NetworkBackend::create(NetworkType::ASYNCMSG, sender_config, sender_loop.loop);
  sender_pointer = sender.get();
  if (from_loop) {
    // UNSAFE: set-up calls from the loop thread too.
    auto opener = sender_loop.loop->create_timer([&] { sender->open_send_endpoint(address, {}); });
    opener.start_once(std::chrono::milliseconds{1});
    wait_until(established);
    wait_until(done);
  } else {
    sender->open_send_endpoint(address, {});
    wait_until(established);
    for (std::size_t key = 0; key < messages; ++key) {
      while (sender->send_data_copy(address, std::span<const std::uint8_t>{payload}, {}, key) != NetioStatus::OK) {
        std::this_thread::yield();
      }
    }
    wait_until(done);
  }
  const double seconds = std::chrono::duration<double>(last - first).count();
  std::printf("%s: %zu messages of %zu bytes in %.3f s: %.2f million messages/s, %.1f MB/s\n",
              from_loop ? "loop (UNSAFE)" : "thread (SAFE)", messages, size, seconds,
              static_cast<double>(messages) / seconds / 1e6, static_cast<double>(messages * size) / seconds / 1e6);
  return 0;
}

int pingpong(std::size_t rounds, std::size_t size) {
  LoopRunner loop_a;
  LoopRunner loop_b;
  std::vector<std::uint8_t> payload(size, 0x33);
  std::atomic<bool> established_a{false};
  std::atomic<bool> established_b{false};
  std::atomic<bool> done{false};
  std::vector<double> round_trips;
  round_trips.reserve(rounds);
  Clock::time_point started{};
  std::unique_ptr<NetworkBackend> a;
  std::unique_ptr<NetworkBackend> b;
  EndPointAddress a_address;
  EndPointAddress b_address;

  NetworkConfig config_a;
  config_a.thread_safety = ThreadSafetyModel::UNSAFE;
  config_a.on_connection_established_cb = [&](const EndPointAddress& where) {
    if (where == b_address) {
      established_a = true;
    }
  };
  config_a.on_data_cb = [&](std::span<const std::uint8_t>) {
    const auto now = Clock::now();
    round_trips.push_back(std::chrono::duration<double, std::micro>(now - started).count());
    if (round_trips.size() == rounds) {
      done = true;
      return;
    }
    started = Clock::now();
    (void)a->send_data_copy(b_address, std::span<const std::uint8_t>{payload}, {}, 0);
  };
  NetworkConfig config_b;
  config_b.thread_safety = ThreadSafetyModel::UNSAFE;
  config_b.on_connection_established_cb = [&](const EndPointAddress& where) {
    if (where == a_address) {
      established_b = true;
    }
  };
  config_b.on_data_cb = [&](std::span<const std::uint8_t> data) { (void)b->send_data_copy(a_address, data, {}, 0); };
  a = NetworkBackend::create(NetworkType::ASYNCMSG, config_a, loop_a.loop);
  b = NetworkBackend::create(NetworkType::ASYNCMSG, config_b, loop_b.loop);
  std::atomic<bool> opened{false};
  auto open_a = loop_a.loop->create_timer([&] {
    a_address = a->open_listen_endpoint({"127.0.0.1", 0}, {});
    opened = true;
  });
  open_a.start_once(std::chrono::milliseconds{1});
  wait_until(opened);
  opened = false;
  auto open_b = loop_b.loop->create_timer([&] {
    b_address = b->open_listen_endpoint({"127.0.0.1", 0}, {});
    b->open_send_endpoint(a_address, {});
    opened = true;
  });
  open_b.start_once(std::chrono::milliseconds{1});
  wait_until(opened);
  auto connect_a = loop_a.loop->create_timer([&] { a->open_send_endpoint(b_address, {}); });
  connect_a.start_once(std::chrono::milliseconds{1});
  wait_until(established_a);
  wait_until(established_b);
  auto kick = loop_a.loop->create_timer([&] {
    started = Clock::now();
    (void)a->send_data_copy(b_address, std::span<const std::uint8_t>{payload}, {}, 0);
  });
  kick.start_once(std::chrono::milliseconds{1});
  wait_until(done);
  std::sort(round_trips.begin(), round_trips.end());
  std::printf("pingpong: %zu rounds of %zu bytes: one-way median %.2f us, p99 %.2f us\n", rounds, size,
              round_trips[round_trips.size() / 2] / 2, round_trips[round_trips.size() * 99 / 100] / 2);
  return 0;
}

int raw_pingpong(std::size_t rounds, std::size_t size) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 || ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    std::perror("raw-pingpong");
    return 1;
  }
  const auto exact = [](int fd, std::uint8_t* data, std::size_t count, bool reading) {
    std::size_t done = 0;
    while (done < count) {
      const ssize_t result =
          reading ? ::recv(fd, data + done, count - done, 0) : ::send(fd, data + done, count - done, 0);
      if (result <= 0) {
        return false;
      }
      done += static_cast<std::size_t>(result);
    }
    return true;
  };
  const int one = 1;
  std::thread echo{[&] {
    const int fd = ::accept(listener, nullptr, nullptr);
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::vector<std::uint8_t> buffer(size);
    while (exact(fd, buffer.data(), size, true) && exact(fd, buffer.data(), size, false)) {
    }
    ::close(fd);
  }};
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    std::perror("raw-pingpong connect");
    return 1;
  }
  std::vector<std::uint8_t> buffer(size, 0x11);
  std::vector<double> round_trips;
  round_trips.reserve(rounds);
  for (std::size_t round = 0; round < rounds; ++round) {
    const auto started = Clock::now();
    if (!exact(fd, buffer.data(), size, false) || !exact(fd, buffer.data(), size, true)) {
      break;
    }
    round_trips.push_back(std::chrono::duration<double, std::micro>(Clock::now() - started).count());
  }
  ::close(fd);
  echo.join();
  ::close(listener);
  std::sort(round_trips.begin(), round_trips.end());
  std::printf("raw-pingpong: %zu rounds of %zu bytes: one-way median %.2f us, p99 %.2f us\n", rounds, size,
              round_trips[round_trips.size() / 2] / 2, round_trips[round_trips.size() * 99 / 100] / 2);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "loop";
  const bool latency = mode == "pingpong" || mode == "raw-pingpong";
  const std::size_t messages = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : (latency ? 20000 : 5000000);
  const std::size_t size = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 64;
  if (messages == 0) {
    std::fprintf(stderr, "the message count must be positive\n");
    return 2;
  }
  if (mode == "loop" || mode == "thread") {
    return throughput(mode == "loop", messages, size);
  }
  if (mode == "pingpong") {
    return pingpong(messages, size);
  }
  if (mode == "raw-pingpong") {
    return raw_pingpong(messages, size);
  }
  std::fprintf(stderr, "usage: %s [loop|thread|pingpong|raw-pingpong] [messages] [size]\n", argv[0]);
  return 2;
}
