// libFuzzer target: BufferFormatter's decoder, which reads buffers a remote sender (a publisher)
// wrote. Any input must be checked without crashing; a buffer `check` accepts must decode, and
// re-encoding its messages must give a buffer that decodes to the same messages (the encoder may
// drop tags that repeat, so the bytes may be shorter, never different in meaning). A buffer
// `check` rejects must make `decode` throw before delivering anything.

#include <cstdint>
#include <cstdlib>
#include <span>
#include <tuple>
#include <vector>

#include "netio3/BufferFormatter.hpp"

using netio3::BufferFormatter;

namespace {

void check(bool condition) {
  if (!condition) {
    std::abort();
  }
}

using Message = std::tuple<std::uint64_t, std::vector<std::uint8_t>, std::uint8_t>;

std::vector<Message> collect(std::span<const std::uint8_t> buffer) {
  std::vector<Message> messages;
  BufferFormatter::decode_checked(
      buffer, [&](std::uint64_t tag, std::span<const std::uint8_t> payload, std::uint8_t status) {
        messages.emplace_back(tag, std::vector<std::uint8_t>(payload.begin(), payload.end()), status);
      });
  return messages;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> input{data, size};
  if (BufferFormatter::check(input).has_value()) {
    std::size_t delivered = 0;
    try {
      BufferFormatter::decode(input, [&](std::uint64_t, std::span<const std::uint8_t>, std::uint8_t) { ++delivered; });
      check(false); // must have thrown
    } catch (const netio3::MalformedBuffer&) {
    }
    check(delivered == 0);
    return 0;
  }
  const std::vector<Message> messages = collect(input);
  std::vector<std::uint8_t> again(size + messages.size() * BufferFormatter::max_overhead);
  BufferFormatter formatter{again};
  for (const auto& [tag, payload, status] : messages) {
    check(formatter.append(tag, payload, status));
  }
  check(formatter.size() <= size + messages.size()); // at most a status byte more per message
  const std::span<const std::uint8_t> encoded{again.data(), formatter.size()};
  check(!BufferFormatter::check(encoded).has_value());
  check(collect(encoded) == messages);
  return 0;
}
