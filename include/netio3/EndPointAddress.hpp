#pragma once

/// @file
/// `EndPointAddress`: the value type that names a host and port in every call and callback.
///
/// Contract: the constructor checks the syntax only (and throws `InvalidEndpointAddress`); names are
/// resolved when an endpoint is opened. IPv6 literals are kept in canonical form, so equal
/// addresses compare and hash equal; a plain value type, safe to copy between threads.

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <string_view>

namespace netio3 {

/// An IP address (IPv4 or IPv6 literal) or a host name, plus a port.
///
/// Construction checks the syntax only and throws `InvalidEndpointAddress` (message containing the
/// offending text) for:
/// - an empty string;
/// - text made only of digits and dots that is not a valid dotted-quad IPv4 address ("300.1.1.1");
/// - text containing ':' that is not a valid IPv6 literal (brackets "[::1]" are accepted and
///   stripped), optionally followed by a zone: "fe80::1%eth0" (an interface name or number: at
///   most 15 characters, none of '/', ':', '%', brackets or white space);
/// - a host name that is not a valid DNS name (labels of letters, digits and '-', at most 63
///   characters each, at most 253 in total).
///
/// IPv6 literals are stored in their canonical text (RFC 5952, as `inet_ntop` writes it):
/// "[::1]", "::1" and "0:0::1" are one and the same address "::1", and "FE80::A%veth0" is
/// "fe80::a%veth0" (the zone is kept exactly as given). IPv4 literals and host names are stored as
/// given. Accepted connections name their peer by its canonical literal (an IPv4 peer of a listener
/// on "::" by its dotted quad, a link-local peer with its interface as zone), so a peer compares
/// equal to the address a program would write for it.
///
/// Host names are resolved when the address is used (opening an endpoint); a name that does not
/// resolve makes that call throw `InvalidEndpointAddress`. A send endpoint tries every address of
/// a name in `getaddrinfo`'s order until one connects. Port 0 is allowed; on a listen endpoint it
/// means "pick a free port" and the real port is returned.
///
/// Equality, ordering and hashing compare the stored text and the port; no name resolution happens
/// there ("localhost" and "127.0.0.1" differ). Printing gives `address:port`, IPv6 as
/// `[address]:port` (with its zone inside the brackets: `[fe80::1%eth0]:80`). Objects are
/// immutable and safe to share between threads.
class EndPointAddress {
public:
  /// The unspecified IPv4 address and port 0 ("0.0.0.0:0").
  EndPointAddress();

  /// @throws InvalidEndpointAddress if `address` is syntactically invalid (see the class comment).
  EndPointAddress(std::string address, std::uint16_t port);

  /// Parses "host:port", "[ipv6]:port" or "[ipv6%zone]:port" (an IPv6 literal needs the brackets,
  /// since its colons would be ambiguous): the text a user types on a command line.
  /// @throws InvalidEndpointAddress naming the text when the port is missing, not a number, or out
  /// of 0..65535, or the address is invalid (see the class comment).
  [[nodiscard]] static EndPointAddress parse(std::string_view host_and_port);

  /// The address text: as given for IPv4 literals and host names, canonical for IPv6 literals
  /// (without brackets, with the zone if one was given).
  [[nodiscard]] const std::string& address() const noexcept { return m_address; }
  /// The port (host byte order).
  [[nodiscard]] std::uint16_t port() const noexcept { return m_port; }
  /// True when the address is an IPv6 literal.
  [[nodiscard]] bool is_ipv6() const noexcept;
  /// True when the address is an IPv4 or IPv6 literal (not a host name).
  [[nodiscard]] bool is_literal() const noexcept;
  /// `address:port`, or `[address]:port` for IPv6.
  [[nodiscard]] std::string to_string() const;

  /// Equal when address text and port are equal (IPv6 literals are canonical, so `[::1]` equals
  /// `0:0::1`; names are not resolved: `localhost` is not `127.0.0.1`).
  friend bool operator==(const EndPointAddress&, const EndPointAddress&) = default;
  /// Orders by address text, then port (so that addresses can key ordered containers).
  friend std::strong_ordering operator<=>(const EndPointAddress&, const EndPointAddress&) = default;

private:
  std::string m_address;
  std::uint16_t m_port{0};
};

/// Prints `address.to_string()`.
std::ostream& operator<<(std::ostream& out, const EndPointAddress& address);

} // namespace netio3

/// Hash of address text and port, so that `EndPointAddress` can key unordered containers.
template <>
struct std::hash<netio3::EndPointAddress> {
  /// Combines the hash of the address text with the port; equal addresses hash equally.
  std::size_t operator()(const netio3::EndPointAddress& address) const noexcept {
    const std::size_t text_hash = std::hash<std::string>{}(address.address());
    return text_hash ^
           (static_cast<std::size_t>(address.port()) * 0x9e3779b97f4a7c15ULL + (text_hash << 6) + (text_hash >> 2));
  }
};
