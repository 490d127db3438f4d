#include "core/Resolve.hpp"

#include <arpa/inet.h>
#include <array>
#include <cstring>
#include <memory>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>

#include "netio3/Exceptions.hpp"

namespace netio3::detail {

namespace {

/// The text of an IPv6 address with its zone, if it has a scope id.
std::string ipv6_text(const sockaddr_in6& ipv6) {
  std::array<char, INET6_ADDRSTRLEN> text{};
  inet_ntop(AF_INET6, &ipv6.sin6_addr, text.data(), text.size());
  std::string result{text.data()};
  if (ipv6.sin6_scope_id != 0) {
    std::array<char, IF_NAMESIZE> name{};
    result += '%';
    result += if_indextoname(ipv6.sin6_scope_id, name.data()) != nullptr ? std::string{name.data()}
                                                                         : std::to_string(ipv6.sin6_scope_id);
  }
  return result;
}

bool same_address(const ResolvedAddress& left, const addrinfo& right) {
  return left.length == right.ai_addrlen && std::memcmp(&left.storage, right.ai_addr, right.ai_addrlen) == 0;
}

} // namespace

std::vector<ResolvedAddress> resolve_all(const EndPointAddress& address, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0) | (address.is_literal() ? AI_NUMERICHOST : 0);
  addrinfo* results = nullptr;
  const std::string port = std::to_string(address.port());
  const int rc = getaddrinfo(address.address().c_str(), port.c_str(), &hints, &results);
  if (rc != 0) {
    std::string why = rc == EAI_SYSTEM ? errno_text(errno) : std::string{gai_strerror(rc)};
    if (address.is_ipv6() && address.address().find('%') != std::string::npos) {
      why += " (is the zone after '%' the name or number of an interface here?)";
    }
    throw InvalidEndpointAddress("cannot resolve endpoint address '" + address.to_string() + "': " + why);
  }
  const std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owner{results, &freeaddrinfo};
  std::vector<ResolvedAddress> resolved;
  for (const addrinfo* candidate = results; candidate != nullptr; candidate = candidate->ai_next) {
    if ((candidate->ai_family != AF_INET && candidate->ai_family != AF_INET6) ||
        candidate->ai_addrlen > sizeof(sockaddr_storage)) {
      continue;
    }
    bool seen = false;
    for (const ResolvedAddress& earlier : resolved) {
      seen = seen || same_address(earlier, *candidate);
    }
    if (seen) {
      continue;
    }
    ResolvedAddress entry;
    std::memcpy(&entry.storage, candidate->ai_addr, candidate->ai_addrlen);
    entry.length = candidate->ai_addrlen;
    entry.family = candidate->ai_family;
    if (entry.family == AF_INET6) {
      const auto* ipv6 = reinterpret_cast<const sockaddr_in6*>(&entry.storage);
      if (IN6_IS_ADDR_LINKLOCAL(&ipv6->sin6_addr) && ipv6->sin6_scope_id == 0 && address.is_literal()) {
        throw InvalidEndpointAddress("endpoint address '" + address.to_string() +
                                     "' is link-local but names no interface: write it with a zone, as in "
                                     "[fe80::1%eth0]");
      }
    }
    resolved.push_back(entry);
  }
  if (resolved.empty()) {
    throw InvalidEndpointAddress("cannot resolve endpoint address '" + address.to_string() +
                                 "': getaddrinfo gave no IPv4 or IPv6 address");
  }
  return resolved;
}

ResolvedAddress resolve(const EndPointAddress& address, bool passive) {
  return resolve_all(address, passive).front();
}

EndPointAddress to_endpoint_address(const sockaddr* address) {
  if (address->sa_family == AF_INET) {
    const auto* ipv4 = reinterpret_cast<const sockaddr_in*>(address);
    std::array<char, INET_ADDRSTRLEN> text{};
    inet_ntop(AF_INET, &ipv4->sin_addr, text.data(), text.size());
    return EndPointAddress{text.data(), ntohs(ipv4->sin_port)};
  }
  if (address->sa_family == AF_INET6) {
    const auto* ipv6 = reinterpret_cast<const sockaddr_in6*>(address);
    if (IN6_IS_ADDR_V4MAPPED(&ipv6->sin6_addr)) {
      in_addr ipv4{};
      std::memcpy(&ipv4, &ipv6->sin6_addr.s6_addr[12], sizeof(ipv4));
      std::array<char, INET_ADDRSTRLEN> text{};
      inet_ntop(AF_INET, &ipv4, text.data(), text.size());
      return EndPointAddress{text.data(), ntohs(ipv6->sin6_port)};
    }
    return EndPointAddress{ipv6_text(*ipv6), ntohs(ipv6->sin6_port)};
  }
  throw InvalidEndpointAddress("unsupported socket address family " + std::to_string(address->sa_family));
}

std::string numeric_host(const ResolvedAddress& address) {
  try {
    return to_endpoint_address(address.get()).address();
  } catch (const InvalidEndpointAddress&) {
    return "(address family " + std::to_string(address.family) + ")";
  }
}

std::string errno_text(int error_number) {
  char buffer[256] = {};
  // GNU strerror_r returns the message (possibly not in buffer).
  const char* message = strerror_r(error_number, buffer, sizeof(buffer));
  return std::string{message} + " (errno " + std::to_string(error_number) + ")";
}

} // namespace netio3::detail
