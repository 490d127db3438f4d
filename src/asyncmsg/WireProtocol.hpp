#pragma once

/// @file
/// The TCP backend's wire protocol (docs/wire-protocol.md): the connection handshake and the frame
/// format, as pure code (no sockets, no logging) so that it can be unit-tested and fuzzed alone.
///
/// A connection carries messages in one direction, from the connecting side (the send endpoint)
/// to the accepting side (the listen endpoint):
///   sender   -> receiver: Hello  (8 bytes)
///   receiver -> sender:   Reply  (16 bytes: accepted or why not, and the largest message accepted)
///   sender   -> receiver: frames (8-byte header + payload), until either side closes.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>

namespace netio3::asyncmsg {

/// The four bytes every handshake message starts with.
inline constexpr std::array<std::uint8_t, 4> protocol_magic{'N', 'I', 'O', '3'};
/// The protocol version this code speaks.
inline constexpr std::uint8_t protocol_version{1};

/// Size of the sender's Hello.
inline constexpr std::size_t hello_size{8};
/// Size of the receiver's Reply.
inline constexpr std::size_t reply_size{16};
/// Size of a frame header.
inline constexpr std::size_t frame_header_size{8};
/// Largest payload a frame can describe (its length field has 32 bits).
inline constexpr std::uint64_t max_frame_payload{0xFFFFFFFFULL};

/// Kind byte of a Hello.
inline constexpr std::uint8_t hello_kind{'H'};
/// Kind byte of a Reply.
inline constexpr std::uint8_t reply_kind{'R'};
/// Type byte of a data frame (the only frame type of version 1).
inline constexpr std::uint8_t frame_type_message{'M'};

/// The receiver's answer to a Hello.
enum class ReplyStatus : std::uint8_t {
  accepted = 0,             ///< The connection is established.
  rejected = 1,             ///< The application's `on_connection_request_cb` said no.
  too_many_connections = 2, ///< The listener is at `max_connections_per_listener`.
  unsupported_version = 3,  ///< The receiver does not speak the sender's protocol version.
};

/// Human-readable name of a reply status ("accepted", ...).
[[nodiscard]] const char* to_string(ReplyStatus status) noexcept;

/// What is wrong with a handshake message.
enum class HandshakeError {
  none,
  bad_magic,           ///< Does not start with "NIO3": not a netio3 peer.
  bad_kind,            ///< A Hello where a Reply was expected or the reverse, or an unknown kind.
  unsupported_version, ///< The version byte is not ours.
  bad_reserved,        ///< A reserved field is not zero.
  bad_status,          ///< A Reply with an unknown status.
};

/// Human-readable description of a handshake error.
[[nodiscard]] const char* to_string(HandshakeError error) noexcept;

/// A decoded Hello.
struct Hello {
  std::uint8_t version{protocol_version};
};

/// A decoded Reply.
struct Reply {
  std::uint8_t version{protocol_version};
  ReplyStatus status{ReplyStatus::accepted};
  /// The largest message (header data plus data) the receiver accepts on this connection.
  std::uint64_t max_message_size{0};
};

/// The Hello this side sends.
[[nodiscard]] std::array<std::uint8_t, hello_size> encode_hello() noexcept;
/// A Reply with `status` and `max_message_size` (clamped to `max_frame_payload`).
[[nodiscard]] std::array<std::uint8_t, reply_size> encode_reply(ReplyStatus status,
                                                                std::uint64_t max_message_size) noexcept;

/// Decodes a Hello from exactly `hello_size` bytes. A Hello with a good magic and kind but another
/// version decodes to `unsupported_version` with `hello.version` set, so that the receiver can
/// answer `ReplyStatus::unsupported_version` instead of just hanging up.
[[nodiscard]] HandshakeError decode_hello(std::span<const std::uint8_t, hello_size> bytes, Hello& hello) noexcept;
/// Decodes a Reply from exactly `reply_size` bytes.
[[nodiscard]] HandshakeError decode_reply(std::span<const std::uint8_t, reply_size> bytes, Reply& reply) noexcept;

// --- frames -----------------------------------------------------------------------------------

/// The check field of a frame header: catches a stream that lost its frame boundaries (or bytes
/// that were never frames) at the first header instead of trusting a random length.
[[nodiscard]] constexpr std::uint16_t frame_check(std::uint32_t length) noexcept {
  return static_cast<std::uint16_t>(0x5A5AU ^ (length & 0xFFFFU) ^ (length >> 16U));
}

/// Writes the header of a frame with `payload_size` bytes of payload (must be <= max_frame_payload).
/// Layout (little endian): type u8, flags u8 (0), check u16, payload length u32.
inline void encode_frame_header(std::uint8_t* out, std::uint32_t payload_size) noexcept {
  const std::uint16_t check = frame_check(payload_size);
  out[0] = frame_type_message;
  out[1] = 0;
  out[2] = static_cast<std::uint8_t>(check & 0xFFU);
  out[3] = static_cast<std::uint8_t>(check >> 8U);
  out[4] = static_cast<std::uint8_t>(payload_size & 0xFFU);
  out[5] = static_cast<std::uint8_t>((payload_size >> 8U) & 0xFFU);
  out[6] = static_cast<std::uint8_t>((payload_size >> 16U) & 0xFFU);
  out[7] = static_cast<std::uint8_t>(payload_size >> 24U);
}

/// What is wrong with a frame header.
enum class FrameError {
  none,
  bad_type,  ///< The type byte is not a known frame type.
  bad_flags, ///< The flags byte is not zero.
  bad_check, ///< The check field does not match the length.
  too_large, ///< The payload length exceeds the receiver's limit.
};

/// Human-readable description of a frame error.
[[nodiscard]] const char* to_string(FrameError error) noexcept;

/// A parsed, validated frame header.
struct FrameHeader {
  std::uint32_t payload_size{0};
};

/// Parses and checks the `frame_header_size` bytes at `bytes` against `max_payload`.
[[nodiscard]] inline FrameError parse_frame_header(const std::uint8_t* bytes, std::uint64_t max_payload,
                                                   FrameHeader& header) noexcept {
  if (bytes[0] != frame_type_message) {
    return FrameError::bad_type;
  }
  if (bytes[1] != 0) {
    return FrameError::bad_flags;
  }
  const auto check = static_cast<std::uint16_t>(bytes[2] | (bytes[3] << 8U));
  const std::uint32_t length = static_cast<std::uint32_t>(bytes[4]) | (static_cast<std::uint32_t>(bytes[5]) << 8U) |
                               (static_cast<std::uint32_t>(bytes[6]) << 16U) |
                               (static_cast<std::uint32_t>(bytes[7]) << 24U);
  if (check != frame_check(length)) {
    return FrameError::bad_check;
  }
  header.payload_size = length;
  if (length > max_payload) {
    return FrameError::too_large;
  }
  return FrameError::none;
}

/// Reassembles messages from the bytes of one connection, whatever way the bytes are split by
/// the transport. Owns the receive memory:
///
/// - a read buffer of `read_buffer_size` bytes: the caller receives into `receive_area()` (one
///   large `recv` takes many small messages) and reports the count with `on_received`, which hands
///   every complete message to a callback straight from the read buffer (no copy);
/// - only while a message larger than the read buffer is arriving, a message buffer that grows
///   with the bytes actually received (never beyond that message's validated size), into which
///   the caller then receives directly. It is kept for the next large message.
///
/// A frame that straddles the end of the read buffer is moved to its front (the only copy). No
/// memory is sized by a length before it has been checked against the limit.
class FrameDecoder {
public:
  /// Default read buffer: large enough that one `recv` decodes about a thousand 64-byte messages.
  static constexpr std::size_t default_read_buffer_size{std::size_t{64} << 10U};

