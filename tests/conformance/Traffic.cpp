#include "conformance/Traffic.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <sys/uio.h>
#include <unordered_set>

namespace netio3::conformance {

namespace {

/// The payload split into three pieces (the middle one may be empty), stored in reverse order in
/// memory, so that only a real gather of the iovec array in its order restores the payload.
struct IovecLayout {
  std::array<iovec, 4> entries{};
  std::size_t count{0};
};

IovecLayout scatter_payload(std::span<std::uint8_t> memory, std::uint32_t stream, std::uint64_t seq,
                            std::size_t payload_size) {
  const std::size_t first = payload_size / 3;
  const std::size_t second = (seq % 2 == 0) ? 0 : payload_size / 3; // sometimes an empty entry
  const std::size_t third = payload_size - first - second;
  // Memory: [third][second][first]; logical order: first, second, third.
  std::uint8_t* base = memory.data();
  fill_payload(memory.subspan(0, third), stream, seq, first + second);
  fill_payload(memory.subspan(third, second), stream, seq, first);
  fill_payload(memory.subspan(third + second, first), stream, seq, 0);
  IovecLayout layout;
  layout.entries[layout.count++] = iovec{base + third + second, first};
  layout.entries[layout.count++] = iovec{base + third, second};
  layout.entries[layout.count++] = iovec{base, third};
  return layout;
}

std::size_t round_up(std::size_t value, std::size_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

} // namespace

std::string_view to_string(SendMode mode) noexcept {
  switch (mode) {
  case SendMode::CopySpan: return "CopySpan";
  case SendMode::CopyIovec: return "CopyIovec";
  case SendMode::ZeroCopySpan: return "ZeroCopySpan";
  case SendMode::ZeroCopyIovec: return "ZeroCopyIovec";
  case SendMode::Buffered: return "Buffered";
  }
  return "unknown";
}

StreamSender::StreamSender(Node& node, EndPointAddress destination, std::uint32_t stream,
                           std::span<std::uint8_t> zero_copy_memory, std::size_t max_payload)
  : m_node{node}, m_destination{std::move(destination)}, m_stream{stream}, m_zero_copy_memory{zero_copy_memory},
    m_slot_size{round_up(std::max<std::size_t>(max_payload, 1), 64)}, m_slot_count{zero_copy_memory.size() /
                                                                                   m_slot_size},
    m_slot_keys(m_slot_count), m_scratch(std::max<std::size_t>(max_payload, 1)) {}

NetioStatus StreamSender::send(SendMode mode, std::size_t payload_size, bool with_header) {
  const auto deadline = deadline_from_now();
  for (;;) {
    const NetioStatus status = try_send(mode, payload_size, with_header);
    if (status != NetioStatus::NO_RESOURCES || std::chrono::steady_clock::now() > deadline) {
      return status;
    }
    // Buffered sends report nothing at the sender, so the wait is short; other modes wake up on the
    // next completion.
    m_node.recorder().wait_for_progress(std::chrono::milliseconds{mode == SendMode::Buffered ? 1 : 20});
  }
}

NetioStatus StreamSender::try_send(SendMode mode, std::size_t payload_size, bool with_header) {
  if (payload_size > m_scratch.size()) {
    throw std::logic_error("StreamSender: payload of " + std::to_string(payload_size) +
                           " bytes exceeds the sender's maximum of " + std::to_string(m_scratch.size()));
  }
  if (m_pending_buffer != nullptr && mode != SendMode::Buffered) {
    throw std::logic_error("StreamSender: a buffered message waits to be sent; retry it in Buffered mode");
  }
  m_last_refusal_local = false;
  switch (mode) {
  case SendMode::CopySpan:
  case SendMode::CopyIovec: return try_copy(mode, payload_size, with_header);
  case SendMode::ZeroCopySpan:
  case SendMode::ZeroCopyIovec: return try_zero_copy(mode, payload_size, with_header);
  case SendMode::Buffered: return try_buffered(payload_size, with_header);
  }
  throw std::logic_error("StreamSender: unknown send mode");
}

void StreamSender::accepted(SendMode mode) {
  const std::uint64_t key = message_key(m_stream, m_next_seq);
  if (is_zero_copy(mode)) {
    m_zero_copy_keys.push_back(key);
  } else if (is_copy(mode)) {
    m_copy_keys.push_back(key);
  }
  ++m_next_seq;
}

NetioStatus StreamSender::try_copy(SendMode mode, std::size_t payload_size, bool with_header) {
  const auto header = make_message_header(m_stream, m_next_seq, payload_size);
  const std::span<const std::uint8_t> header_span =
      with_header ? std::span<const std::uint8_t>{header} : std::span<const std::uint8_t>{};
  const std::uint64_t key = message_key(m_stream, m_next_seq);
  NetioStatus status{};
  if (mode == SendMode::CopySpan) {
    const std::span<std::uint8_t> payload{m_scratch.data(), payload_size};
    fill_payload(payload, m_stream, m_next_seq);
    status = m_node.backend().send_data_copy(m_destination, payload, header_span, key);
  } else {
    const IovecLayout layout = scatter_payload(m_scratch, m_stream, m_next_seq, payload_size);
    status = m_node.backend().send_data_copy(m_destination, std::span{layout.entries.data(), layout.count}, header_span,
                                             key);
  }
  if (status == NetioStatus::OK) {
    // The caller may reuse its memory at once: a backend that kept a reference sends these bytes.
    std::fill_n(m_scratch.begin(), payload_size, std::uint8_t{0xA5});
    accepted(mode);
  }
  return status;
}

NetioStatus StreamSender::try_zero_copy(SendMode mode, std::size_t payload_size, bool with_header) {
  if (m_slot_count == 0) {
    throw std::logic_error("StreamSender: zero-copy send without zero-copy memory");
  }
  auto& slot_key = m_slot_keys[m_next_slot];
  if (slot_key.has_value()) {
    const std::uint64_t key = *slot_key;
    if (!m_node.recorder().inspect([key](const RecorderState& s) { return s.key_done(key); })) {
      m_last_refusal_local = true;
      return NetioStatus::NO_RESOURCES; // the slot's previous payload is still owned by the backend
    }
  }
  const std::span<std::uint8_t> slot = m_zero_copy_memory.subspan(m_next_slot * m_slot_size, m_slot_size);
  const auto header = make_message_header(m_stream, m_next_seq, payload_size);
  const std::span<const std::uint8_t> header_span =
      with_header ? std::span<const std::uint8_t>{header} : std::span<const std::uint8_t>{};
  const std::uint64_t key = message_key(m_stream, m_next_seq);
  NetioStatus status{};
  if (mode == SendMode::ZeroCopySpan) {
    const std::span<std::uint8_t> payload = slot.first(payload_size);
    fill_payload(payload, m_stream, m_next_seq);
    status = m_node.backend().send_data(m_destination, payload, header_span, key);
  } else {
    const IovecLayout layout = scatter_payload(slot, m_stream, m_next_seq, payload_size);
    status =
        m_node.backend().send_data(m_destination, std::span{layout.entries.data(), layout.count}, header_span, key);
  }
  if (status == NetioStatus::OK) {
    slot_key = key;
    m_next_slot = (m_next_slot + 1) % m_slot_count;
    accepted(mode);
  }
  return status;
}

NetioStatus StreamSender::try_buffered(std::size_t payload_size, bool with_header) {
  if (m_pending_buffer == nullptr) {
    NetworkBuffer* buffer = m_node.backend().get_buffer(m_destination);
    if (buffer == nullptr) {
      m_last_refusal_local = true;
      return NetioStatus::NO_RESOURCES;
    }
    const std::size_t needed = payload_size + (with_header ? message_header_size : 0);
    if (buffer->size() < needed) {
      throw std::logic_error("StreamSender: buffer of " + std::to_string(buffer->size()) + " bytes cannot hold " +
                             std::to_string(needed) + " bytes");
    }
    buffer->set_pos(0);
    if (with_header) {
      const auto header = make_message_header(m_stream, m_next_seq, payload_size);
      if (!buffer->append(header)) {
        throw std::logic_error("StreamSender: NetworkBuffer::append refused a header that fits");
      }
    }
    fill_payload(buffer->data().subspan(buffer->pos(), payload_size), m_stream, m_next_seq);
    buffer->set_pos(buffer->pos() + payload_size);
    m_pending_buffer = buffer;
  }
  const NetioStatus status = m_node.backend().send_buffer(m_destination, m_pending_buffer);
  if (status == NetioStatus::OK) {
    m_pending_buffer = nullptr;
    accepted(SendMode::Buffered);
  }
  return status;
}

std::vector<std::string> key_problems(const RecorderState& state, const std::vector<std::uint64_t>& zero_copy_keys,
                                      const std::vector<std::uint64_t>& copy_keys, bool copy_keys_may_be_dropped) {
  std::vector<std::string> problems;
  auto times = [](const std::unordered_map<std::uint64_t, unsigned>& map, std::uint64_t key) -> unsigned {
    const auto found = map.find(key);
    return found == map.end() ? 0U : found->second;
  };
  for (const auto key : zero_copy_keys) {
    const unsigned completed = times(state.completed, key);
    const unsigned returned = times(state.returned, key);
    if (completed + returned != 1) {
      problems.push_back("zero-copy key " + std::to_string(key) + ": completed " + std::to_string(completed) +
                         " times, returned " + std::to_string(returned) + " times (expected once in all)");
    }
  }
  for (const auto key : copy_keys) {
    const unsigned completed = times(state.completed, key);
    const unsigned returned = times(state.returned, key);
    const bool ok = copy_keys_may_be_dropped ? completed + returned <= 1 : (completed == 1 && returned == 0);
    if (!ok) {
      problems.push_back("copying-send key " + std::to_string(key) + ": completed " + std::to_string(completed) +
                         " times, returned " + std::to_string(returned) + " times");
    }
  }
  std::unordered_set<std::uint64_t> known(zero_copy_keys.begin(), zero_copy_keys.end());
  known.insert(copy_keys.begin(), copy_keys.end());
  for (const auto& [key, count] : state.completed) {
    if (!known.contains(key)) {
      problems.push_back("on_send_completed_cb reported key " + std::to_string(key) + " (" + std::to_string(count) +
                         " times) that no accepted send carried");
    }
  }
  for (const auto& [key, count] : state.returned) {
    if (!known.contains(key)) {
      problems.push_back("on_connection_closed_cb returned key " + std::to_string(key) + " (" + std::to_string(count) +
                         " times) that no accepted zero-copy send carried");
    }
  }
  return problems;
}

std::string join_lines(const std::vector<std::string>& problems, std::size_t max_lines) {
  std::string text;
  for (std::size_t i = 0; i < problems.size() && i < max_lines; ++i) {
    text += problems[i] + '\n';
  }
  if (problems.size() > max_lines) {
    text += "... and " + std::to_string(problems.size() - max_lines) + " more\n";
  }
  return text;
}

std::size_t keys_reported(const RecorderState& state) {
  return state.completions + state.returned_total;
}

} // namespace netio3::conformance
