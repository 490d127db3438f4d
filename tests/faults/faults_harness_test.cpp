// The fault tests are only as good as their verifier: these cases show that it catches each kind
// of failure the fault tests look for (lost, duplicated, reordered, corrupted, truncated, padded
// messages, messages after the last), and that the peer program's result lines parse.

#include <gtest/gtest.h>

#include <vector>

#include "ChildProcess.hpp"
#include "FaultProtocol.hpp"

namespace netio3::faults {
namespace {

std::vector<std::uint8_t> make_message(std::uint16_t stream, std::uint64_t seq, std::size_t payload_size,
                                       bool last = false) {
  std::vector<std::uint8_t> message(record_header_size + payload_size);
  const auto payload = std::span(message).subspan(record_header_size);
  fill_payload(stream, seq, payload);
  RecordHeader header;
  header.seq = seq;
  header.stream = stream;
  header.flags = last ? flag_last : 0;
  header.checksum = payload_checksum(stream, seq, payload);
  encode_header(header, std::span(message).first<record_header_size>());
  return message;
}

TEST(FaultsHarness, HeaderRoundTrips) {
  RecordHeader header{0x0123456789abcdefULL, 0xbeef, 0x0401, 0xdeadbeef};
  std::array<std::uint8_t, record_header_size> bytes{};
  encode_header(header, bytes);
  const auto decoded = decode_header(bytes);
  EXPECT_EQ(decoded.seq, header.seq);
  EXPECT_EQ(decoded.stream, header.stream);
  EXPECT_EQ(decoded.flags, header.flags);
  EXPECT_EQ(decoded.checksum, header.checksum);
}

TEST(FaultsHarness, InOrderStreamsPass) {
  StreamVerifier verifier;
  for (std::uint64_t seq = 0; seq < 100; ++seq) {
    for (std::uint16_t stream = 1; stream <= 3; ++stream) {
      EXPECT_EQ(verifier.check(make_message(stream, seq, seq * 7 % 300, seq == 99)), Verdict::in_order);
    }
  }
  EXPECT_EQ(verifier.totals().errors(), 0U);
  EXPECT_EQ(verifier.totals().streams_finished, 3U);
  EXPECT_EQ(verifier.stream(2).received, 100U);
  EXPECT_TRUE(verifier.first_error().empty());
}

TEST(FaultsHarness, LossIsCaught) {
  StreamVerifier verifier;
  EXPECT_EQ(verifier.check(make_message(1, 0, 10)), Verdict::in_order);
  EXPECT_EQ(verifier.check(make_message(1, 3, 10)), Verdict::gap);
  EXPECT_EQ(verifier.totals().lost, 2U);
  EXPECT_FALSE(verifier.first_error().empty());
}

TEST(FaultsHarness, DuplicatesAndReorderingAreCaught) {
  StreamVerifier verifier;
  EXPECT_EQ(verifier.check(make_message(1, 0, 10)), Verdict::in_order);
  EXPECT_EQ(verifier.check(make_message(1, 0, 10)), Verdict::duplicate);
  EXPECT_EQ(verifier.check(make_message(1, 2, 10)), Verdict::gap);
  EXPECT_EQ(verifier.check(make_message(1, 1, 10)), Verdict::duplicate); // late: reordered
  EXPECT_EQ(verifier.totals().duplicated, 2U);
}

TEST(FaultsHarness, CorruptionTruncationAndPaddingAreCaught) {
  StreamVerifier verifier;
  auto flipped = make_message(1, 0, 1000);
  flipped[record_header_size + 500] ^= 0x01U;
  EXPECT_EQ(verifier.check(flipped), Verdict::corrupted);

  auto truncated = make_message(1, 0, 1000);
  truncated.pop_back();
  EXPECT_EQ(verifier.check(truncated), Verdict::corrupted);

  auto padded = make_message(1, 0, 1000);
  padded.push_back(0);
  EXPECT_EQ(verifier.check(padded), Verdict::corrupted);

  auto renumbered = make_message(1, 0, 1000); // right payload under another sequence number
  renumbered[0] = 1;
  EXPECT_EQ(verifier.check(renumbered), Verdict::corrupted);

  const std::vector<std::uint8_t> too_short(record_header_size - 1, 0);
  EXPECT_EQ(verifier.check(too_short), Verdict::corrupted);
  EXPECT_EQ(verifier.totals().corrupted, 5U);
  EXPECT_EQ(verifier.stream(1).received, 0U);
}

TEST(FaultsHarness, MessagesAfterTheLastAreCaught) {
  StreamVerifier verifier;
  EXPECT_EQ(verifier.check(make_message(1, 0, 10, true)), Verdict::in_order);
  EXPECT_EQ(verifier.check(make_message(1, 1, 10)), Verdict::after_last);
  EXPECT_EQ(verifier.totals().errors(), 1U);
}

TEST(FaultsHarness, PayloadSizesStayInBoundsAndAreDeterministic) {
  std::size_t largest = 0;
  for (std::uint64_t seq = 0; seq < 20000; ++seq) {
    const auto size = pick_payload_size(5, seq, 100, 70000);
    ASSERT_GE(size, 100U);
    ASSERT_LE(size, 70000U);
    ASSERT_EQ(size, pick_payload_size(5, seq, 100, 70000));
    largest = std::max(largest, size);
  }
  EXPECT_GT(largest, 16384U + 100U) << "the large sizes are never picked";
  EXPECT_EQ(pick_payload_size(1, 1, 64, 64), 64U);
}

TEST(FaultsHarness, ResultLinesParse) {
  const auto fields = parse_fields("RESULT role=send sent=12 lost=0 seconds=1.5 empty=");
  EXPECT_EQ(fields.at("role"), "send");
  EXPECT_EQ(field_u64(fields, "sent"), 12U);
  EXPECT_EQ(field_u64(fields, "lost", 7), 0U);
  EXPECT_EQ(field_u64(fields, "missing", 7), 7U);
  EXPECT_EQ(field_u64(fields, "seconds", 7), 7U) << "a non-integer must not parse as an integer";
  EXPECT_EQ(field_u64(fields, "empty", 7), 7U);
}

} // namespace
} // namespace netio3::faults
