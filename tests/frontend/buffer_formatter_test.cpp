// BufferFormatter: the buffered wire format, byte by byte, and every way a buffer can be malformed.

#include <gtest/gtest.h>

#include <array>
#include <random>
#include <tuple>
#include <vector>

#include "netio3/BufferFormatter.hpp"

namespace netio3 {
namespace {

using Message = std::tuple<std::uint64_t, std::vector<std::uint8_t>, std::uint8_t>;

std::vector<Message> decode_all(std::span<const std::uint8_t> buffer) {
  std::vector<Message> messages;
  BufferFormatter::decode(buffer, [&](std::uint64_t tag, std::span<const std::uint8_t> payload, std::uint8_t status) {
    messages.emplace_back(tag, std::vector<std::uint8_t>(payload.begin(), payload.end()), status);
  });
  return messages;
}

TEST(BufferFormatter, EncodesTheDocumentedBytes) {
  std::array<std::uint8_t, 64> memory{};
  BufferFormatter formatter{memory};
  const std::array<std::uint8_t, 3> first{0xA1, 0xA2, 0xA3};
  const std::array<std::uint8_t, 1> second{0xB1};
  const std::array<std::uint8_t, 2> third{0xC1, 0xC2};
  ASSERT_TRUE(formatter.append(0x0102030405060708ULL, first));                             // tag (first message)
  ASSERT_TRUE(formatter.append(0x0102030405060708ULL, second, 7));                         // same tag, a status
  ASSERT_TRUE(formatter.append(0x1122334455667788ULL, third));                             // new tag
  const std::vector<std::uint8_t> expected{0x03, 0x00, 0x00, 0x80,                         // size 3, tag flag
                                           0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // tag, little-endian
                                           0xA1, 0xA2, 0xA3,                               //
                                           0x01, 0x00, 0x00, 0x40, // size 1, status flag, no tag
                                           0x07,                   // status
                                           0xB1,                   //
                                           0x02, 0x00, 0x00, 0x80, // size 2, tag flag
                                           0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, //
                                           0xC1, 0xC2};
  ASSERT_EQ(formatter.size(), expected.size());
  EXPECT_EQ(std::vector<std::uint8_t>(memory.begin(), memory.begin() + formatter.size()), expected);
  EXPECT_EQ(formatter.message_count(), 3U);
}

TEST(BufferFormatter, RoundTripsRandomMessages) {
  std::mt19937_64 random{12345};
  std::vector<std::uint8_t> memory(1U << 16U);
  for (int round = 0; round < 200; ++round) {
    BufferFormatter formatter{memory};
    std::vector<Message> sent;
    for (;;) {
      const std::uint64_t tag = random() % 4 == 0 ? random() : (sent.empty() ? 1 : std::get<0>(sent.back()));
      std::vector<std::uint8_t> payload(random() % 300);
      for (auto& byte : payload) {
        byte = static_cast<std::uint8_t>(random());
      }
      const auto status = static_cast<std::uint8_t>(random() % 3 == 0 ? random() : 0);
      if (!formatter.append(tag, payload, status)) {
        break;
      }
      sent.emplace_back(tag, std::move(payload), status);
    }
    ASSERT_FALSE(sent.empty());
    EXPECT_EQ(decode_all(std::span{memory}.first(formatter.size())), sent) << "round " << round;
  }
}

TEST(BufferFormatter, AppendRefusesWhatDoesNotFitAndWritesNothing) {
  std::array<std::uint8_t, 20> memory{};
  BufferFormatter formatter{memory};
  const std::array<std::uint8_t, 8> payload{};
  EXPECT_EQ(formatter.encoded_size(5, payload.size(), 0), 4U + 8U + 8U);
  ASSERT_TRUE(formatter.append(5, payload)); // exactly 20 bytes
  EXPECT_FALSE(formatter.append(5, {}));     // not even an empty message (4 bytes) fits
  EXPECT_EQ(formatter.size(), 20U);
  formatter.reset(memory);
  const std::array<std::uint8_t, 9> too_large{};
  EXPECT_FALSE(formatter.append(5, too_large));
  EXPECT_TRUE(formatter.empty());
  EXPECT_EQ(formatter.size(), 0U);
}

TEST(BufferFormatter, EmptyPayloadsAndTheLoneMessageHeader) {
  const BufferFormatter::MessageHeader header = BufferFormatter::lone_message_header(42, 0, 9);
  ASSERT_EQ(header.size, 13U);
  const auto messages = decode_all(header.span());
  ASSERT_EQ(messages.size(), 1U);
  EXPECT_EQ(std::get<0>(messages[0]), 42U);
  EXPECT_TRUE(std::get<1>(messages[0]).empty());
  EXPECT_EQ(std::get<2>(messages[0]), 9U);
  EXPECT_EQ(BufferFormatter::lone_message_header(42, 5, 0).size, 12U); // no status byte for status 0
  EXPECT_EQ(decode_all({}).size(), 0U);                                // an empty buffer holds no message
}

/// Each malformed buffer, and the words its rejection must contain.
struct Malformed {
  std::vector<std::uint8_t> bytes;
  std::string names;
};

TEST(BufferFormatter, RejectsMalformedBuffersAsAWholeWithTheReason) {
  const std::vector<Malformed> cases{
      {{0x01, 0x00, 0x00}, "too few for a 4-byte header"},
      {{0x00, 0x00, 0x00, 0x00}, "carries no tag"},
      {{0x00, 0x00, 0x00, 0x80, 0x01, 0x02}, "announces 12 bytes"},
      {{0x00, 0x00, 0x00, 0xC0, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08}, "announces 13 bytes"},
      {{0x05, 0x00, 0x00, 0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0xAA}, "a payload of 5 bytes runs past the end"},
      // A good message followed by a truncated one: nothing of the buffer may be delivered.
      {{0x01, 0x00, 0x00, 0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0xAA, 0x02, 0x00}, "message 1 at offset 13"},
      {{0xFF, 0xFF, 0xFF, 0xBF, 1, 0, 0, 0, 0, 0, 0, 0}, "a payload of 1073741823 bytes"},
  };
  for (const Malformed& malformed : cases) {
    std::size_t delivered = 0;
    try {
      BufferFormatter::decode(malformed.bytes,
                              [&](std::uint64_t, std::span<const std::uint8_t>, std::uint8_t) { ++delivered; });
      ADD_FAILURE() << "accepted a malformed buffer; expected: " << malformed.names;
    } catch (const MalformedBuffer& error) {
      EXPECT_NE(std::string{error.what()}.find(malformed.names), std::string::npos)
          << "message: " << error.what() << "\nexpected it to say: " << malformed.names;
    }
    EXPECT_EQ(delivered, 0U) << malformed.names;
    EXPECT_TRUE(BufferFormatter::check(malformed.bytes).has_value());
  }
}

TEST(BufferFormatter, LaterMessagesMayRepeatTheirTag) {
  // The encoder writes a tag only when it changes; a decoder must accept one on every message.
  const std::vector<std::uint8_t> buffer{0x00, 0x00, 0x00, 0x80, 3, 0, 0, 0, 0, 0, 0, 0,
                                         0x00, 0x00, 0x00, 0x80, 3, 0, 0, 0, 0, 0, 0, 0};
  const auto messages = decode_all(buffer);
  ASSERT_EQ(messages.size(), 2U);
  EXPECT_EQ(std::get<0>(messages[1]), 3U);
}

} // namespace
} // namespace netio3
