#pragma once

/// @file
/// The TCP backend's wire format, written out again from its documentation (docs/wire-protocol.md,
/// src/asyncmsg/WireProtocol.hpp) rather than by calling the backend's encoder, so that the
/// bad-input tests build valid and invalid bytes independently of the code under test:
///
///   Hello (sender -> receiver, 8 bytes):  "NIO3" 'H' version(1) reserved u16 (0)
///   Reply (receiver -> sender, 16 bytes): "NIO3" 'R' version status reserved(0) max_message u64
///   Frame: type 'M', flags 0, check u16 = 0x5A5A ^ (len & 0xFFFF) ^ (len >> 16), len u32, payload
/// All little endian.

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <vector>

namespace netio3::faults::wire {

inline constexpr std::size_t hello_size = 8;
inline constexpr std::size_t reply_size = 16;
inline constexpr std::size_t frame_header_size = 8;

/// Reply status values.
enum class ReplyStatus : std::uint8_t { accepted = 0, rejected = 1, too_many_connections = 2, unsupported_version = 3 };

/// A Hello; `version`, `kind` and `magic_last` can be spoiled for the bad-input cases.
inline std::vector<std::uint8_t> hello(std::uint8_t version = 1, std::uint8_t kind = 'H',
                                       std::uint8_t magic_last = '3') {
  return {'N', 'I', 'O', magic_last, kind, version, 0, 0};
}

/// The check field for a payload length.
constexpr std::uint16_t frame_check(std::uint32_t length) noexcept {
  return static_cast<std::uint16_t>(0x5A5AU ^ (length & 0xFFFFU) ^ (length >> 16U));
}

/// A frame header claiming `length` payload bytes, with a correct check unless `check_delta` != 0.
inline std::array<std::uint8_t, frame_header_size> frame_header(std::uint32_t length, std::uint16_t check_delta = 0,
                                                                std::uint8_t type = 'M', std::uint8_t flags = 0) {
  const auto check = static_cast<std::uint16_t>(frame_check(length) ^ check_delta);
  return {type,
          flags,
          static_cast<std::uint8_t>(check & 0xFFU),
          static_cast<std::uint8_t>(check >> 8U),
          static_cast<std::uint8_t>(length & 0xFFU),
          static_cast<std::uint8_t>((length >> 8U) & 0xFFU),
          static_cast<std::uint8_t>((length >> 16U) & 0xFFU),
          static_cast<std::uint8_t>(length >> 24U)};
}

/// A whole frame carrying `payload`.
inline std::vector<std::uint8_t> frame(std::span<const std::uint8_t> payload) {
  const auto header = frame_header(static_cast<std::uint32_t>(payload.size()));
  std::vector<std::uint8_t> bytes(frame_header_size + payload.size());
  std::copy(header.begin(), header.end(), bytes.begin());
  std::copy(payload.begin(), payload.end(), bytes.begin() + frame_header_size);
  return bytes;
}

/// The status byte of a Reply, or -1 when `reply` is not a Reply.
inline int reply_status(std::span<const std::uint8_t> reply) {
  if (reply.size() != reply_size || reply[0] != 'N' || reply[1] != 'I' || reply[2] != 'O' || reply[3] != '3' ||
      reply[4] != 'R') {
    return -1;
  }
  return reply[6];
}

} // namespace netio3::faults::wire