  /// @param max_message_size the largest payload accepted (clamped to `max_frame_payload`)
  /// @param read_buffer_size the read buffer (at least 2 * frame_header_size)
  explicit FrameDecoder(std::uint64_t max_message_size, std::size_t read_buffer_size = default_read_buffer_size);

  /// Where the next received bytes go (never empty unless the decoder failed).
  [[nodiscard]] std::span<std::uint8_t> receive_area() noexcept;

  /// The same as up to two areas to fill in order, for one scatter read (`recvmsg`): while the
  /// rest of a large message fits its buffer, that rest and then the whole read buffer, so that the
  /// message's last bytes and the messages after it come in one read instead of two (a 64 KiB
  /// message's last few bytes cost a `recv` and often a wake-up of their own). Returns how many
  /// areas it set: 0 (the decoder failed, or no memory for a large message), 1 or 2.
  [[nodiscard]] std::size_t receive_areas(std::array<std::span<std::uint8_t>, 2>& areas) noexcept;

  /// Takes `count` bytes just written at the start of `receive_area()` (or into the areas of
  /// `receive_areas()`, in order) and calls
  /// `on_message(std::span<const std::uint8_t>)` for each message completed by them, in order; the
  /// span is valid during the call only. `on_message` returns false to stop at once (e.g. the
  /// connection was closed from the callback); the decoder must not be used afterwards.
  /// @return `FrameError::none`, or the error of the first bad frame (the decoder stays failed).
  template <typename OnMessage>
  FrameError on_received(std::size_t count, OnMessage&& on_message);

