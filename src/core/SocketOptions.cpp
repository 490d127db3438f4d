#include "core/SocketOptions.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "core/Logging.hpp"
#include "core/Resolve.hpp"

namespace netio3::detail {

void configure_connection_socket(int fd, std::chrono::milliseconds peer_timeout, const EndPointAddress& peer,
                                 std::string_view who) {
  const auto set = [&](int level, int name, int value, const char* what) {
    if (::setsockopt(fd, level, name, &value, sizeof(value)) != 0) {
      NETIO3_LOG_WARNING("{}: setting {} on the connection with {} failed: {}", who, what, peer.to_string(),
                         errno_text(errno));
    }
  };
  set(IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
  if (peer_timeout.count() > 0) {
    const auto millis = peer_timeout.count();
    // Keepalive has a granularity of seconds: idle for half the timeout, then three probes over
    // the other half.
    const int idle = static_cast<int>(std::max<std::int64_t>(1, millis / 2000));
    const int interval = static_cast<int>(std::max<std::int64_t>(1, millis / 6000));
    set(SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
    set(IPPROTO_TCP, TCP_KEEPIDLE, idle, "TCP_KEEPIDLE");
    set(IPPROTO_TCP, TCP_KEEPINTVL, interval, "TCP_KEEPINTVL");
    set(IPPROTO_TCP, TCP_KEEPCNT, 3, "TCP_KEEPCNT");
    set(IPPROTO_TCP, TCP_USER_TIMEOUT, static_cast<int>(std::min<std::int64_t>(millis, INT32_MAX)), "TCP_USER_TIMEOUT");
  }
}

int socket_error(int fd) noexcept {
  int error = 0;
  socklen_t length = sizeof(error);
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
    return errno;
  }
  return error;
}

} // namespace netio3::detail
