#include "netio3/BufferFormatter.hpp"

#include <fmt/format.h>

namespace netio3 {

namespace {

/// The verdict of `check` without its explanation, in one tight pass: what every received buffer
/// goes through before delivery. `check` explains a fault only when this finds one.
bool well_formed(std::span<const std::uint8_t> buffer) noexcept {
  const std::uint8_t* in = buffer.data();
  const std::uint8_t* const end = in + buffer.size();
  if (in == end) {
    return true;
  }
  if (buffer.size() < BufferFormatter::header_size) {
    return false;
  }
  std::uint32_t first = 0;
  std::memcpy(&first, in, BufferFormatter::header_size);
  if constexpr (std::endian::native == std::endian::big) {
    first = __builtin_bswap32(first);
  }
  if ((first & BufferFormatter::tag_flag) == 0) {
    return false; // the first message of a buffer must carry its tag
  }
  while (in != end) {
    const auto left = static_cast<std::size_t>(end - in);
    if (left < BufferFormatter::header_size) {
      return false;
    }
    std::uint32_t header = 0;
    std::memcpy(&header, in, BufferFormatter::header_size);
    if constexpr (std::endian::native == std::endian::big) {
      header = __builtin_bswap32(header);
    }
    // header + status (bit 30) + tag (bit 31); the size is below 2^30, so the sum cannot wrap.
    const std::size_t length = BufferFormatter::header_size + ((header >> 30U) & 1U) * BufferFormatter::status_size +
                               (header >> 31U) * BufferFormatter::tag_size + (header & BufferFormatter::size_mask);
    if (length > left) {
      return false;
    }
    in += length;
  }
  return true;
}

} // namespace

std::optional<std::string> BufferFormatter::check(std::span<const std::uint8_t> buffer) {
  if (well_formed(buffer)) {
    return std::nullopt;
  }
  std::size_t offset = 0;
  std::size_t message = 0;
  while (offset < buffer.size()) {
    const std::size_t left = buffer.size() - offset;
    if (left < header_size) {
      return fmt::format("message {} at offset {}: {} bytes left, too few for a {}-byte header", message, offset, left,
                         header_size);
    }
    std::uint32_t header = 0;
    std::memcpy(&header, buffer.data() + offset, header_size);
    header = from_little_endian(header);
    const bool has_tag = (header & tag_flag) != 0;
    const bool has_status = (header & status_flag) != 0;
    if (message == 0 && !has_tag) {
      return fmt::format("message 0 at offset 0 carries no tag (header {:#010x}): the first message of a buffer must",
                         header);
    }
    const std::size_t fields = header_size + (has_status ? status_size : 0) + (has_tag ? tag_size : 0);
    if (left < fields) {
      return fmt::format("message {} at offset {}: header {:#010x} announces {} bytes of header, status and tag, "
                         "but only {} are left",
                         message, offset, header, fields, left);
    }
    const std::size_t payload_size = header & size_mask;
    if (payload_size > left - fields) {
      return fmt::format("message {} at offset {}: a payload of {} bytes runs past the end of the buffer ({} bytes "
                         "left after its header)",
                         message, offset, payload_size, left - fields);
    }
    offset += fields + payload_size;
    ++message;
  }
  return std::nullopt;
}

} // namespace netio3
