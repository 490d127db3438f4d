// libFuzzer target: the TCP backend's frame decoder (src/asyncmsg/WireProtocol.hpp).
//
// Input layout: byte 0 chooses the receive limit, byte 1 the read buffer size, byte 2 seeds the
// sizes of the pieces the stream is cut into; the rest is the byte stream of one connection.
// Differential check: the messages the decoder delivers, whatever the cutting, must be exactly
// those a straightforward parse of the whole stream finds, and the decoder must stop with the
// same error; memory must never exceed the limit.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "asyncmsg/WireProtocol.hpp"

using netio3::asyncmsg::frame_header_size;
using netio3::asyncmsg::FrameDecoder;
using netio3::asyncmsg::FrameError;
using netio3::asyncmsg::FrameHeader;
using netio3::asyncmsg::parse_frame_header;

namespace {

void check(bool condition) {
  if (!condition) {
    std::abort();
  }
}

struct Reference {
  std::vector<std::vector<std::uint8_t>> messages;
  FrameError error{FrameError::none};
};

/// The obvious parse of a whole stream.
Reference parse_whole(std::span<const std::uint8_t> stream, std::uint64_t limit) {
  Reference result;
  std::size_t offset = 0;
  while (stream.size() - offset >= frame_header_size) {
    FrameHeader header;
    const FrameError error = parse_frame_header(stream.data() + offset, limit, header);
    if (error != FrameError::none) {
      result.error = error;
      return result;
    }
    if (stream.size() - offset - frame_header_size < header.payload_size) {
      return result; // incomplete last frame
    }
    const auto* start = stream.data() + offset + frame_header_size;
    result.messages.emplace_back(start, start + header.payload_size);
    offset += frame_header_size + header.payload_size;
  }
  return result;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) {
    return 0;
  }
  const std::uint64_t limits[] = {0, 1, 7, 64, 1000, 4096, 70000, 1U << 20U};
  const std::uint64_t limit = limits[data[0] % std::size(limits)];
  const std::size_t read_sizes[] = {16, 17, 64, 100, 1024, 65536};
  const std::size_t read_size = read_sizes[data[1] % std::size(read_sizes)];
  std::uint32_t cut_state = data[2] * 2654435761U + 1;
  const std::span<const std::uint8_t> stream{data + 3, size - 3};

  const Reference reference = parse_whole(stream, limit);

  FrameDecoder decoder{limit, read_size};
  std::vector<std::vector<std::uint8_t>> delivered;
  FrameError error = FrameError::none;
  std::size_t offset = 0;
  while (offset < stream.size() && error == FrameError::none) {
    // Reads as the backend makes them: one area, or two (the end of a large message, then the
    // read buffer) filled in order by one scatter read.
    std::array<std::span<std::uint8_t>, 2> areas;
    const std::size_t area_count = decoder.receive_areas(areas);
    check(area_count >= 1);
    check(areas[0].data() == decoder.receive_area().data() && areas[0].size() == decoder.receive_area().size());
    cut_state = cut_state * 1103515245U + 12345U;
    const std::size_t piece = 1 + (cut_state >> 16U) % 300;
    std::size_t count = 0;
    for (std::size_t index = 0; index < area_count && count < piece && offset < stream.size(); ++index) {
      const std::size_t part = std::min({areas[index].size(), stream.size() - offset, piece - count});
      std::copy_n(stream.data() + offset, part, areas[index].data());
      offset += part;
      count += part;
      if (part < areas[index].size()) {
        break;
      }
    }
    error = decoder.on_received(count, [&](std::span<const std::uint8_t> message) {
      check(message.size() <= limit);
      delivered.emplace_back(message.begin(), message.end());
      return true;
    });
    check(decoder.large_capacity() <= limit);
  }
  check(error == reference.error);
  check(delivered == reference.messages);
  if (error != FrameError::none) {
    check(decoder.receive_area().empty());
  }
  return 0;
}
