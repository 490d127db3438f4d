// Raw TCP peer: blocking sockets, no library. Throughput: one send() per message into a stream
// (Nagle left on, as a plain stream program would), the receiver reading in large chunks.
// Latency: ping-pong with TCP_NODELAY, each side reading the whole message before answering.
//
//   peer-rawtcp --test throughput --size 64 --duration 1
//   peer-rawtcp --test latency --size 64 --messages 20000

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "PeerCommon.hpp"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    peer::die(std::string("peer-rawtcp: ") + what + ": " + std::strerror(errno));
  }
}

/// A listening socket on 127.0.0.1 and a free port.
int listen_any(std::uint16_t& port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  check(fd >= 0, "socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  check(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0, "bind");
  check(listen(fd, 1) == 0, "listen");
  socklen_t length = sizeof(address);
  check(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0, "getsockname");
  port = ntohs(address.sin_port);
  return fd;
}

int connect_to(std::uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  check(fd >= 0, "socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  check(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0, "connect");
  return fd;
}

void set_nodelay(int fd) {
  const int on = 1;
  check(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) == 0, "TCP_NODELAY");
}

void write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t done = send(fd, data, size, 0);
    check(done > 0, "send");
    data += done;
    size -= static_cast<std::size_t>(done);
  }
}

/// Reads exactly `size` bytes; false at end of stream.
bool read_all(int fd, char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t done = recv(fd, data, size, 0);
    if (done == 0) {
      return false;
    }
    check(done > 0, "recv");
    data += done;
    size -= static_cast<std::size_t>(done);
  }
  return true;
}

int throughput(const peer::Settings& settings) {
  std::uint16_t port = 0;
  const int listener = listen_any(port);
  const pid_t child = fork();
  if (child == 0) {
    close(listener);
    const int fd = connect_to(port);
    std::vector<char> payload(settings.size, 't');
    const auto deadline = peer::Clock::now() + std::chrono::duration_cast<peer::Clock::duration>(
                                                   std::chrono::duration<double>(settings.duration));
    for (std::uint64_t sent = 0;; ++sent) {
      if (settings.messages != 0 ? sent >= settings.messages : (sent % 1024 == 0 && peer::Clock::now() >= deadline)) {
        break;
      }
      write_all(fd, payload.data(), payload.size());
    }
    shutdown(fd, SHUT_WR); // the end of the stream is the end mark
    char drain = 0;
    [[maybe_unused]] const ssize_t ignored = recv(fd, &drain, 1, 0);
    close(fd);
    _exit(0);
  }
  const int fd = accept(listener, nullptr, nullptr);
  check(fd >= 0, "accept");
  close(listener);
  std::vector<char> buffer(std::size_t{1} << 20U);
  std::uint64_t bytes = 0;
  peer::Clock::time_point first{};
  peer::Clock::time_point last{};
  while (true) {
    const ssize_t got = recv(fd, buffer.data(), buffer.size(), 0);
    check(got >= 0, "recv");
    if (got == 0) {
      break;
    }
    if (bytes == 0) {
      first = peer::Clock::now();
    }
    bytes += static_cast<std::uint64_t>(got);
    last = peer::Clock::now();
  }
  close(fd);
  int status = 0;
  waitpid(child, &status, 0);
  peer::print_throughput("raw-tcp", settings.size, bytes / settings.size,
                         std::chrono::duration<double>(last - first).count());
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int latency(const peer::Settings& settings) {
  std::uint16_t port = 0;
  const int listener = listen_any(port);
  const pid_t child = fork();
  if (child == 0) {
    const int fd = accept(listener, nullptr, nullptr);
    check(fd >= 0, "accept");
    close(listener);
    set_nodelay(fd);
    std::vector<char> buffer(settings.size);
    while (read_all(fd, buffer.data(), buffer.size())) {
      write_all(fd, buffer.data(), buffer.size());
    }
    close(fd);
    _exit(0);
  }
  close(listener);
  const int fd = connect_to(port);
  set_nodelay(fd);
  std::vector<char> payload(settings.size, 'p');
  std::vector<char> buffer(settings.size);
  const std::uint64_t total = settings.messages != 0 ? settings.messages : 20000;
  const std::uint64_t warmup = peer::warmup_count(total);
  std::vector<std::uint64_t> round_trips;
  round_trips.reserve(total);
  for (std::uint64_t i = 0; i < total; ++i) {
    const auto start = peer::Clock::now();
    write_all(fd, payload.data(), payload.size());
    check(read_all(fd, buffer.data(), buffer.size()), "echo ended early");
    if (i >= warmup) {
      round_trips.push_back(peer::nanoseconds(start, peer::Clock::now()));
    }
  }
  close(fd);
  int status = 0;
  waitpid(child, &status, 0);
  peer::print_latency("raw-tcp", settings.size, round_trips);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"Raw TCP peer for bench/compare: blocking sockets, two processes on loopback", "peer-rawtcp"};
  peer::Settings settings;
  peer::add_options(app, settings);
  CLI11_PARSE(app, argc, argv);
  return settings.test == "latency" ? latency(settings) : throughput(settings);
}
