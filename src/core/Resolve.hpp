#pragma once

// Address resolution and errno formatting shared by the backends (private to the library).

#include <string>
#include <sys/socket.h>

#include "netio3/EndPointAddress.hpp"

namespace netio3::detail {

/// A socket address ready for bind/connect.
struct ResolvedAddress {
  sockaddr_storage storage{};
  socklen_t length{0};
  int family{AF_UNSPEC};

  [[nodiscard]] const sockaddr* get() const noexcept { return reinterpret_cast<const sockaddr*>(&storage); }
};

/// Resolves `address` (literal or host name; the first result of getaddrinfo, IPv4 first).
/// `passive`: for bind (so "0.0.0.0"/"::" mean every interface).
/// Throws InvalidEndpointAddress naming the address and gai_strerror's text.
[[nodiscard]] ResolvedAddress resolve(const EndPointAddress& address, bool passive);

/// The numeric address and port of a socket address (AF_INET/AF_INET6; IPv4-mapped IPv6 addresses
/// are given as IPv4).
[[nodiscard]] EndPointAddress to_endpoint_address(const sockaddr* address);

/// "strerror text (errno N)".
[[nodiscard]] std::string errno_text(int error_number);

} // namespace netio3::detail
