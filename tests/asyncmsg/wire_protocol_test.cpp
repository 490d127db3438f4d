// Unit tests of the TCP backend's wire protocol: handshake codec and frame decoder (pure code).

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "asyncmsg/WireProtocol.hpp"

namespace netio3::asyncmsg {
namespace {

/// Bytes of a stream of frames carrying `messages`.
std::vector<std::uint8_t> encode_frames(const std::vector<std::vector<std::uint8_t>>& messages) {
  std::vector<std::uint8_t> stream;
  for (const auto& message : messages) {
    std::uint8_t header[frame_header_size];
    encode_frame_header(header, static_cast<std::uint32_t>(message.size()));
    stream.insert(stream.end(), header, header + frame_header_size);
    stream.insert(stream.end(), message.begin(), message.end());
  }
  return stream;
}

std::vector<std::uint8_t> pattern(std::size_t size, std::uint8_t seed) {
  std::vector<std::uint8_t> bytes(size);
  for (std::size_t index = 0; index < size; ++index) {
    bytes[index] = static_cast<std::uint8_t>(seed + index * 7U);
  }
  return bytes;
}

/// Feeds `stream` to `decoder` in pieces of the sizes `next_piece` gives, collecting the messages.
template <typename NextPiece>
FrameError feed(FrameDecoder& decoder, std::span<const std::uint8_t> stream, NextPiece next_piece,
                std::vector<std::vector<std::uint8_t>>& out) {
  std::size_t offset = 0;
  while (offset < stream.size()) {
    const std::span<std::uint8_t> area = decoder.receive_area();
    if (area.empty()) {
      return decoder.error();
    }
    const std::size_t count = std::min({area.size(), stream.size() - offset, next_piece()});
    std::copy_n(stream.data() + offset, count, area.data());
    offset += count;
    const FrameError error = decoder.on_received(count, [&](std::span<const std::uint8_t> message) {
      out.emplace_back(message.begin(), message.end());
      return true;
    });
    if (error != FrameError::none) {
      return error;
    }
  }
  return FrameError::none;
}

TEST(Handshake, HelloRoundTrip) {
  const auto bytes = encode_hello();
  Hello hello;
  EXPECT_EQ(decode_hello(bytes, hello), HandshakeError::none);
  EXPECT_EQ(hello.version, protocol_version);
  EXPECT_EQ(bytes[0], 'N');
  EXPECT_EQ(bytes[3], '3');
}

TEST(Handshake, HelloErrors) {
  Hello hello;
  auto bytes = encode_hello();
  bytes[0] = 'X';
  EXPECT_EQ(decode_hello(bytes, hello), HandshakeError::bad_magic);
  bytes = encode_hello();
  bytes[4] = reply_kind;
  EXPECT_EQ(decode_hello(bytes, hello), HandshakeError::bad_kind);
  bytes = encode_hello();
  bytes[5] = 2;
  EXPECT_EQ(decode_hello(bytes, hello), HandshakeError::unsupported_version);
  EXPECT_EQ(hello.version, 2);
  bytes = encode_hello();
  bytes[7] = 1;
  EXPECT_EQ(decode_hello(bytes, hello), HandshakeError::bad_reserved);
}

TEST(Handshake, ReplyRoundTripAndClamp) {
  Reply reply;
  auto bytes = encode_reply(ReplyStatus::accepted, 123456789);
  ASSERT_EQ(decode_reply(bytes, reply), HandshakeError::none);
  EXPECT_EQ(reply.status, ReplyStatus::accepted);
  EXPECT_EQ(reply.max_message_size, 123456789U);
  bytes = encode_reply(ReplyStatus::too_many_connections, std::uint64_t{1} << 40U);
  ASSERT_EQ(decode_reply(bytes, reply), HandshakeError::none);
  EXPECT_EQ(reply.status, ReplyStatus::too_many_connections);
  EXPECT_EQ(reply.max_message_size, max_frame_payload);
}

TEST(Handshake, ReplyErrors) {
  Reply reply;
  auto bytes = encode_reply(ReplyStatus::rejected, 10);
  bytes[1] = 0;
  EXPECT_EQ(decode_reply(bytes, reply), HandshakeError::bad_magic);
  bytes = encode_reply(ReplyStatus::rejected, 10);
  bytes[4] = hello_kind;
  EXPECT_EQ(decode_reply(bytes, reply), HandshakeError::bad_kind);
  bytes = encode_reply(ReplyStatus::rejected, 10);
  bytes[6] = 9;
  EXPECT_EQ(decode_reply(bytes, reply), HandshakeError::bad_status);
  bytes = encode_reply(ReplyStatus::accepted, 10);
  bytes[5] = 7;
  EXPECT_EQ(decode_reply(bytes, reply), HandshakeError::unsupported_version);
  // A receiver of another version may still say "unsupported version" in its own version.
  bytes = encode_reply(ReplyStatus::unsupported_version, 0);
  bytes[5] = 7;
  EXPECT_EQ(decode_reply(bytes, reply), HandshakeError::none);
  EXPECT_EQ(reply.status, ReplyStatus::unsupported_version);
  bytes = encode_reply(ReplyStatus::accepted, 10);
  bytes[7] = 1;
  EXPECT_EQ(decode_reply(bytes, reply), HandshakeError::bad_reserved);
}

TEST(FrameHeader, RoundTripAndChecks) {
  std::uint8_t header[frame_header_size];
  for (const std::uint32_t length : {0U, 1U, 64U, 65535U, 65536U, 0x12345678U, 0xFFFFFFFFU}) {
    encode_frame_header(header, length);
    FrameHeader parsed;
    ASSERT_EQ(parse_frame_header(header, max_frame_payload, parsed), FrameError::none) << length;
    EXPECT_EQ(parsed.payload_size, length);
  }
  encode_frame_header(header, 100);
  FrameHeader parsed;
  EXPECT_EQ(parse_frame_header(header, 99, parsed), FrameError::too_large);
  EXPECT_EQ(parsed.payload_size, 100U);
  EXPECT_EQ(parse_frame_header(header, 100, parsed), FrameError::none);
  header[0] = 'X';
  EXPECT_EQ(parse_frame_header(header, 100, parsed), FrameError::bad_type);
  encode_frame_header(header, 100);
  header[1] = 1;
  EXPECT_EQ(parse_frame_header(header, 100, parsed), FrameError::bad_flags);
  encode_frame_header(header, 100);
  header[4] = 101; // length changed without the check
  EXPECT_EQ(parse_frame_header(header, 1000, parsed), FrameError::bad_check);
}

TEST(FrameDecoder, ManySmallMessagesInOneReceive) {
  std::vector<std::vector<std::uint8_t>> messages;
  for (std::size_t index = 0; index < 500; ++index) {
    messages.push_back(pattern(64, static_cast<std::uint8_t>(index)));
  }
  messages.emplace_back(); // an empty message is a message too
  const auto stream = encode_frames(messages);
  FrameDecoder decoder{1024};
  std::vector<std::vector<std::uint8_t>> received;
  ASSERT_EQ(feed(
                decoder, stream, [] { return std::size_t{1} << 30U; }, received),
            FrameError::none);
  EXPECT_EQ(received, messages);
  EXPECT_EQ(decoder.partial_bytes(), 0U);
  EXPECT_EQ(decoder.large_capacity(), 0U); // nothing needed the message buffer
}

TEST(FrameDecoder, ByteByByte) {
  std::vector<std::vector<std::uint8_t>> messages{pattern(0, 1), pattern(1, 2), pattern(7, 3),
                                                  pattern(8, 4), pattern(9, 5), pattern(300, 6)};
  const auto stream = encode_frames(messages);
  FrameDecoder decoder{1000, 64};
  std::vector<std::vector<std::uint8_t>> received;
  ASSERT_EQ(feed(
                decoder, stream, [] { return std::size_t{1}; }, received),
            FrameError::none);
  EXPECT_EQ(received, messages);
}

TEST(FrameDecoder, RandomSplitsAndSizesAcrossBufferEnd) {
  std::mt19937 random{12345};
  std::uniform_int_distribution<std::size_t> size_of{0, 3000};
  std::vector<std::vector<std::uint8_t>> messages;
  for (std::size_t index = 0; index < 400; ++index) {
    messages.push_back(pattern(size_of(random), static_cast<std::uint8_t>(index)));
  }
  const auto stream = encode_frames(messages);
  for (const std::size_t read_buffer : {16UL, 100UL, 1024UL, 4096UL}) {
    FrameDecoder decoder{3000, read_buffer};
    std::uniform_int_distribution<std::size_t> piece_of{1, 5000};
    std::vector<std::vector<std::uint8_t>> received;
    ASSERT_EQ(feed(
                  decoder, stream, [&] { return piece_of(random); }, received),
              FrameError::none);
    EXPECT_EQ(received, messages) << "read buffer " << read_buffer;
    EXPECT_EQ(decoder.partial_bytes(), 0U);
    EXPECT_LE(decoder.large_capacity(), 3000U); // never beyond the largest message
  }
}

TEST(FrameDecoder, LargeMessageGrowsWithReceivedBytesOnly) {
  const std::size_t limit = std::size_t{4} << 20U;
  FrameDecoder decoder{limit, 1024};
  std::uint8_t header[frame_header_size];
  encode_frame_header(header, static_cast<std::uint32_t>(limit));
  auto area = decoder.receive_area();
  std::copy_n(header, frame_header_size, area.data());
  std::vector<std::vector<std::uint8_t>> received;
  const auto collect = [&](std::span<const std::uint8_t> message) {
    received.emplace_back(message.begin(), message.end());
    return true;
  };
  ASSERT_EQ(decoder.on_received(frame_header_size, collect), FrameError::none);
  // Claiming 4 MiB costs no 4 MiB allocation: the message buffer grows with data that arrived.
  EXPECT_LT(decoder.large_capacity(), std::size_t{64} << 10U);
  const auto payload = pattern(limit, 9);
  std::size_t offset = 0;
  while (offset < payload.size()) {
    area = decoder.receive_area();
    ASSERT_FALSE(area.empty());
    const std::size_t count = std::min(area.size(), payload.size() - offset);
    std::copy_n(payload.data() + offset, count, area.data());
    offset += count;
    EXPECT_LE(decoder.large_capacity(), std::max<std::size_t>(2 * offset + 1024, 64U << 10U));
    ASSERT_EQ(decoder.on_received(count, collect), FrameError::none);
  }
  ASSERT_EQ(received.size(), 1U);
  EXPECT_EQ(received[0], payload);
  // A following small message goes through the read buffer again.
  const auto small = encode_frames({pattern(10, 1)});
  area = decoder.receive_area();
  std::copy(small.begin(), small.end(), area.data());
  ASSERT_EQ(decoder.on_received(small.size(), collect), FrameError::none);
  ASSERT_EQ(received.size(), 2U);
  EXPECT_EQ(received[1], pattern(10, 1));
}

// A large message's last bytes and the messages after it fit one scatter read (receive_areas):
// the decoder hands out the rest of the message and then its read buffer, and on_received takes a
// count that covers both. Each piece size is tried, so every split of the tail is covered.
TEST(FrameDecoder, LargeMessageTailAndNextMessagesArriveInOneScatterRead) {
  const std::size_t read_buffer = 1024;
  const auto large = pattern(3000, 4);
  const std::vector<std::vector<std::uint8_t>> messages{large, pattern(10, 5), pattern(700, 6), large, pattern(1, 7)};
  const auto stream = encode_frames(messages);
  for (const std::size_t piece : {1U, 7U, 100U, 1000U, 2000U, 5000U}) {
    FrameDecoder decoder{4096, read_buffer};
    std::vector<std::vector<std::uint8_t>> received;
    std::size_t offset = 0;
    std::size_t scatter_reads = 0;
    while (offset < stream.size()) {
      std::array<std::span<std::uint8_t>, 2> areas;
      const std::size_t count = decoder.receive_areas(areas);
      ASSERT_GE(count, 1U);
      std::size_t taken = 0;
      for (std::size_t index = 0; index < count; ++index) {
        const std::size_t part = std::min({areas[index].size(), stream.size() - offset, piece - taken});
        std::copy_n(stream.data() + offset, part, areas[index].data());
        offset += part;
        taken += part;
        if (part < areas[index].size()) {
          break; // a read fills its areas in order
        }
      }
      scatter_reads += count == 2 && taken > areas[0].size() ? 1 : 0;
      ASSERT_EQ(decoder.on_received(taken,
                                    [&](std::span<const std::uint8_t> message) {
                                      received.emplace_back(message.begin(), message.end());
                                      return true;
                                    }),
                FrameError::none);
    }
    EXPECT_EQ(received, messages) << "pieces of " << piece;
    EXPECT_EQ(decoder.partial_bytes(), 0U);
    if (piece >= 2000) {
      EXPECT_GE(scatter_reads, 1U) << "pieces of " << piece << ": no read went past a large message's end";
    }
  }
}

TEST(FrameDecoder, OversizedClaimFailsBeforeAnyAllocation) {
  FrameDecoder decoder{1000, 1024};
  const auto stream = encode_frames({pattern(10, 1), pattern(1001, 2), pattern(5, 3)});
  std::vector<std::vector<std::uint8_t>> received;
  EXPECT_EQ(feed(
                decoder, stream, [] { return std::size_t{1} << 20U; }, received),
            FrameError::too_large);
  EXPECT_EQ(decoder.error(), FrameError::too_large);
  EXPECT_EQ(decoder.claimed_size(), 1001U);
  EXPECT_EQ(decoder.large_capacity(), 0U);
  ASSERT_EQ(received.size(), 1U);              // the good message before it was delivered
  EXPECT_TRUE(decoder.receive_area().empty()); // a failed decoder takes nothing more
}

TEST(FrameDecoder, MalformedHeadersAreRejected) {
  for (const std::size_t corrupt_at : {0UL, 1UL, 2UL, 5UL}) {
    auto stream = encode_frames({pattern(20, 1), pattern(20, 2)});
    stream[frame_header_size + 20 + corrupt_at] ^= 0x40U;
    FrameDecoder decoder{1000};
    std::vector<std::vector<std::uint8_t>> received;
    const FrameError error = feed(
        decoder, stream, [] { return std::size_t{3}; }, received);
    EXPECT_NE(error, FrameError::none) << "corrupted byte " << corrupt_at;
    EXPECT_EQ(received.size(), 1U);
  }
}

TEST(FrameDecoder, RandomBytesAreRejectedQuickly) {
  std::mt19937 random{777};
  std::uniform_int_distribution<int> byte{0, 255};
  std::size_t rejected = 0;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<std::uint8_t> garbage(64);
    for (auto& value : garbage) {
      value = static_cast<std::uint8_t>(byte(random));
    }
    FrameDecoder decoder{1U << 20U};
    std::vector<std::vector<std::uint8_t>> received;
    if (feed(
            decoder, garbage, [] { return std::size_t{64}; }, received) != FrameError::none) {
      ++rejected;
    }
  }
  EXPECT_EQ(rejected, 200U); // type, flags and check make a random header fail at once
}

TEST(FrameDecoder, StopsWhenTheCallbackSaysSo) {
  const auto stream = encode_frames({pattern(5, 1), pattern(5, 2), pattern(5, 3)});
  FrameDecoder decoder{100};
  auto area = decoder.receive_area();
  std::copy(stream.begin(), stream.end(), area.data());
  int calls = 0;
  EXPECT_EQ(decoder.on_received(stream.size(),
                                [&](std::span<const std::uint8_t>) {
                                  ++calls;
                                  return false;
                                }),
            FrameError::none);
  EXPECT_EQ(calls, 1);
}

TEST(FrameDecoder, DeliversStraightFromTheReadBuffer) {
  const auto stream = encode_frames({pattern(100, 1), pattern(100, 2)});
  FrameDecoder decoder{1000, 4096};
  const auto area = decoder.receive_area();
  std::copy(stream.begin(), stream.end(), area.data());
  std::vector<const std::uint8_t*> where;
  ASSERT_EQ(decoder.on_received(stream.size(),
                                [&](std::span<const std::uint8_t> message) {
                                  where.push_back(message.data());
                                  return true;
                                }),
            FrameError::none);
  ASSERT_EQ(where.size(), 2U);
  EXPECT_EQ(where[0], area.data() + frame_header_size);
  EXPECT_EQ(where[1], area.data() + 2 * frame_header_size + 100);
}

} // namespace
} // namespace netio3::asyncmsg
