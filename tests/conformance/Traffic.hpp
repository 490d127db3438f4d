#pragma once

/// @file
/// Sending test messages in every send mode (`StreamSender`) and checking the send keys afterwards.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "conformance/Node.hpp"
#include "conformance/Support.hpp"

namespace netio3::conformance {

/// The ways a message can be sent.
enum class SendMode {
  CopySpan,      ///< `send_data_copy` with a span
  CopyIovec,     ///< `send_data_copy` with an iovec array
  ZeroCopySpan,  ///< `send_data` with a span
  ZeroCopyIovec, ///< `send_data` with an iovec array
  Buffered,      ///< `get_buffer` / `send_buffer`
};

/// Every send mode, in a fixed order.
inline constexpr std::array<SendMode, 5> all_send_modes{SendMode::CopySpan, SendMode::CopyIovec, SendMode::ZeroCopySpan,
                                                        SendMode::ZeroCopyIovec, SendMode::Buffered};

/// "CopySpan", ...
[[nodiscard]] std::string_view to_string(SendMode mode) noexcept;
/// True for the two zero-copy modes.
[[nodiscard]] constexpr bool is_zero_copy(SendMode mode) noexcept {
  return mode == SendMode::ZeroCopySpan || mode == SendMode::ZeroCopyIovec;
}
/// True for the two copying modes.
[[nodiscard]] constexpr bool is_copy(SendMode mode) noexcept {
  return mode == SendMode::CopySpan || mode == SendMode::CopyIovec;
}

/// Sends the messages of one stream (sequence numbers 0, 1, 2, ...) over one send endpoint, in any
/// mode, and remembers the keys of the sends the backend accepted. Used by one thread at a time.
///
/// Zero-copy payloads are written into slots of `zero_copy_memory` (which must lie inside the
/// endpoint's `mr_start`/`mr_size`); a slot is reused only after the backend reported its key
/// (completed or returned), so a backend that reports completion too early delivers corrupt bytes.
/// Copying sends come from a scratch buffer that is overwritten right after the call returns OK, so
/// a backend that does not copy delivers corrupt bytes.
class StreamSender {
public:
  /// @param max_payload the largest payload this sender will send (slot and scratch size)
  StreamSender(Node& node, EndPointAddress destination, std::uint32_t stream,
               std::span<std::uint8_t> zero_copy_memory = {}, std::size_t max_payload = 64U << 10U);

  /// One attempt to send the next message. Returns NO_RESOURCES also when no zero-copy slot or
  /// buffer is free locally. After NO_RESOURCES, retry with the same mode and size (a buffered
  /// message that the backend did not take stays filled and is sent by the next attempt).
  /// @throws whatever the backend call throws (e.g. `UnknownSendEndpoint`)
  NetioStatus try_send(SendMode mode, std::size_t payload_size, bool with_header = true);

  /// `try_send` until it returns something else than NO_RESOURCES (waiting for the backend's
  /// progress between attempts) or the deadline passes (then NO_RESOURCES).
  NetioStatus send(SendMode mode, std::size_t payload_size, bool with_header = true);

  /// Messages accepted so far (the next sequence number).
  [[nodiscard]] std::uint64_t sent() const noexcept { return m_next_seq; }
  [[nodiscard]] std::uint32_t stream() const noexcept { return m_stream; }
  [[nodiscard]] const EndPointAddress& destination() const noexcept { return m_destination; }
  /// Keys of accepted zero-copy sends.
  [[nodiscard]] const std::vector<std::uint64_t>& zero_copy_keys() const noexcept { return m_zero_copy_keys; }
  /// Keys of accepted copying sends.
  [[nodiscard]] const std::vector<std::uint64_t>& copy_keys() const noexcept { return m_copy_keys; }
  /// True when the last NO_RESOURCES came from this sender (no free zero-copy slot or buffer from
  /// `get_buffer`) rather than from a send call of the backend.
  [[nodiscard]] bool last_refusal_was_local() const noexcept { return m_last_refusal_local; }
  /// True when a buffered message that the backend refused waits to be retried (in Buffered mode).
  [[nodiscard]] bool has_pending_buffer() const noexcept { return m_pending_buffer != nullptr; }
  /// Number of accepted sends that report a key (copying and zero-copy).
  [[nodiscard]] std::size_t keyed_sends() const noexcept { return m_zero_copy_keys.size() + m_copy_keys.size(); }

private:
  NetioStatus try_zero_copy(SendMode mode, std::size_t payload_size, bool with_header);
  NetioStatus try_copy(SendMode mode, std::size_t payload_size, bool with_header);
  NetioStatus try_buffered(std::size_t payload_size, bool with_header);
  void accepted(SendMode mode);

  Node& m_node;
  EndPointAddress m_destination;
  std::uint32_t m_stream;
  std::span<std::uint8_t> m_zero_copy_memory;
  std::size_t m_slot_size;
  std::size_t m_slot_count;
  std::size_t m_next_slot{0};
  std::vector<std::optional<std::uint64_t>> m_slot_keys;
  std::vector<std::uint8_t> m_scratch;
  NetworkBuffer* m_pending_buffer{nullptr};
  std::uint64_t m_next_seq{0};
  bool m_last_refusal_local{false};
  std::vector<std::uint64_t> m_zero_copy_keys;
  std::vector<std::uint64_t> m_copy_keys;
};

/// Problems with the keys a recorder saw, one per entry (empty when all is well):
/// - every zero-copy key completed or returned exactly once;
/// - every copying key completed exactly once, or, with `copy_keys_may_be_dropped` (the connection
///   was closed with sends in flight), at most once (completed or returned);
/// - no key reported that no accepted send carried.
[[nodiscard]] std::vector<std::string> key_problems(const RecorderState& state,
                                                    const std::vector<std::uint64_t>& zero_copy_keys,
                                                    const std::vector<std::uint64_t>& copy_keys,
                                                    bool copy_keys_may_be_dropped);

/// Joins `problems` into one text for a failure message.
[[nodiscard]] std::string join_lines(const std::vector<std::string>& problems, std::size_t max_lines = 20);

/// Total number of keys reported (completed plus returned, counting repeats).
[[nodiscard]] std::size_t keys_reported(const RecorderState& state);

} // namespace netio3::conformance
