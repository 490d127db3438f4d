// libFuzzer target: the libfabric backend's decoders (connect request, accept response, message
// header), which read what a remote peer sent. Any input must decode without crashing; whatever
// decodes must satisfy the documented limits and encode back to the same bytes (reserved bytes,
// which are sent as zero and ignored, aside).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "libfabric/Protocol.hpp"

using namespace netio3::libfabric;

namespace {

void check(bool condition) {
  if (!condition) {
    std::abort();
  }
}

/// True when `encoded` equals the first bytes of `input` at every position except `reserved`.
template <std::size_t Size>
bool same_except(const std::array<std::uint8_t, Size>& encoded, const std::uint8_t* input,
                 std::initializer_list<std::size_t> reserved) {
  for (std::size_t i = 0; i < Size; ++i) {
    if (std::find(reserved.begin(), reserved.end(), i) == reserved.end() && encoded[i] != input[i]) {
      return false;
    }
  }
  return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> input{data, size};

  if (const auto request = decode_connect_request(input)) {
    check(size >= connect_request_size && request->control_capacity > 0);
    std::array<std::uint8_t, connect_request_size> encoded{};
    encode(*request, std::span<std::uint8_t, connect_request_size>{encoded});
    check(same_except(encoded, data, {6, 7}));
  }

  if (const auto response = decode_accept_response(input)) {
    check(size >= accept_response_size && response->initial_credits > 0 && response->max_message_size > 0);
    std::array<std::uint8_t, accept_response_size> encoded{};
    encode(*response, std::span<std::uint8_t, accept_response_size>{encoded});
    check(same_except(encoded, data, {6, 7, 12, 13, 14, 15}));
  }

  if (const auto header = decode_wire_header(input)) {
    check(size >= wire_header_size);
    check(header->type == MessageType::data || header->type == MessageType::credit ||
          header->type == MessageType::keepalive);
    std::array<std::uint8_t, wire_header_size> encoded{};
    encode(*header, encoded.data());
    check(same_except(encoded, data, {1, 2, 3}));
  } else {
    check(size < wire_header_size || (data[0] != 1 && data[0] != 2 && data[0] != 3));
  }
  return 0;
}
