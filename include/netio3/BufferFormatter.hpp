#pragma once

/// @file
/// `BufferFormatter`: the encoder and decoder of the frontend's buffered wire format.
///
/// One buffer is a sequence of messages. Each message is, in this order and little-endian:
///
/// | field        | size    | present when                                               |
/// | ------------ | ------- | ---------------------------------------------------------- |
/// | header       | 4 bytes | always: bit 31 = a tag follows, bit 30 = a status follows,  |
/// |              |         | bits 29..0 = payload size                                   |
/// | status       | 1 byte  | bit 30 (the encoder writes it when the status is not 0)    |
/// | tag          | 8 bytes | bit 31 (the first message of a buffer, and every message    |
/// |              |         | whose tag differs from the previous message's)             |
/// | payload      | size    | always                                                     |
///
/// A message without a tag has the tag of the message before it; a message without a status has
/// status 0. There is no padding and no buffer header: a buffer ends where its last message ends.
/// The same format, one message long, travels in the backend's header data for unbuffered
/// (`COPY` over a single-message buffer, `ZERO_COPY`) sends, so a receiver decodes every message
/// the same way.

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include "netio3/Exceptions.hpp"

namespace netio3 {

/// A buffer that does not follow the buffered wire format (see `BufferFormatter`). The message
/// names the offset and what is wrong there.
class MalformedBuffer : public NetioException {
public:
  using NetioException::NetioException;
};

/// Encodes messages into a buffer and decodes buffers, in the buffered wire format (file comment).
///
/// An object is an encoder bound to one buffer of the caller's (it owns no memory and never
/// allocates); the decoding functions are static and pure. Not thread-safe: one thread per object.
class BufferFormatter {
public:
  static constexpr std::uint32_t tag_flag = 0x8000'0000U;    ///< Header bit 31: a tag follows.
  static constexpr std::uint32_t status_flag = 0x4000'0000U; ///< Header bit 30: a status byte follows.
  static constexpr std::uint32_t size_mask = 0x3FFF'FFFFU;   ///< Header bits 29..0: the payload size.
  static constexpr std::size_t header_size = 4;              ///< Bytes of the 32-bit header.
  static constexpr std::size_t status_size = 1;              ///< Bytes of the status.
  static constexpr std::size_t tag_size = 8;                 ///< Bytes of the tag.
  /// The most bytes a message adds besides its payload (header, status and tag).
  static constexpr std::size_t max_overhead = header_size + status_size + tag_size;
  /// The largest payload a header can describe (2^30 - 1 bytes).
  static constexpr std::size_t max_payload_size = size_mask;

  /// Holds the encoded header, status and tag of one message (for unbuffered sends).
  struct MessageHeader {
    std::array<std::uint8_t, max_overhead> bytes{}; ///< The encoded fields.
    std::size_t size{0};                            ///< How many of `bytes` are used.
    /// The encoded fields as a span.
    [[nodiscard]] std::span<const std::uint8_t> span() const noexcept { return {bytes.data(), size}; }
  };

  /// An encoder without a buffer: `append` fails until `reset` gives it one.
  BufferFormatter() = default;
  /// An encoder that writes into `buffer` from its start.
  explicit BufferFormatter(std::span<std::uint8_t> buffer) noexcept : m_buffer{buffer} {}

  /// Starts a new, empty buffer in `buffer` (the next message carries its tag).
  void reset(std::span<std::uint8_t> buffer) noexcept {
    m_buffer = buffer;
    m_size = 0;
    m_messages = 0;
  }

  /// Bytes the message would add to the current buffer (with its tag only when it must carry one).
  [[nodiscard]] std::size_t encoded_size(std::uint64_t tag, std::size_t payload_size,
                                         std::uint8_t status) const noexcept {
    return header_size + (status != 0 ? status_size : 0) + (needs_tag(tag) ? tag_size : 0) + payload_size;
  }

  /// Appends one message. Returns false, and writes nothing, when it does not fit in the rest of
  /// the buffer or its payload exceeds `max_payload_size`.
  [[nodiscard, gnu::always_inline]] bool append(std::uint64_t tag, std::span<const std::uint8_t> payload,
                                                std::uint8_t status = 0) noexcept {
    // The hot path of BUFFERED sends: whether a tag is due is decided once, and the common message
    // (no status, same tag as the one before) is a 4-byte header and the payload.
    const bool with_tag = needs_tag(tag);
    const std::size_t fields = header_size + (status != 0 ? status_size : 0) + (with_tag ? tag_size : 0);
    if (payload.size() > max_payload_size || fields + payload.size() > m_buffer.size() - m_size) {
      return false;
    }
    std::uint8_t* const out = m_buffer.data() + m_size;
    write_fields(out, with_tag, tag, payload.size(), status);
    copy_payload(out + fields, payload.data(), payload.size());
    m_size += fields + payload.size();
    m_last_tag = tag;
    ++m_messages;
    return true;
  }

  /// True when the message would fit in the rest of the current buffer (what `append` checks).
  [[nodiscard]] bool fits(std::uint64_t tag, std::size_t payload_size, std::uint8_t status) const noexcept {
    return payload_size <= max_payload_size && encoded_size(tag, payload_size, status) <= m_buffer.size() - m_size;
  }

  /// Bytes encoded so far in the current buffer.
  [[nodiscard]] std::size_t size() const noexcept { return m_size; }
  /// Messages encoded so far in the current buffer.
  [[nodiscard]] std::size_t message_count() const noexcept { return m_messages; }
  /// True when the current buffer holds no message.
  [[nodiscard]] bool empty() const noexcept { return m_messages == 0; }
  /// Capacity of the current buffer.
  [[nodiscard]] std::size_t capacity() const noexcept { return m_buffer.size(); }

