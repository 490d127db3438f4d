#include "libfabric/Protocol.hpp"

#include <cstring>

namespace netio3::libfabric {
namespace {

// Little-endian stores and loads, byte by byte so that alignment and host order never matter.
template <typename Integer>
void store(std::uint8_t* out, Integer value) noexcept {
  for (std::size_t i = 0; i < sizeof(Integer); ++i) {
    out[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(value) >> (8U * i));
  }
}

template <typename Integer>
Integer load(const std::uint8_t* in) noexcept {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < sizeof(Integer); ++i) {
    value |= static_cast<std::uint64_t>(in[i]) << (8U * i);
  }
  return static_cast<Integer>(value);
}

// Layout shared by both parameter blocks: magic (4), version (2), reserved (2).
void store_preamble(std::uint8_t* out) noexcept {
  store<std::uint32_t>(out, protocol_magic);
  store<std::uint16_t>(out + 4, protocol_version);
  store<std::uint16_t>(out + 6, 0);
}

bool preamble_matches(const std::uint8_t* in) noexcept {
  return load<std::uint32_t>(in) == protocol_magic && load<std::uint16_t>(in + 4) == protocol_version;
}

} // namespace

// Connect request: preamble (8), control_capacity (4), peer_timeout_ms (4).
void encode(const ConnectRequest& request, std::span<std::uint8_t, connect_request_size> out) noexcept {
  std::memset(out.data(), 0, out.size());
  store_preamble(out.data());
  store<std::uint32_t>(out.data() + 8, request.control_capacity);
  store<std::uint32_t>(out.data() + 12, request.peer_timeout_ms);
}

std::optional<ConnectRequest> decode_connect_request(std::span<const std::uint8_t> in) noexcept {
  // Providers may hand over more parameter bytes than were sent (padding), never fewer.
  if (in.size() < connect_request_size || !preamble_matches(in.data())) {
    return std::nullopt;
  }
  ConnectRequest request;
  request.control_capacity = load<std::uint32_t>(in.data() + 8);
  request.peer_timeout_ms = load<std::uint32_t>(in.data() + 12);
  if (request.control_capacity == 0) {
    return std::nullopt;
  }
  return request;
}

// Accept response: preamble (8), initial_credits (4), reserved (4), max_message_size (8).
void encode(const AcceptResponse& response, std::span<std::uint8_t, accept_response_size> out) noexcept {
  std::memset(out.data(), 0, out.size());
  store_preamble(out.data());
  store<std::uint32_t>(out.data() + 8, response.initial_credits);
  store<std::uint64_t>(out.data() + 16, response.max_message_size);
}

std::optional<AcceptResponse> decode_accept_response(std::span<const std::uint8_t> in) noexcept {
  if (in.size() < accept_response_size || !preamble_matches(in.data())) {
    return std::nullopt;
  }
  AcceptResponse response;
  response.initial_credits = load<std::uint32_t>(in.data() + 8);
  response.max_message_size = load<std::uint64_t>(in.data() + 16);
  if (response.initial_credits == 0 || response.max_message_size == 0) {
    return std::nullopt;
  }
  return response;
}

// Wire header: type (1), reserved (3), value (4).
void encode(const WireHeader& header, std::uint8_t* out) noexcept {
  out[0] = static_cast<std::uint8_t>(header.type);
  out[1] = 0;
  out[2] = 0;
  out[3] = 0;
  store<std::uint32_t>(out + 4, header.value);
}

std::optional<WireHeader> decode_wire_header(std::span<const std::uint8_t> message) noexcept {
  if (message.size() < wire_header_size) {
    return std::nullopt;
  }
  const auto type = message[0];
  if (type != static_cast<std::uint8_t>(MessageType::data) && type != static_cast<std::uint8_t>(MessageType::credit) &&
      type != static_cast<std::uint8_t>(MessageType::keepalive)) {
    return std::nullopt;
  }
  WireHeader header;
  header.type = static_cast<MessageType>(type);
  header.value = load<std::uint32_t>(message.data() + 4);
  return header;
}

} // namespace netio3::libfabric
