#include "FaultProtocol.hpp"

#include <cstring>

namespace netio3::faults {

namespace {

void store_le(std::uint8_t* out, std::uint64_t value, std::size_t bytes) noexcept {
  for (std::size_t i = 0; i < bytes; ++i) {
    out[i] = static_cast<std::uint8_t>(value >> (8U * i));
  }
}

std::uint64_t load_le(const std::uint8_t* in, std::size_t bytes) noexcept {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < bytes; ++i) {
    value |= static_cast<std::uint64_t>(in[i]) << (8U * i);
  }
  return value;
}

std::uint64_t seed_of(std::uint16_t stream, std::uint64_t seq) noexcept {
  return mix64(seq * 0x9e3779b97f4a7c15ULL + (static_cast<std::uint64_t>(stream) << 48U) + 0x5bd1e995ULL);
}

} // namespace

void encode_header(const RecordHeader& header, std::span<std::uint8_t, record_header_size> out) noexcept {
  store_le(out.data(), header.seq, 8);
  store_le(out.data() + 8, header.stream, 2);
  store_le(out.data() + 10, header.flags, 2);
  store_le(out.data() + 12, header.checksum, 4);
}

RecordHeader decode_header(std::span<const std::uint8_t, record_header_size> in) noexcept {
  RecordHeader header;
  header.seq = load_le(in.data(), 8);
  header.stream = static_cast<std::uint16_t>(load_le(in.data() + 8, 2));
  header.flags = static_cast<std::uint16_t>(load_le(in.data() + 10, 2));
  header.checksum = static_cast<std::uint32_t>(load_le(in.data() + 12, 4));
  return header;
}

void fill_payload(std::uint16_t stream, std::uint64_t seq, std::span<std::uint8_t> out) noexcept {
  // xorshift64 words: cheap enough to fill megabytes per message without dominating the test.
  std::uint64_t state = seed_of(stream, seq) | 1U;
  std::size_t pos = 0;
  for (; pos + 8 <= out.size(); pos += 8) {
    state ^= state << 13U;
    state ^= state >> 7U;
    state ^= state << 17U;
    std::memcpy(out.data() + pos, &state, 8);
  }
  if (pos < out.size()) {
    state ^= state << 13U;
    state ^= state >> 7U;
    state ^= state << 17U;
    std::memcpy(out.data() + pos, &state, out.size() - pos);
  }
}

std::uint32_t payload_checksum(std::uint16_t stream, std::uint64_t seq,
                               std::span<const std::uint8_t> payload) noexcept {
  std::uint64_t hash = seed_of(stream, seq) ^ (payload.size() * 0xc2b2ae3d27d4eb4fULL);
  std::size_t pos = 0;
  for (; pos + 8 <= payload.size(); pos += 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, payload.data() + pos, 8);
    hash = (hash ^ word) * 0x9e3779b97f4a7c15ULL;
    hash ^= hash >> 29U;
  }
  if (pos < payload.size()) {
    std::uint64_t word = 0;
    std::memcpy(&word, payload.data() + pos, payload.size() - pos);
    hash = (hash ^ word) * 0x9e3779b97f4a7c15ULL;
    hash ^= hash >> 29U;
  }
  hash = mix64(hash);
  return static_cast<std::uint32_t>(hash ^ (hash >> 32U));
}

std::size_t pick_payload_size(std::uint16_t stream, std::uint64_t seq, std::size_t min_size,
                              std::size_t max_size) noexcept {
  if (max_size <= min_size) {
    return min_size;
  }
  const std::uint64_t random = mix64(seed_of(stream, seq) + 0x1234567ULL);
  const std::size_t span = max_size - min_size;
  const auto bucket = random % 100U;
  std::size_t limit = span;
  if (bucket < 70U) {
    limit = span < 256U ? span : 256U; // mostly small: the message-rate case
  } else if (bucket < 95U) {
    limit = span < 16384U ? span : 16384U; // some medium
  }
  return min_size + static_cast<std::size_t>((random >> 8U) % (limit + 1U));
}

Verdict StreamVerifier::check(std::span<const std::uint8_t> message) {
  RecordHeader header;
  return check(message, header);
}

Verdict StreamVerifier::check(std::span<const std::uint8_t> message, RecordHeader& header) {
  ++m_totals.messages;
  m_totals.bytes += message.size();
  if (message.size() < record_header_size) {
    ++m_totals.corrupted;
    note_error("a message of " + std::to_string(message.size()) + " bytes is shorter than the record header");
    return Verdict::corrupted;
  }
  header = decode_header(message.first<record_header_size>());
  const auto payload = message.subspan(record_header_size);
  if (payload_checksum(header.stream, header.seq, payload) != header.checksum) {
    ++m_totals.corrupted;
    note_error("stream " + std::to_string(header.stream) + " seq " + std::to_string(header.seq) + ": checksum of " +
               std::to_string(payload.size()) + " payload bytes does not match");
    header = RecordHeader{};
    return Verdict::corrupted;
  }
  if (header.stream >= m_streams.size()) {
    m_streams.resize(static_cast<std::size_t>(header.stream) + 1U);
  }
  StreamState& state = m_streams[header.stream];
  if (!state.seen) {
    state.seen = true;
    ++m_totals.streams_seen;
  }
  if (state.finished) {
    ++m_totals.after_last;
    note_error("stream " + std::to_string(header.stream) + " seq " + std::to_string(header.seq) +
               " arrived after the stream's last message");
    return Verdict::after_last;
  }
  Verdict verdict = Verdict::in_order;
  if (header.seq < state.next_seq) {
    ++m_totals.duplicated;
    note_error("stream " + std::to_string(header.stream) + " seq " + std::to_string(header.seq) +
               " arrived again (expected " + std::to_string(state.next_seq) + ")");
    return Verdict::duplicate;
  }
  if (header.seq > state.next_seq) {
    m_totals.lost += header.seq - state.next_seq;
    note_error("stream " + std::to_string(header.stream) + ": seq " + std::to_string(state.next_seq) + " to " +
               std::to_string(header.seq - 1) + " never arrived");
    verdict = Verdict::gap;
  } else {
    ++m_totals.in_order;
  }
  state.next_seq = header.seq + 1;
  ++state.received;
  state.bytes += message.size();
  if ((header.flags & flag_last) != 0U) {
    state.finished = true;
    ++m_totals.streams_finished;
  }
  return verdict;
}

StreamState StreamVerifier::stream(std::uint16_t stream) const noexcept {
  if (stream < m_streams.size()) {
    return m_streams[stream];
  }
  return StreamState{};
}

void StreamVerifier::note_error(const std::string& text) {
  if (m_first_error.empty()) {
    m_first_error = text;
  }
}

} // namespace netio3::faults
