#pragma once

// The libfabric backend's wire protocol (private): the parameter data exchanged by fi_connect /
// fi_accept, and the small header in front of every message. Pure functions without libfabric, so
// that they can be unit-tested and fuzzed. The format is described in docs/libfabric-backend.md.
//
// All integers are little-endian on the wire.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace netio3::libfabric {

/// "N3LF": identifies netio3's libfabric backend in the connection parameter data.
inline constexpr std::uint32_t protocol_magic = 0x4e334c46U;
/// Version of the protocol below; a peer with another version is rejected. Version 2 added the
/// keepalive message and the sender's peer timeout in the connect request.
inline constexpr std::uint16_t protocol_version = 2;

/// Sent by the connecting side (send endpoint) in fi_connect's parameter data.
struct ConnectRequest {
  /// How many control messages (credit returns) the sender has receive buffers posted for. The
  /// receiver never grants a credit window larger than this, so that its credit messages always
  /// find a posted buffer.
  std::uint32_t control_capacity{0};
  /// The sender's `NetworkConfig::peer_timeout` in milliseconds (saturated to 32 bits); 0 when it
  /// sends no keepalives. The receiver never declares the sender silent sooner than this, so that
  /// two sides configured differently do not end a healthy idle connection.
  std::uint32_t peer_timeout_ms{0};
};
inline constexpr std::size_t connect_request_size = 16;

/// Sent by the accepting side (receive connection) in fi_accept's parameter data.
struct AcceptResponse {
  /// The largest message (header data plus data) the receiver accepts: its buffer size.
  std::uint64_t max_message_size{0};
  /// The credit window: receive buffers posted for this connection. The sender never has more
  /// messages outstanding than the credits the receiver granted.
  std::uint32_t initial_credits{0};
};
inline constexpr std::size_t accept_response_size = 24;

/// Kind of a message on the wire.
enum class MessageType : std::uint8_t {
  data = 1,      ///< Sender -> receiver: header data followed by data, one user message.
  credit = 2,    ///< Receiver -> sender: cumulative credits granted so far.
  keepalive = 3, ///< Sender -> receiver: no payload; accounted like a data message, never delivered.
};

/// The header in front of every message (8 bytes).
struct WireHeader {
  MessageType type{MessageType::data};
  /// data and keepalive: the message's sequence number (low 32 bits), checked by the receiver;
  /// credit: the total number of credits granted since the connection started (wrapping).
  std::uint32_t value{0};
};
inline constexpr std::size_t wire_header_size = 8;

/// Encodes `request` into `out` (exactly `connect_request_size` bytes).
void encode(const ConnectRequest& request, std::span<std::uint8_t, connect_request_size> out) noexcept;
/// Decodes a connect request; nullopt when the size, magic or version do not match.
[[nodiscard]] std::optional<ConnectRequest> decode_connect_request(std::span<const std::uint8_t> in) noexcept;

/// Encodes `response` into `out` (exactly `accept_response_size` bytes).
void encode(const AcceptResponse& response, std::span<std::uint8_t, accept_response_size> out) noexcept;
/// Decodes an accept response; nullopt when the size, magic or version do not match, or the values
/// are unusable (no credits, zero message size).
[[nodiscard]] std::optional<AcceptResponse> decode_accept_response(std::span<const std::uint8_t> in) noexcept;

/// Writes `header` into the first `wire_header_size` bytes of `out` (which must be that large).
void encode(const WireHeader& header, std::uint8_t* out) noexcept;
/// Decodes the header at the start of a received message; nullopt when the message is shorter
/// than a header or the type is unknown.
[[nodiscard]] std::optional<WireHeader> decode_wire_header(std::span<const std::uint8_t> message) noexcept;

} // namespace netio3::libfabric
