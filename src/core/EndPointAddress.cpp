#include "netio3/EndPointAddress.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <string_view>

#include "netio3/Exceptions.hpp"

namespace netio3 {
namespace {

bool is_ipv4_literal(const std::string& text) {
  in_addr parsed{};
  return inet_pton(AF_INET, text.c_str(), &parsed) == 1;
}

bool is_ipv6_literal(const std::string& text) {
  in6_addr parsed{};
  return inet_pton(AF_INET6, text.c_str(), &parsed) == 1;
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
    if (!is_ipv6_literal(address)) {
      throw InvalidEndpointAddress(invalid(original, port, "contains ':' but is not a valid IPv6 address"));
    }
  } else if (address.find_first_not_of("0123456789.") == std::string::npos) {
    if (!is_ipv4_literal(address)) {
      throw InvalidEndpointAddress(invalid(original, port, "not a valid dotted-quad IPv4 address"));
    }
  } else if (!is_valid_host_name(address)) {
    throw InvalidEndpointAddress(invalid(original, port, "neither an IP address nor a valid host name"));
  }
  m_address = std::move(address);
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