  /// The header, status and tag of a message that starts a buffer (always with its tag).
  /// `payload_size` must not exceed `max_payload_size` (it is masked otherwise).
  [[nodiscard]] static MessageHeader lone_message_header(std::uint64_t tag, std::size_t payload_size,
                                                         std::uint8_t status) noexcept {
    MessageHeader header;
    header.size = write_fields(header.bytes.data(), true, tag, payload_size, status);
    return header;
  }

  /// Checks that `buffer` is well formed. Returns nothing when it is, else a text naming the offset
  /// and the fault (truncated header, status or tag; payload running past the end; first message
  /// without a tag). An empty buffer is well formed (no messages).
  [[nodiscard]] static std::optional<std::string> check(std::span<const std::uint8_t> buffer);

  /// Calls `callback(std::uint64_t tag, std::span<const std::uint8_t> payload, std::uint8_t status)`
  /// once per message of a buffer that `check` accepted, in order. The payload spans point into
  /// `buffer`. Returns the number of messages. Undefined for a buffer `check` rejects.
  template <typename Callback>
  static std::size_t decode_checked(std::span<const std::uint8_t> buffer, Callback&& callback) {
    const std::uint8_t* in = buffer.data();
    const std::uint8_t* const end = in + buffer.size();
    std::uint64_t tag = 0;
    std::size_t messages = 0;
    while (in != end) {
      std::uint32_t header = 0;
      std::memcpy(&header, in, header_size);
      header = from_little_endian(header);
      in += header_size;
      std::uint8_t status = 0;
      if ((header & status_flag) != 0) {
        status = *in;
        in += status_size;
      }
      if ((header & tag_flag) != 0) {
        std::memcpy(&tag, in, tag_size);
        tag = from_little_endian(tag);
        in += tag_size;
      }
      const std::size_t payload_size = header & size_mask;
      callback(tag, std::span<const std::uint8_t>{in, payload_size}, status);
      in += payload_size;
      ++messages;
    }
    return messages;
  }

  /// Checks `buffer` as a whole, then calls `callback` once per message as `decode_checked` does.
  /// A malformed buffer is rejected before any message is delivered.
  /// @return the number of messages
  /// @throws MalformedBuffer naming the offset and the fault
  template <typename Callback>
  static std::size_t decode(std::span<const std::uint8_t> buffer, Callback&& callback) {
    if (std::optional<std::string> fault = check(buffer)) {
      throw MalformedBuffer("malformed buffer of " + std::to_string(buffer.size()) + " bytes: " + *fault);
    }
    return decode_checked(buffer, std::forward<Callback>(callback));
  }

private:
  [[nodiscard]] bool needs_tag(std::uint64_t tag) const noexcept { return m_messages == 0 || tag != m_last_tag; }

  template <typename Unsigned>
  [[nodiscard]] static Unsigned from_little_endian(Unsigned value) noexcept {
    if constexpr (std::endian::native == std::endian::big) {
      if constexpr (sizeof(Unsigned) == 4) {
        return __builtin_bswap32(value);
      } else {
        return __builtin_bswap64(value);
      }
    }
    return value;
  }

  /// Copies `size` bytes: up to 64 inline, in overlapping 16-, 8- or 4-byte moves (a call to
  /// memcpy costs as much as the rest of appending a small message), larger ones by memcpy.
  [[gnu::always_inline]] static void copy_payload(std::uint8_t* out, const std::uint8_t* in,
                                                  std::size_t size) noexcept {
    if (size > 64) {
      std::memcpy(out, in, size);
    } else if (size >= 16) {
      std::memcpy(out, in, 16);
      std::memcpy(out + size - 16, in + size - 16, 16);
      if (size > 32) {
        std::memcpy(out + 16, in + 16, 16);
        std::memcpy(out + size - 32, in + size - 32, 16);
      }
    } else if (size >= 8) {
      std::memcpy(out, in, 8);
      std::memcpy(out + size - 8, in + size - 8, 8);
    } else if (size >= 4) {
      std::memcpy(out, in, 4);
      std::memcpy(out + size - 4, in + size - 4, 4);
    } else {
      for (std::size_t i = 0; i < size; ++i) {
        out[i] = in[i];
      }
    }
  }

  /// Writes header [+ status] [+ tag] at `out`; returns the bytes written.
  static std::size_t write_fields(std::uint8_t* out, bool with_tag, std::uint64_t tag, std::size_t payload_size,
                                  std::uint8_t status) noexcept {
    std::uint32_t header = static_cast<std::uint32_t>(payload_size) & size_mask;
    header |= with_tag ? tag_flag : 0U;
    header |= status != 0 ? status_flag : 0U;
    header = from_little_endian(header); // the conversion is its own inverse
    std::memcpy(out, &header, header_size);
    std::size_t written = header_size;
    if (status != 0) {
      out[written] = status;
      written += status_size;
    }
    if (with_tag) {
      const std::uint64_t wire_tag = from_little_endian(tag);
      std::memcpy(out + written, &wire_tag, tag_size);
      written += tag_size;
    }
    return written;
  }

  std::span<std::uint8_t> m_buffer{};
  std::size_t m_size{0};
  std::size_t m_messages{0};
  std::uint64_t m_last_tag{0};
};

} // namespace netio3
