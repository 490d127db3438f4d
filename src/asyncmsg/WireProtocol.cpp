#include "asyncmsg/WireProtocol.hpp"

#include <algorithm>
#include <stdexcept>

namespace netio3::asyncmsg {

const char* to_string(ReplyStatus status) noexcept {
  switch (status) {
  case ReplyStatus::accepted: return "accepted";
  case ReplyStatus::rejected: return "rejected by the receiving application";
  case ReplyStatus::too_many_connections: return "rejected: the listener has reached its connection limit";
  case ReplyStatus::unsupported_version: return "rejected: the receiver does not speak this protocol version";
  }
  return "unknown reply status";
}

const char* to_string(HandshakeError error) noexcept {
  switch (error) {
  case HandshakeError::none: return "no error";
  case HandshakeError::bad_magic: return "the handshake does not start with the netio3 magic (not a netio3 peer)";
  case HandshakeError::bad_kind: return "unexpected handshake message kind";
  case HandshakeError::unsupported_version: return "unsupported protocol version";
  case HandshakeError::bad_reserved: return "a reserved handshake field is not zero";
  case HandshakeError::bad_status: return "unknown reply status";
  }
  return "unknown handshake error";
}

const char* to_string(FrameError error) noexcept {
  switch (error) {
  case FrameError::none: return "no error";
  case FrameError::bad_type: return "unknown frame type";
  case FrameError::bad_flags: return "non-zero frame flags";
  case FrameError::bad_check: return "frame header check mismatch (the stream lost its framing)";
  case FrameError::too_large: return "message larger than the receiver's limit";
  }
  return "unknown frame error";
}

std::array<std::uint8_t, hello_size> encode_hello() noexcept {
  std::array<std::uint8_t, hello_size> out{};
  std::copy(protocol_magic.begin(), protocol_magic.end(), out.begin());
  out[4] = hello_kind;
  out[5] = protocol_version;
  out[6] = 0; // reserved (flags), little endian u16
  out[7] = 0;
  return out;
}

std::array<std::uint8_t, reply_size> encode_reply(ReplyStatus status, std::uint64_t max_message_size) noexcept {
  const std::uint64_t limit = std::min(max_message_size, max_frame_payload);
  std::array<std::uint8_t, reply_size> out{};
  std::copy(protocol_magic.begin(), protocol_magic.end(), out.begin());
  out[4] = reply_kind;
  out[5] = protocol_version;
  out[6] = static_cast<std::uint8_t>(status);
  out[7] = 0; // reserved
  for (std::size_t index = 0; index < 8; ++index) {
    out[8 + index] = static_cast<std::uint8_t>((limit >> (8U * index)) & 0xFFU);
  }
  return out;
}

namespace {

bool has_magic(const std::uint8_t* bytes) noexcept {
  return std::equal(protocol_magic.begin(), protocol_magic.end(), bytes);
}

} // namespace

HandshakeError decode_hello(std::span<const std::uint8_t, hello_size> bytes, Hello& hello) noexcept {
  if (!has_magic(bytes.data())) {
    return HandshakeError::bad_magic;
  }
  if (bytes[4] != hello_kind) {
    return HandshakeError::bad_kind;
  }
  hello.version = bytes[5];
  if (hello.version != protocol_version) {
    return HandshakeError::unsupported_version;
  }
  if (bytes[6] != 0 || bytes[7] != 0) {
    return HandshakeError::bad_reserved;
  }
  return HandshakeError::none;
}

HandshakeError decode_reply(std::span<const std::uint8_t, reply_size> bytes, Reply& reply) noexcept {
  if (!has_magic(bytes.data())) {
    return HandshakeError::bad_magic;
  }
  if (bytes[4] != reply_kind) {
    return HandshakeError::bad_kind;
  }
  reply.version = bytes[5];
  if (bytes[6] > static_cast<std::uint8_t>(ReplyStatus::unsupported_version)) {
    return HandshakeError::bad_status;
  }
  reply.status = static_cast<ReplyStatus>(bytes[6]);
  // A receiver that does not speak our version says so with its own version number.
  if (reply.version != protocol_version && reply.status != ReplyStatus::unsupported_version) {
    return HandshakeError::unsupported_version;
  }
  if (bytes[7] != 0) {
    return HandshakeError::bad_reserved;
  }
  std::uint64_t limit = 0;
  for (std::size_t index = 0; index < 8; ++index) {
    limit |= static_cast<std::uint64_t>(bytes[8 + index]) << (8U * index);
  }
  reply.max_message_size = std::min(limit, max_frame_payload);
  return HandshakeError::none;
}

// --- FrameDecoder -------------------------------------------------------------------------------

FrameDecoder::FrameDecoder(std::uint64_t max_message_size, std::size_t read_buffer_size)
  : m_max_message_size{std::min(max_message_size, max_frame_payload)}, m_read_size{read_buffer_size} {
  if (read_buffer_size < 2 * frame_header_size) {
    throw std::invalid_argument("FrameDecoder: the read buffer must hold at least two frame headers");
  }
  m_read = std::make_unique_for_overwrite<std::uint8_t[]>(m_read_size);
}

std::size_t FrameDecoder::partial_bytes() const noexcept {
  if (m_in_large) {
    return frame_header_size + m_large_filled;
  }
  return m_end - m_begin;
}

std::span<std::uint8_t> FrameDecoder::receive_area() noexcept {
  if (m_error != FrameError::none) {
    return {};
  }
  if (m_in_large) {
    if (m_large_filled == m_large_capacity) {
      // Grow with the bytes actually received (doubling), so a peer cannot make us allocate a
      // large buffer by merely claiming a large size.
      try {
        grow_large(std::min(m_large_size, std::max(m_large_capacity * 2, m_large_filled + m_read_size)));
      } catch (const std::bad_alloc&) {
        return {};
      }
    }
    return {m_large.get() + m_large_filled, std::min(m_large_capacity, m_large_size) - m_large_filled};
  }
  return {m_read.get() + m_end, m_read_size - m_end};
}

std::size_t FrameDecoder::receive_areas(std::array<std::span<std::uint8_t>, 2>& areas) noexcept {
  const std::span<std::uint8_t> first = receive_area();
  if (first.empty()) {
    return 0;
  }
  areas[0] = first;
  if (m_in_large && m_large_filled + first.size() == m_large_size) {
    areas[1] = {m_read.get(), m_read_size}; // empty in large mode (m_begin == m_end == 0)
    return 2;
  }
  return 1;
}

void FrameDecoder::grow_large(std::size_t wanted) {
  if (wanted <= m_large_capacity) {
    return;
  }
  auto bigger = std::make_unique_for_overwrite<std::uint8_t[]>(wanted);
  if (m_large_filled > 0) {
    std::memcpy(bigger.get(), m_large.get(), m_large_filled);
  }
  m_large = std::move(bigger);
  m_large_capacity = wanted;
}

void FrameDecoder::prepare_partial(const FrameHeader* header) {
  std::uint8_t* const base = m_read.get();
  const std::size_t partial = m_end - m_begin;
  if (header != nullptr) {
    const std::size_t frame = frame_header_size + header->payload_size;
    if (frame > m_read_size) {
      // Too large for the read buffer: receive the payload straight into the message buffer.
      const std::size_t payload_bytes = partial - frame_header_size;
      m_large_size = header->payload_size;
      m_large_filled = 0;
      if (m_large_capacity < std::max(payload_bytes, std::min(m_large_size, m_read_size))) {
        grow_large(std::min(m_large_size, std::max(payload_bytes, m_read_size)));
      }
      if (payload_bytes > 0) {
        std::memcpy(m_large.get(), base + m_begin + frame_header_size, payload_bytes);
      }
      m_large_filled = payload_bytes;
      m_in_large = true;
      m_begin = 0;
      m_end = 0;
      return;
    }
    const bool fits_in_place = m_begin + frame <= m_read_size;
    const bool little_room_left = m_read_size - m_end < m_read_size / 4;
    if (fits_in_place && !(little_room_left && partial <= m_read_size / 16)) {
      return;
    }
  } else {
    const bool header_fits_in_place = m_begin + frame_header_size <= m_read_size;
    if (header_fits_in_place && m_read_size - m_end >= m_read_size / 4) {
      return;
    }
  }
  // The frame straddles the end of the buffer (or leaves too little room for a good recv): move
  // its bytes to the front.
  std::memmove(base, base + m_begin, partial);
  m_begin = 0;
  m_end = partial;
}

} // namespace netio3::asyncmsg
