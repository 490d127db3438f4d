#include "core/Resolve.hpp"

#include <arpa/inet.h>
#include <cstring>
#include <memory>
#include <netdb.h>
#include <netinet/in.h>

#include "netio3/Exceptions.hpp"

namespace netio3::detail {

ResolvedAddress resolve(const EndPointAddress& address, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0) | (address.is_literal() ? AI_NUMERICHOST : 0);
  addrinfo* results = nullptr;
  const std::string port = std::to_string(address.port());
  const int rc = getaddrinfo(address.address().c_str(), port.c_str(), &hints, &results);
  if (rc != 0) {
    const std::string why = rc == EAI_SYSTEM ? errno_text(errno) : std::string{gai_strerror(rc)};
    throw InvalidEndpointAddress("cannot resolve endpoint address '" + address.to_string() + "': " + why);
  }
  const std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owner{results, &freeaddrinfo};
  const addrinfo* chosen = results;
  for (const addrinfo* candidate = results; candidate != nullptr; candidate = candidate->ai_next) {
    if (candidate->ai_family == AF_INET) { // prefer IPv4 for host names such as "localhost"
      chosen = candidate;
      break;
    }
  }
  ResolvedAddress resolved;
  std::memcpy(&resolved.storage, chosen->ai_addr, chosen->ai_addrlen);
  resolved.length = chosen->ai_addrlen;
  resolved.family = chosen->ai_family;
  return resolved;
}

EndPointAddress to_endpoint_address(const sockaddr* address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address->sa_family == AF_INET) {
    const auto* ipv4 = reinterpret_cast<const sockaddr_in*>(address);
    inet_ntop(AF_INET, &ipv4->sin_addr, text, sizeof(text));
    return EndPointAddress{text, ntohs(ipv4->sin_port)};
  }
  if (address->sa_family == AF_INET6) {
    const auto* ipv6 = reinterpret_cast<const sockaddr_in6*>(address);
    if (IN6_IS_ADDR_V4MAPPED(&ipv6->sin6_addr)) {
      in_addr ipv4{};
      std::memcpy(&ipv4, &ipv6->sin6_addr.s6_addr[12], sizeof(ipv4));
      inet_ntop(AF_INET, &ipv4, text, sizeof(text));
    } else {
      inet_ntop(AF_INET6, &ipv6->sin6_addr, text, sizeof(text));
    }
    return EndPointAddress{text, ntohs(ipv6->sin6_port)};
  }
  throw InvalidEndpointAddress("unsupported socket address family " + std::to_string(address->sa_family));
}

std::string errno_text(int error_number) {
  char buffer[256] = {};
  // GNU strerror_r returns the message (possibly not in buffer).
  const char* message = strerror_r(error_number, buffer, sizeof(buffer));
  return std::string{message} + " (errno " + std::to_string(error_number) + ")";
}

} // namespace netio3::detail
