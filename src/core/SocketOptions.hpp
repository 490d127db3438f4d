#pragma once

// Options of the library's TCP connection sockets (private): the TCP backend's connections and the
// frontend's control connections.

#include <chrono>
#include <string_view>

#include "netio3/EndPointAddress.hpp"

namespace netio3::detail {

/// No Nagle delay, and dead-peer detection within `peer_timeout` (keepalive probes for idle
/// connections, TCP_USER_TIMEOUT for unacknowledged data; 0: the system's defaults). A failing
/// option is logged as a warning naming `who` and `peer`.
void configure_connection_socket(int fd, std::chrono::milliseconds peer_timeout, const EndPointAddress& peer,
                                 std::string_view who);

/// The pending error of a socket (SO_ERROR), 0 when there is none.
[[nodiscard]] int socket_error(int fd) noexcept;

} // namespace netio3::detail
