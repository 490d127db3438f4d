#include "netio3/EndPointAddress.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <optional>
#include <string_view>

#include "netio3/Exceptions.hpp"

namespace netio3 {
namespace {

bool is_ipv4_literal(const std::string& text) {
  in_addr parsed{};
  return inet_pton(AF_INET, text.c_str(), &parsed) == 1;
}

/// The canonical text of an IPv6 literal (RFC 5952, as inet_ntop writes it), or nullopt.
std::optional<std::string> canonical_ipv6(const std::string& text) {
  in6_addr parsed{};
  if (inet_pton(AF_INET6, text.c_str(), &parsed) != 1) {
    return std::nullopt;
  }
  std::array<char, INET6_ADDRSTRLEN> canonical{};
  if (inet_ntop(AF_INET6, &parsed, canonical.data(), canonical.size()) == nullptr) {
    return std::nullopt;
  }
  return std::string{canonical.data()};
}

/// A zone (scope) after '%': an interface name or number, as `getaddrinfo` and `if_nametoindex`
/// take them. Linux interface names are at most IFNAMSIZ - 1 characters without '/', ':' or white
/// space; brackets and '%' are refused too, so that the printed "[addr%zone]:port" stays parseable.
bool is_valid_zone(std::string_view zone) {
  constexpr std::size_t max_interface_name = 15; // IFNAMSIZ - 1
  return !zone.empty() && zone.size() <= max_interface_name &&
         std::all_of(zone.begin(), zone.end(), [](char character) {
           return character > ' ' && character < 0x7f && character != '/' && character != ':' && character != '%' &&
                  character != '[' && character != ']';
         });
}

bool is_valid_host_name(std::string_view name) {
  constexpr std::size_t max_name = 253;
  constexpr std::size_t max_label = 63;
  if (name.empty() || name.size() > max_name) {
    return false;
  }
  if (name.back() == '.') {
    name.remove_suffix(1); // a fully qualified name may end with the root dot
  }
  std::size_t label_start = 0;
  while (label_start <= name.size()) {
    const std::size_t dot = std::min(name.find('.', label_start), name.size());
    const std::string_view label = name.substr(label_start, dot - label_start);
    if (label.empty() || label.size() > max_label || label.front() == '-' || label.back() == '-') {
      return false;
    }
    const bool characters_ok = std::all_of(label.begin(), label.end(), [](char character) {
      return (character >= 'a' && character <= 'z') || (character >= 'A' && character <= 'Z') ||
             (character >= '0' && character <= '9') || character == '-' || character == '_';
    });
    if (!characters_ok) {
      return false;
    }
    label_start = dot + 1;
  }
  return true;
}

std::string invalid(const std::string& text, std::uint16_t port, std::string_view why) {
  return "invalid endpoint address '" + text + "' (port " + std::to_string(port) + "): " + std::string{why};
}

} // namespace

EndPointAddress::EndPointAddress() : m_address{"0.0.0.0"} {}

EndPointAddress::EndPointAddress(std::string address, std::uint16_t port) : m_port{port} {
  const std::string original = address;
  if (address.size() >= 2 && address.front() == '[' && address.back() == ']') {
    address = address.substr(1, address.size() - 2);
  }
  if (address.empty()) {
    throw InvalidEndpointAddress(invalid(original, port, "the address is empty"));
  }
  if (address.find(':') != std::string::npos) {
    // "fe80::1%eth0": the zone (interface) of a scoped address is kept as given; the address part
    // is stored in canonical form, so that "0:0::1" and "::1" are the same endpoint and compare
    // equal to what accepted connections report (which is inet_ntop's text).
    const std::size_t percent = address.find('%');
    const std::string zone = percent == std::string::npos ? std::string{} : address.substr(percent + 1);
    if (percent != std::string::npos && !is_valid_zone(zone)) {
      throw InvalidEndpointAddress(invalid(original, port,
                                           "the zone after '%' must be an interface name or number "
                                           "(at most 15 characters, none of '/', ':', '%', brackets or spaces)"));
    }
    const std::optional<std::string> canonical = canonical_ipv6(address.substr(0, percent));
    if (!canonical) {
      throw InvalidEndpointAddress(invalid(original, port, "contains ':' but is not a valid IPv6 address"));
    }
    address = percent == std::string::npos ? *canonical : *canonical + "%" + zone;
  } else if (address.find_first_not_of("0123456789.") == std::string::npos) {
    if (!is_ipv4_literal(address)) {
      throw InvalidEndpointAddress(invalid(original, port, "not a valid dotted-quad IPv4 address"));
    }
  } else if (!is_valid_host_name(address)) {
    throw InvalidEndpointAddress(invalid(original, port, "neither an IP address nor a valid host name"));
  }
  m_address = std::move(address);
}

EndPointAddress EndPointAddress::parse(std::string_view host_and_port) {
  const std::string text{host_and_port};
  const auto fail = [&](std::string_view why) -> EndPointAddress {
    throw InvalidEndpointAddress("invalid endpoint '" + text +
                                 "' (expected HOST:PORT or [IPV6]:PORT): " + std::string{why});
  };
  const std::size_t colon = text.rfind(':');
  if (colon == std::string::npos) {
    return fail("no ':PORT'");
  }
  std::string host = text.substr(0, colon);
  const std::string port_text = text.substr(colon + 1);
  if (host.find(':') != std::string::npos && !(host.size() >= 2 && host.front() == '[' && host.back() == ']')) {
    return fail("an IPv6 address needs brackets, as in [::1]:5555");
  }
  if (port_text.empty() || port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string::npos) {
    return fail("the port '" + port_text + "' is not a number from 0 to 65535");
  }
  const unsigned long port = std::stoul(port_text);
  if (port > 65535) {
    return fail("the port " + port_text + " is above 65535");
  }
  try {
    return EndPointAddress{std::move(host), static_cast<std::uint16_t>(port)};
  } catch (const InvalidEndpointAddress& error) {
    return fail(error.what());
  }
}

bool EndPointAddress::is_ipv6() const noexcept {
  return m_address.find(':') != std::string::npos;
}

bool EndPointAddress::is_literal() const noexcept {
  return is_ipv6() || m_address.find_first_not_of("0123456789.") == std::string::npos;
}

std::string EndPointAddress::to_string() const {
  if (is_ipv6()) {
    return "[" + m_address + "]:" + std::to_string(m_port);
  }
  return m_address + ":" + std::to_string(m_port);
}

std::ostream& operator<<(std::ostream& out, const EndPointAddress& address) {
  return out << address.to_string();
}

} // namespace netio3
