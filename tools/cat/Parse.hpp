#pragma once

// netio3-cat: turning command-line text into values (addresses, tag lists, sizes) and back. Pure
// functions, no I/O: each throws UsageError with a message that names what was wrong.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "netio3/EndPointAddress.hpp"

namespace netio3::cat {

/// A command-line mistake: printed as "netio3-cat: MESSAGE", exit status 2.
class UsageError : public std::invalid_argument {
public:
  using std::invalid_argument::invalid_argument;
};

/// Host and optional port as written on the command line.
struct HostPort {
  std::string host;                  ///< Empty for ":PORT"; IPv6 without brackets.
  std::optional<std::uint16_t> port; ///< Absent when the text has none.
};

/// The one place that splits address text (keep it the only one, so that IPv6 rules change in one
/// place):
/// - `[V6]:PORT` and `[V6]`: an IPv6 literal in brackets, with or without a port;
/// - text with two or more ':' and no brackets: an IPv6 literal without a port (`::1`, `fe80::1`);
///   a port after an IPv6 literal needs the brackets;
/// - `HOST:PORT`, `:PORT` (empty host), `HOST` (no port).
/// The host is not checked here (`EndPointAddress` does that); the port must be a decimal number
/// of at most 65535. @throws UsageError naming `what` (e.g. "--listen").
[[nodiscard]] HostPort split_host_port(std::string_view text, std::string_view what);

/// `--listen` text to an address: `HOST:PORT`, `[V6]:PORT`, `HOST` or `V6` (port 0: any free
/// port), `:PORT` or just `PORT` (every IPv4 interface, 0.0.0.0). @throws UsageError
[[nodiscard]] EndPointAddress parse_listen_address(std::string_view text);

/// The publisher's address: `HOST:PORT` or `[V6]:PORT`, port required and not 0. @throws UsageError
[[nodiscard]] EndPointAddress parse_publisher_address(std::string_view text);

/// Most tags one list may hold (a publisher allows 2^20 per subscriber by default).
inline constexpr std::size_t max_tags{std::size_t{1} << 20U};

/// Parses one tag: decimal or 0x-prefixed hexadecimal, 0 to 2^64-1. @throws UsageError
[[nodiscard]] std::uint64_t parse_tag(std::string_view text);

/// Parses `T[,T...]` where each item is a tag or an inclusive range `A-B` (A <= B), e.g.
/// `7`, `1,2,5`, `100-199`, `0x10-0x1f,7`. Returns the tags sorted, without duplicates.
/// @throws UsageError for an empty item, a bad number, a reversed range, or more than `max_tags`
[[nodiscard]] std::vector<std::uint64_t> parse_tags(std::string_view text);

/// The shortest description of sorted, unique tags: `7`, `1,3`, `100-199`, `1-3,7`.
[[nodiscard]] std::string describe_tags(const std::vector<std::uint64_t>& sorted_tags);

/// Parses a byte count: `64`, `4k`, `64KiB`, `1m`, `1MiB` (binary multiples). @throws UsageError
/// naming `what`.
[[nodiscard]] std::size_t parse_size(std::string_view text, std::string_view what);

} // namespace netio3::cat
