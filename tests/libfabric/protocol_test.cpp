// Unit tests of the libfabric backend's pure parts: the wire protocol's encoders and decoders, the
// bounce ring and the send-buffer pool.

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <vector>

#include "libfabric/Memory.hpp"
#include "libfabric/Protocol.hpp"

namespace netio3::libfabric {
namespace {

TEST(Protocol, ConnectRequestRoundTrips) {
  std::array<std::uint8_t, connect_request_size> bytes{};
  encode(ConnectRequest{77, 0xfedcba98U}, bytes);
  const auto decoded = decode_connect_request(bytes);
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->control_capacity, 77U);
  EXPECT_EQ(decoded->peer_timeout_ms, 0xfedcba98U);
  // Little-endian magic first: "FL3N" in memory.
  EXPECT_EQ(bytes[0], 0x46);
  EXPECT_EQ(bytes[3], 0x4e);
  // Version 2 (little-endian) at offset 4, the capacity at 8, the peer timeout at 12.
  EXPECT_EQ(bytes[4], 2);
  EXPECT_EQ(bytes[5], 0);
  EXPECT_EQ(bytes[8], 77);
  EXPECT_EQ(bytes[12], 0x98);
  EXPECT_EQ(bytes[15], 0xfe);
  encode(ConnectRequest{1, 0}, bytes);
  EXPECT_EQ(decode_connect_request(bytes)->peer_timeout_ms, 0U) << "0: the sender sends no keepalives";
}

TEST(Protocol, Version1PeersAreRejected) {
  // A version-1 peer knows no keepalive: it would close the connection at the first one.
  std::array<std::uint8_t, connect_request_size> request{};
  encode(ConnectRequest{4, 1000}, request);
  request[4] = 1;
  EXPECT_FALSE(decode_connect_request(request));
  std::array<std::uint8_t, accept_response_size> response{};
  encode(AcceptResponse{4096, 4}, response);
  ASSERT_TRUE(decode_accept_response(response));
  response[4] = 1;
  EXPECT_FALSE(decode_accept_response(response));
}

TEST(Protocol, ConnectRequestRejectsForeignData) {
  std::array<std::uint8_t, connect_request_size> bytes{};
  encode(ConnectRequest{4}, bytes);
  EXPECT_FALSE(decode_connect_request(std::span<const std::uint8_t>{bytes.data(), bytes.size() - 1}));
  auto wrong_magic = bytes;
  wrong_magic[0] ^= 0xffU;
  EXPECT_FALSE(decode_connect_request(wrong_magic));
  auto wrong_version = bytes;
  wrong_version[4] = static_cast<std::uint8_t>(protocol_version + 1);
  EXPECT_FALSE(decode_connect_request(wrong_version));
  std::array<std::uint8_t, connect_request_size> zero_capacity{};
  encode(ConnectRequest{0}, zero_capacity);
  EXPECT_FALSE(decode_connect_request(zero_capacity));
  EXPECT_FALSE(decode_connect_request({}));
}

TEST(Protocol, AcceptResponseRoundTripsLargeSizes) {
  std::array<std::uint8_t, accept_response_size> bytes{};
  encode(AcceptResponse{(std::uint64_t{1} << 40U) + 3, 1024}, bytes);
  // Providers may pad the parameter data: trailing bytes are ignored.
  std::vector<std::uint8_t> padded(bytes.begin(), bytes.end());
  padded.resize(64, 0xee);
  const auto decoded = decode_accept_response(padded);
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->max_message_size, (std::uint64_t{1} << 40U) + 3);
  EXPECT_EQ(decoded->initial_credits, 1024U);
}

TEST(Protocol, AcceptResponseRejectsUnusableValues) {
  std::array<std::uint8_t, accept_response_size> bytes{};
  encode(AcceptResponse{4096, 0}, bytes);
  EXPECT_FALSE(decode_accept_response(bytes)) << "no credits";
  encode(AcceptResponse{0, 4}, bytes);
  EXPECT_FALSE(decode_accept_response(bytes)) << "no message size";
  encode(AcceptResponse{4096, 4}, bytes);
  EXPECT_FALSE(decode_accept_response(std::span<const std::uint8_t>{bytes.data(), 20})) << "truncated";
  std::array<std::uint8_t, connect_request_size> request{};
  encode(ConnectRequest{4}, request);
  EXPECT_FALSE(decode_accept_response(request)) << "a connect request is too short to be a response";
}

TEST(Protocol, WireHeaderRoundTripsAndRejectsGarbage) {
  std::array<std::uint8_t, 16> message{};
  encode(WireHeader{MessageType::credit, 0xfedcba98U}, message.data());
  const auto decoded = decode_wire_header(message);
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->type, MessageType::credit);
  EXPECT_EQ(decoded->value, 0xfedcba98U);
  EXPECT_FALSE(decode_wire_header(std::span<const std::uint8_t>{message.data(), wire_header_size - 1}));
  message[0] = 0;
  EXPECT_FALSE(decode_wire_header(message));
  message[0] = 4;
  EXPECT_FALSE(decode_wire_header(message));
  message[0] = 0xff;
  EXPECT_FALSE(decode_wire_header(message));
  message[0] = 1;
  EXPECT_EQ(decode_wire_header(message)->type, MessageType::data);
}

