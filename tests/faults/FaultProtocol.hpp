#pragma once

/// @file
/// The message format of the fault tests and its verifier.
///
/// Every test message is a 16-byte record header followed by a pseudo-random payload. The header
/// says which stream (one stream = one connection's worth of messages) and which sequence number
/// the message carries, whether it is the stream's last message, and a checksum of the payload
/// (seeded with stream, sequence number and length, so a message that is truncated, padded,
/// corrupted or delivered under another sequence number fails the check). The receiver needs no
/// knowledge of sizes or send modes: `StreamVerifier` classifies each message as in order, lost
/// (a gap before it), duplicated/reordered (a sequence number already passed) or corrupted.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace netio3::faults {

/// Size of the record header at the start of every message (sent as `header_data`, or written at
/// the start of a buffered send's buffer).
inline constexpr std::size_t record_header_size = 16;

/// Flag bit: this is the last message of its stream.
inline constexpr std::uint16_t flag_last = 0x1U;

/// The decoded record header.
struct RecordHeader {
  std::uint64_t seq{0};      ///< Sequence number inside the stream, from 0.
  std::uint16_t stream{0};   ///< Stream identifier (unique per connection within a test).
  std::uint16_t flags{0};    ///< `flag_last` and the send mode in bits 8..15 (statistics only).
  std::uint32_t checksum{0}; ///< `payload_checksum(stream, seq, payload)`.
};

/// Writes `header` into `out` (little-endian, 16 bytes).
void encode_header(const RecordHeader& header, std::span<std::uint8_t, record_header_size> out) noexcept;
/// Reads a header from the first 16 bytes of `in`.
[[nodiscard]] RecordHeader decode_header(std::span<const std::uint8_t, record_header_size> in) noexcept;

/// Fills `out` with the payload of message (`stream`, `seq`): deterministic pseudo-random bytes.
void fill_payload(std::uint16_t stream, std::uint64_t seq, std::span<std::uint8_t> out) noexcept;
/// Checksum of a payload, seeded with stream, sequence number and length.
[[nodiscard]] std::uint32_t payload_checksum(std::uint16_t stream, std::uint64_t seq,
                                             std::span<const std::uint8_t> payload) noexcept;

/// Payload size of message (`stream`, `seq`) in [min_size, max_size]: mostly small messages, some
/// medium, a few up to `max_size` (deterministic, so a retried message keeps its size).
[[nodiscard]] std::size_t pick_payload_size(std::uint16_t stream, std::uint64_t seq, std::size_t min_size,
                                            std::size_t max_size) noexcept;

/// A 64-bit mixing function (splitmix64 finaliser), used for deterministic choices.
[[nodiscard]] constexpr std::uint64_t mix64(std::uint64_t value) noexcept {
  value ^= value >> 30U;
  value *= 0xbf58476d1ce4e5b9ULL;
  value ^= value >> 27U;
  value *= 0x94d049bb133111ebULL;
  value ^= value >> 31U;
  return value;
}

/// What `StreamVerifier::check` found for one message.
enum class Verdict {
  in_order,   ///< The next expected sequence number, payload intact.
  gap,        ///< Intact, but sequence numbers were skipped before it (messages lost).
  duplicate,  ///< Intact, but its sequence number was already passed (duplicated or reordered).
  corrupted,  ///< Too short for a header, or the payload does not match its checksum.
  after_last, ///< Intact, but the stream had already delivered its last message.
};

/// Per-stream state of the verifier.
struct StreamState {
  std::uint64_t next_seq{0}; ///< The sequence number expected next.
  std::uint64_t received{0}; ///< Intact messages received (in order or not).
  std::uint64_t bytes{0};    ///< Bytes of those messages, headers included.
  bool seen{false};          ///< At least one message arrived.
  bool finished{false};      ///< The message flagged `flag_last` arrived.
};

/// Totals over all streams.
struct VerifierTotals {
  std::uint64_t messages{0};         ///< Every message checked.
  std::uint64_t bytes{0};            ///< Their bytes.
  std::uint64_t in_order{0};         ///< Messages with verdict `in_order`.
  std::uint64_t lost{0};             ///< Sum of all gaps (sequence numbers skipped).
  std::uint64_t duplicated{0};       ///< Messages with verdict `duplicate`.
  std::uint64_t corrupted{0};        ///< Messages with verdict `corrupted`.
  std::uint64_t after_last{0};       ///< Messages with verdict `after_last`.
  std::uint64_t streams_seen{0};     ///< Streams with at least one message.
  std::uint64_t streams_finished{0}; ///< Streams whose last message arrived.

  /// Lost + duplicated + corrupted + after-last: must be zero in every test.
  [[nodiscard]] std::uint64_t errors() const noexcept { return lost + duplicated + corrupted + after_last; }
};

/// Checks test messages: order, exactly-once and integrity per stream. Not thread-safe (the
/// receivers call it from their loop thread only). Allocates only when a new stream id appears.
class StreamVerifier {
public:
  /// Checks one whole message (header followed by payload).
  Verdict check(std::span<const std::uint8_t> message);

  /// Same as `check`, also returning the decoded header (left default when corrupted).
  Verdict check(std::span<const std::uint8_t> message, RecordHeader& header);

  /// State of `stream` (a default state when it never appeared).
  [[nodiscard]] StreamState stream(std::uint16_t stream) const noexcept;
  /// Totals over all streams.
  [[nodiscard]] const VerifierTotals& totals() const noexcept { return m_totals; }
  /// A human-readable description of the first error found, empty when none.
  [[nodiscard]] const std::string& first_error() const noexcept { return m_first_error; }

private:
  void note_error(const std::string& text);

  std::vector<StreamState> m_streams;
  VerifierTotals m_totals{};
  std::string m_first_error;
};

} // namespace netio3::faults
