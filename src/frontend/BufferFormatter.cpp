#include "netio3/BufferFormatter.hpp"

#include <fmt/format.h>

namespace netio3 {

std::optional<std::string> BufferFormatter::check(std::span<const std::uint8_t> buffer) {
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
