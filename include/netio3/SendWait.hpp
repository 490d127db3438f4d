#pragma once

/// @file
/// Waiting for room to send, instead of retrying: the result of `NetworkBackend::wait_for_send_space`,
/// `NetworkBackend::wait_for_completed_sends` and `NetworkBackend::wait_for_buffer` (docs/guide.md,
/// "Waiting instead of retrying").
///
/// A `SAFE` sender that gets `NetioStatus::NO_RESOURCES` may block its own thread until the endpoint
/// can take the next message (or, buffered, until `get_buffer` can return a buffer), instead of
/// retrying in a loop that takes the processor the event-loop thread needs to free that room. The
/// loop wakes waiters when completions free room or return buffers, when the endpoint is
/// established and when it closes; a send that does not wait pays nothing for it.
/// Loop-thread senders (either model) use `NetworkConfig::on_send_space_cb` instead.

#include <cstdint>
#include <ostream>
#include <string_view>

namespace netio3 {

/// Outcome of a wait of `NetworkBackend::wait_for_send_space`, `wait_for_completed_sends` or
/// `wait_for_buffer`.
enum class WaitStatus : std::uint8_t {
  READY,           ///< What was waited for is there: retry the send now (another thread may take the
                   ///< room first; then the send returns `NO_RESOURCES` again and the caller waits again).
  TIMED_OUT,       ///< The timeout passed first.
  CLOSED,          ///< The endpoint is closed, closing, broken, was never opened, or the backend is being
                   ///< destroyed: a send will not succeed. Returned at once when that happens during a wait.
  ON_LOOP_THREAD,  ///< Called on the event-loop thread, which must never block (nothing waited). Use
                   ///< `NetworkConfig::on_send_space_cb` there.
  NOT_THREAD_SAFE, ///< The backend was created `ThreadSafetyModel::UNSAFE`: waiting needs another
                   ///< thread to run the loop concurrently, which that model does not allow (nothing waited).
};

/// Upper-case name of the wait status, e.g. `"TIMED_OUT"`. Never throws.
[[nodiscard]] std::string_view to_string(WaitStatus status) noexcept;

/// Prints `to_string(status)`.
std::ostream& operator<<(std::ostream& out, WaitStatus status);

} // namespace netio3
