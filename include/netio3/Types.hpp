#pragma once

/// @file
/// Enumerations shared by every netio3 backend: which backend, which transport, which thread-safety
/// model, and the status every data-path call returns.
///
/// Statuses: `NO_RESOURCES` is the only one worth retrying (later, after a completion: nothing was
/// kept); `MESSAGE_TOO_LARGE`, `OUTSIDE_REGISTERED_REGION` and `INVALID_ARGUMENT` refuse that
/// message for good; `FAILED` means the connection (or the buffer handed in) is unusable. A retry
/// loop on `NO_RESOURCES` therefore never spins on a permanent error. Instead of retrying at once,
/// wait: `NetworkBackend::wait_for_send_space` (application threads, `SAFE`) or
/// `NetworkConfig::on_send_space_cb` (the loop thread).

#include <cstdint>
#include <ostream>
#include <string_view>

namespace netio3 {

/// Which backend `NetworkBackend::create` builds.
enum class NetworkType {
  ASYNCMSG,  ///< TCP over plain sockets (`netio3::asyncmsg::BackendAsyncmsg`).
  LIBFABRIC, ///< libfabric `FI_EP_MSG` endpoints (`netio3::libfabric::BackendLibfabric`).
};

/// Which transport a backend uses. The TCP backend only supports `TCP`; the libfabric backend uses
/// the `verbs` provider for `RDMA` and the `tcp` provider for `TCP` (see `NetworkConfig::provider`).
enum class NetworkMode {
  TCP,
  RDMA,
};

/// Whether a backend may be called from several threads.
enum class ThreadSafetyModel {
  /// Every public call may be made from any thread, concurrently with the event loop and with
  /// other threads. The backend takes the locks it needs.
  SAFE,
  /// The backend takes no locks. Every public call must come from one thread at a time, normally
  /// the event-loop thread from inside callbacks (or any single thread while the loop is not
  /// running). Violating this is undefined behaviour.
  UNSAFE,
};

/// Result of a data-path call (sends, `send_buffer`). Set-up calls throw instead.
enum class NetioStatus {
  OK,                        ///< Accepted. Completion is reported later through `on_send_completed_cb`.
  FAILED,                    ///< The call failed for good (connection broken, buffer not from this endpoint, ...).
  NO_RESOURCES,              ///< No buffer, credit or queue space right now (or not connected yet): retry after a
                             ///< completion. Nothing was sent and nothing is kept.
  MESSAGE_TOO_LARGE,         ///< Header plus data exceed the largest message the receiver accepts (told by the
                             ///< receiver at connection set-up). Nothing was sent.
  OUTSIDE_REGISTERED_REGION, ///< A zero-copy payload does not lie inside the memory region registered
                             ///< for the endpoint (`ConnectionParameters::mr_start`/`mr_size`, RDMA).
  INVALID_ARGUMENT,          ///< An argument is malformed (e.g. a null pointer with a non-zero length,
                             ///< more iovec entries than the backend supports).
};

/// Upper-case name of the status, e.g. `"NO_RESOURCES"`. Never throws.
[[nodiscard]] std::string_view to_string(NetioStatus status) noexcept;
/// Upper-case name of the network type, e.g. `"ASYNCMSG"`. Never throws.
[[nodiscard]] std::string_view to_string(NetworkType type) noexcept;
/// Upper-case name of the network mode, e.g. `"RDMA"`. Never throws.
[[nodiscard]] std::string_view to_string(NetworkMode mode) noexcept;
/// Upper-case name of the thread-safety model, e.g. `"SAFE"`. Never throws.
[[nodiscard]] std::string_view to_string(ThreadSafetyModel model) noexcept;

/// Prints `to_string(status)`.
std::ostream& operator<<(std::ostream& out, NetioStatus status);
/// Prints `to_string(type)`.
std::ostream& operator<<(std::ostream& out, NetworkType type);
/// Prints `to_string(mode)`.
std::ostream& operator<<(std::ostream& out, NetworkMode mode);
/// Prints `to_string(model)`.
std::ostream& operator<<(std::ostream& out, ThreadSafetyModel model);

} // namespace netio3
