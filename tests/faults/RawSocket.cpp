#include "RawSocket.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>

namespace netio3::faults {

namespace {

using Clock = std::chrono::steady_clock;

std::string errno_message(int error_number) {
  return std::string(std::strerror(error_number)) + " (errno " + std::to_string(error_number) + ")";
}

/// Fills `storage` with `address`:`port`; false if `address` is not a literal.
bool make_sockaddr(const std::string& address, std::uint16_t port, sockaddr_storage& storage, socklen_t& length) {
  std::memset(&storage, 0, sizeof storage);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
  if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    length = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    length = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

int poll_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1000));
}

} // namespace

RawSocket::RawSocket(const EndPointAddress& target, const std::string& local_address) {
  sockaddr_storage remote{};
  socklen_t remote_length = 0;
  if (!make_sockaddr(target.address(), target.port(), remote, remote_length)) {
    throw std::runtime_error("RawSocket: " + target.to_string() + " is not an IP literal");
  }
  m_fd = socket(remote.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (m_fd < 0) {
    throw std::runtime_error("RawSocket: socket() failed: " + errno_message(errno));
  }
  const int one = 1;
  setsockopt(m_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); // one-byte writes go out one by one
  if (!local_address.empty()) {
    sockaddr_storage local{};
    socklen_t local_length = 0;
    if (!make_sockaddr(local_address, 0, local, local_length) ||
        bind(m_fd, reinterpret_cast<const sockaddr*>(&local), local_length) != 0) {
      const int saved = errno;
      close(m_fd);
      throw std::runtime_error("RawSocket: cannot bind to " + local_address + ": " + errno_message(saved));
    }
  }
  if (connect(m_fd, reinterpret_cast<const sockaddr*>(&remote), remote_length) != 0) {
    const int saved = errno;
    close(m_fd);
    throw std::runtime_error("RawSocket: connect to " + target.to_string() + " failed: " + errno_message(saved));
  }
}

RawSocket::RawSocket(RawSocket&& other) noexcept : m_fd{other.m_fd} {
  other.m_fd = -1;
}

RawSocket& RawSocket::operator=(RawSocket&& other) noexcept {
  if (this != &other) {
    if (m_fd >= 0) {
      close(m_fd);
    }
    m_fd = other.m_fd;
    other.m_fd = -1;
  }
  return *this;
}

RawSocket::~RawSocket() {
  if (m_fd >= 0) {
    close(m_fd);
  }
}

bool RawSocket::write_all(std::span<const std::uint8_t> bytes, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::size_t done = 0;
  while (done < bytes.size()) {
    pollfd fds{m_fd, POLLOUT, 0};
    if (poll(&fds, 1, poll_ms(deadline)) <= 0) {
      if (Clock::now() >= deadline) {
        return false;
      }
      continue;
    }
    const ssize_t wrote = send(m_fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (wrote < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        continue;
      }
      return false;
    }
    done += static_cast<std::size_t>(wrote);
  }
  return true;
}

std::optional<std::vector<std::uint8_t>> RawSocket::read_exact(std::size_t count, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::vector<std::uint8_t> bytes(count);
  std::size_t done = 0;
  while (done < count) {
    pollfd fds{m_fd, POLLIN, 0};
    if (poll(&fds, 1, poll_ms(deadline)) <= 0) {
      if (Clock::now() >= deadline) {
        return std::nullopt;
      }
      continue;
    }
    const ssize_t got = recv(m_fd, bytes.data() + done, count - done, MSG_DONTWAIT);
    if (got == 0) {
      return std::nullopt;
    }
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        continue;
      }
      return std::nullopt;
    }
    done += static_cast<std::size_t>(got);
  }
  return bytes;
}

RawSocket::Outcome RawSocket::wait_closed(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::uint8_t sink[4096];
  for (;;) {
    pollfd fds{m_fd, POLLIN, 0};
    const int ready = poll(&fds, 1, poll_ms(deadline));
    if (ready <= 0) {
      if (Clock::now() >= deadline) {
        return Outcome::still_open;
      }
      continue;
    }
    const ssize_t got = recv(m_fd, sink, sizeof sink, MSG_DONTWAIT);
    if (got == 0) {
      return Outcome::eof;
    }
    if (got < 0 && errno != EINTR && errno != EAGAIN) {
      return Outcome::reset;
    }
  }
}

void RawSocket::shutdown_write() noexcept {
  shutdown(m_fd, SHUT_WR);
}

std::uint16_t RawSocket::local_port() const noexcept {
  sockaddr_storage local{};
  socklen_t length = sizeof local;
  if (getsockname(m_fd, reinterpret_cast<sockaddr*>(&local), &length) != 0) {
    return 0;
  }
  if (local.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&local)->sin_port);
  }
  return ntohs(reinterpret_cast<const sockaddr_in6*>(&local)->sin6_port);
}

const char* to_string(RawSocket::Outcome outcome) noexcept {
  switch (outcome) {
  case RawSocket::Outcome::eof: return "eof";
  case RawSocket::Outcome::reset: return "reset";
  case RawSocket::Outcome::still_open: return "still open";
  }
  return "?";
}

} // namespace netio3::faults