  /// The error that stopped the decoder, if any.
  [[nodiscard]] FrameError error() const noexcept { return m_error; }
  /// With `error() == too_large`: the length the peer claimed.
  [[nodiscard]] std::uint64_t claimed_size() const noexcept { return m_claimed_size; }
  /// The largest payload accepted.
  [[nodiscard]] std::uint64_t max_message_size() const noexcept { return m_max_message_size; }
  /// Bytes held for a message not complete yet (0 at a message boundary).
  [[nodiscard]] std::size_t partial_bytes() const noexcept;
  /// Bytes still missing of the large message being received straight into its own buffer (0
  /// when none is).
  [[nodiscard]] std::size_t large_bytes_missing() const noexcept {
    return m_in_large ? m_large_size - m_large_filled : 0;
  }
  /// Capacity of the message buffer for large messages (0 until one arrives).
  [[nodiscard]] std::size_t large_capacity() const noexcept { return m_large_capacity; }

private:
  /// Called when the read buffer holds an incomplete frame at [m_begin, m_end): makes room for it.
  void prepare_partial(const FrameHeader* header);
  void grow_large(std::size_t wanted);

  std::uint64_t m_max_message_size;
  std::size_t m_read_size;
  std::unique_ptr<std::uint8_t[]> m_read;
  std::size_t m_begin{0}; ///< first byte not decoded yet
  std::size_t m_end{0};   ///< one past the last byte received

  // Large-message mode: receiving a payload of m_large_size bytes straight into m_large.
  bool m_in_large{false};
  std::unique_ptr<std::uint8_t[]> m_large;
  std::size_t m_large_capacity{0}; ///< allocated bytes of m_large
  std::size_t m_large_size{0};     ///< payload size of the message being received
  std::size_t m_large_filled{0};   ///< payload bytes received so far

  FrameError m_error{FrameError::none};
  std::uint64_t m_claimed_size{0};
};

template <typename OnMessage>
FrameError FrameDecoder::on_received(std::size_t count, OnMessage&& on_message) {
  if (m_error != FrameError::none) {
    return m_error;
  }
  if (m_in_large) {
    const std::size_t into_large = std::min(count, m_large_size - m_large_filled);
    m_large_filled += into_large;
    if (m_large_filled < m_large_size) {
      return FrameError::none;
    }
    m_in_large = false;
    m_begin = 0;
    m_end = 0;
    if (!on_message(std::span<const std::uint8_t>{m_large.get(), m_large_size})) {
      return FrameError::none;
    }
    count -= into_large; // the rest went to the start of the read buffer (receive_areas' second area)
    if (count == 0) {
      return FrameError::none;
    }
  }
  m_end += count;
  const std::uint8_t* const base = m_read.get();
  FrameHeader header;
  while (m_end - m_begin >= frame_header_size) {
    const FrameError error = parse_frame_header(base + m_begin, m_max_message_size, header);
    if (error != FrameError::none) {
      m_error = error;
      m_claimed_size = header.payload_size;
      return error;
    }
    const std::size_t available = m_end - m_begin - frame_header_size;
    if (available < header.payload_size) {
      prepare_partial(&header);
      return FrameError::none;
    }
    const std::size_t payload_start = m_begin + frame_header_size;
    m_begin = payload_start + header.payload_size;
    if (!on_message(std::span<const std::uint8_t>{base + payload_start, header.payload_size})) {
      return FrameError::none;
    }
  }
  if (m_begin == m_end) {
    m_begin = 0;
    m_end = 0;
  } else {
    prepare_partial(nullptr);
  }
  return FrameError::none;
}

} // namespace netio3::asyncmsg
