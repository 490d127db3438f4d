#pragma once

/// @file
/// Enumerations of the netio3 frontend (`NetioSender`, `NetioPublisher`): how messages are sent,
/// and what `NetioPublisher::publish` returns.

#include <ostream>
#include <string_view>

namespace netio3 {

/// How a `NetioSender` or `NetioPublisher` sends each message.
enum class SendMethod {
  /// Appended to the current buffer of its connection (a pool of `nbuffers` buffers of `buffersize`
  /// bytes per connection); the buffer is sent when the next message does not fit, when
  /// `flush_interval` has passed since its first message, or on `flush()`. Many small messages per
  /// send: the method for high message rates. The caller's memory is free when the call returns.
  BUFFERED,
  /// Copied into a buffer of its own (from the same pool) and sent at once: no coalescing and no
  /// timer latency. The caller's memory is free when the call returns.
  COPY,
  /// Sent from the caller's memory, which must stay untouched until its key is reported (on RDMA
  /// it must lie in the registered region of the configuration). For large messages.
  ZERO_COPY,
};

/// Result of `NetioPublisher::publish`.
enum class NetioPublisherStatus {
  OK,                        ///< Accepted for every subscriber of the tag (ZERO_COPY: completes later, once).
  NO_SUBSCRIBERS,            ///< Nobody subscribes to the tag: nothing was sent (not an error).
  NO_RESOURCES,              ///< A subscriber has no buffer or queue space now: nothing was sent to anyone;
                             ///< retry later (backpressure from the slowest subscriber).
  MESSAGE_TOO_LARGE,         ///< Larger than a buffer (BUFFERED, COPY) or than a subscriber accepts
                             ///< (ZERO_COPY): nothing was sent; retrying does not help.
  OUTSIDE_REGISTERED_REGION, ///< ZERO_COPY over libfabric: the data do not lie in the configured region.
  INVALID_ARGUMENT,          ///< A null pointer with a non-zero size.
  FAILED,                    ///< The publisher is shutting down.
};

/// Upper-case name, e.g. `"BUFFERED"`. Never throws.
[[nodiscard]] std::string_view to_string(SendMethod method) noexcept;
/// Upper-case name, e.g. `"NO_SUBSCRIBERS"`. Never throws.
[[nodiscard]] std::string_view to_string(NetioPublisherStatus status) noexcept;
/// Prints `to_string(method)`.
std::ostream& operator<<(std::ostream& out, SendMethod method);
/// Prints `to_string(status)`.
std::ostream& operator<<(std::ostream& out, NetioPublisherStatus status);

} // namespace netio3