TEST(Protocol, KeepaliveIsAHeaderOnlyMessageWithASequenceNumber) {
  std::array<std::uint8_t, wire_header_size> message{};
  encode(WireHeader{MessageType::keepalive, 41}, message.data());
  EXPECT_EQ(message[0], 3) << "type 3 on the wire";
  EXPECT_EQ(message[1], 0);
  EXPECT_EQ(message[4], 41);
  const auto decoded = decode_wire_header(message);
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->type, MessageType::keepalive);
  EXPECT_EQ(decoded->value, 41U);
}

TEST(BounceRing, ReusesSpaceInOrderAndWraps) {
  BounceRing ring{1000, 8};
  std::size_t a_offset = 0;
  std::size_t b_offset = 0;
  std::size_t c_offset = 0;
  std::size_t d_offset = 0;
  const auto a = ring.allocate(400, a_offset);
  const auto b = ring.allocate(400, b_offset);
  ASSERT_NE(a, BounceRing::no_chunk);
  ASSERT_NE(b, BounceRing::no_chunk);
  EXPECT_EQ(a_offset, 0U);
  EXPECT_EQ(b_offset, 400U);
  EXPECT_EQ(ring.allocate(300, c_offset), BounceRing::no_chunk) << "only 200 bytes left at the end";
  ring.release(b); // out of order: nothing is reusable until a comes back
  EXPECT_EQ(ring.allocate(300, c_offset), BounceRing::no_chunk);
  ring.release(a);
  EXPECT_TRUE(ring.empty());
  const auto c = ring.allocate(300, c_offset);
  ASSERT_NE(c, BounceRing::no_chunk);
  EXPECT_EQ(c_offset, 0U) << "an empty ring starts over";
  const auto d = ring.allocate(600, d_offset);
  ASSERT_NE(d, BounceRing::no_chunk);
  EXPECT_EQ(d_offset, 300U);
  ring.release(c);
  // 100 bytes free at the end, 300 at the start: a 250-byte chunk wraps to the start.
  std::size_t e_offset = 0;
  const auto e = ring.allocate(250, e_offset);
  ASSERT_NE(e, BounceRing::no_chunk);
  EXPECT_EQ(e_offset, 0U);
  std::size_t f_offset = 0;
  EXPECT_EQ(ring.allocate(100, f_offset), BounceRing::no_chunk) << "only 50 bytes before the oldest chunk";
  const auto f = ring.allocate(50, f_offset);
  ASSERT_NE(f, BounceRing::no_chunk);
  EXPECT_EQ(f_offset, 250U);
  ring.release(d);
  ring.release(e);
  ring.release(f);
  EXPECT_TRUE(ring.empty());
  EXPECT_EQ(ring.allocate(1001, f_offset), BounceRing::no_chunk) << "larger than the ring";
}

TEST(BounceRing, LimitsOutstandingChunks) {
  BounceRing ring{1U << 20U, 3};
  std::size_t offset = 0;
  const auto first = ring.allocate(64, offset);
  ASSERT_NE(first, BounceRing::no_chunk);
  ASSERT_NE(ring.allocate(64, offset), BounceRing::no_chunk);
  ASSERT_NE(ring.allocate(64, offset), BounceRing::no_chunk);
  EXPECT_EQ(ring.allocate(64, offset), BounceRing::no_chunk);
  ring.release(first);
  EXPECT_NE(ring.allocate(64, offset), BounceRing::no_chunk);
}

TEST(SendBufferPool, HandsOutEachBufferOnceAndKnowsItsHolder) {
  SendBufferPool pool{3, 100, wire_header_size};
  int holder_a = 0;
  int holder_b = 0;
  NetworkBuffer* first = pool.take(&holder_a);
  NetworkBuffer* second = pool.take(&holder_b);
  NetworkBuffer* third = pool.take(&holder_a);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  ASSERT_NE(third, nullptr);
  EXPECT_EQ(pool.take(&holder_a), nullptr);
  EXPECT_EQ(first->size(), 100U);
  EXPECT_EQ(first->data().data(), pool.frame(first->index()) + wire_header_size);
  EXPECT_TRUE(pool.is_handed_out_to(first, &holder_a));
  EXPECT_FALSE(pool.is_handed_out_to(first, &holder_b));
  pool.mark_in_flight(first->index());
  EXPECT_FALSE(pool.is_handed_out_to(first, &holder_a)) << "in flight: not the caller's any more";
  pool.reclaim(&holder_a);
  EXPECT_EQ(pool.free_count(), 2U);
  EXPECT_TRUE(pool.is_handed_out_to(second, &holder_b));
  first = pool.take(&holder_b);
  ASSERT_NE(first, nullptr);
  first->set_pos(5);
  pool.give_back(first->index());
  NetworkBuffer* again = pool.take(&holder_b);
  EXPECT_EQ(again->pos(), 0U) << "a buffer comes back empty";
}

} // namespace
} // namespace netio3::libfabric
