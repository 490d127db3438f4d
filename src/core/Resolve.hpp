#pragma once

// Address resolution and errno formatting shared by the backends (private to the library).
//
// The rules (docs/decisions.md, "Addresses"): a literal is used as it is (an IPv6 one with its
// zone, "fe80::1%eth0", as the scope id); a host name gives every address getaddrinfo returns, in
// its order (RFC 6724 sorting, /etc/gai.conf), without duplicates. Send endpoints try them in that
// order until one connects; listen endpoints take the first.

#include <cerrno>
#include <string>
#include <sys/socket.h>
#include <vector>

#include "netio3/EndPointAddress.hpp"

namespace netio3::detail {

/// A socket address ready for bind/connect.
struct ResolvedAddress {
  sockaddr_storage storage{};
  socklen_t length{0};
  int family{AF_UNSPEC};

  [[nodiscard]] const sockaddr* get() const noexcept { return reinterpret_cast<const sockaddr*>(&storage); }
};

/// Every address of `address` (literal or host name) for a TCP socket, in getaddrinfo's order,
/// duplicates removed; never empty. `passive`: for bind (so "0.0.0.0"/"::" mean every interface).
/// Throws InvalidEndpointAddress naming the address and gai_strerror's text, or saying that a
/// link-local IPv6 literal has no zone ("fe80::1" instead of "fe80::1%eth0": the kernel cannot
/// tell which link is meant).
[[nodiscard]] std::vector<ResolvedAddress> resolve_all(const EndPointAddress& address, bool passive);

/// The first address of `resolve_all` (what a listen endpoint binds to).
[[nodiscard]] ResolvedAddress resolve(const EndPointAddress& address, bool passive);

/// The numeric address and port of a socket address, as EndPointAddress stores literals
/// (AF_INET/AF_INET6; IPv4-mapped IPv6 addresses are given as IPv4; a scoped IPv6 address gets its
/// interface name as zone, "fe80::1%eth0", or the number when the interface has no name).
[[nodiscard]] EndPointAddress to_endpoint_address(const sockaddr* address);

/// The numeric text of a socket address without the port, for messages ("::1", "10.0.0.1").
[[nodiscard]] std::string numeric_host(const ResolvedAddress& address);

/// "strerror text (errno N)".
[[nodiscard]] std::string errno_text(int error_number);

/// A non-blocking socket call found nothing to do (EAGAIN / EWOULDBLOCK), not an error.
[[nodiscard]] inline bool operation_would_block(int error_number) noexcept {
  return error_number == EAGAIN || error_number == EWOULDBLOCK;
}

} // namespace netio3::detail
