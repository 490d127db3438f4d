#pragma once

/// @file
/// The whole netio3 backend API: `NetworkBackend` and everything its calls use (configuration,
/// addresses, status, buffers, exceptions, the event-loop interface).
///
/// Contract of every backend (the conformance suite checks it, docs/testing.md):
/// - **Nothing blocks on the network.** Sends return a `NetioStatus` at once: `OK` (accepted; a
///   keyed send is reported later), `NO_RESOURCES` (no buffer, credit or queue space now, or not
///   connected yet: nothing was sent or kept, retry after a completion), or a permanent refusal of
///   that message (`MESSAGE_TOO_LARGE`, `OUTSIDE_REGISTERED_REGION`, `INVALID_ARGUMENT`) or of the
///   connection (`FAILED`). Set-up and tear-down calls throw (`Exceptions.hpp`) instead. Only
///   set-up calls may wait: to resolve a host name, or (`SAFE`, from another thread) for the loop
///   thread to apply them; and the explicit waits `wait_for_send_space`,
///   `wait_for_completed_sends` and `wait_for_buffer` (`SAFE`, never on the loop thread), which a
///   sender calls after `NO_RESOURCES` (or a nullptr `get_buffer`) instead of retrying (`SendWait.hpp`).
/// - **Callbacks** run on the event-loop thread only, one at a time, never inside the call that
///   caused them (`NetworkConfig.hpp`).
/// - **Memory of a send**: `send_data_copy` copies before it returns; `send_data` (zero-copy) reads
///   the caller's memory until its key is reported by `on_send_completed_cb` or returned in
///   `on_connection_closed_cb`; `get_buffer`/`send_buffer` use backend-owned buffers
///   (`NetworkBuffer.hpp`). Every accepted key is reported exactly once.
/// - **Per connection** messages arrive in order, exactly once, with their boundaries, or the
///   connection is reported closed.
/// - **Threads**: `ThreadSafetyModel` (`Types.hpp`): `SAFE` calls from any thread, `UNSAFE` calls
///   from one thread at a time (normally the loop's).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <sys/uio.h>

#include "netio3/BaseEventLoop.hpp"
#include "netio3/EndPointAddress.hpp"
#include "netio3/Exceptions.hpp"
#include "netio3/Log.hpp"
#include "netio3/NetworkBuffer.hpp"
#include "netio3/NetworkConfig.hpp"
#include "netio3/SendWait.hpp"
#include "netio3/Types.hpp"

namespace netio3 {

/// Abstract base class for network backends: connection-oriented, message-based transports.
///
/// Create one with `create`. A backend sends messages from send endpoints (`open_send_endpoint`,
/// one connection each) to listen endpoints (`open_listen_endpoint`, which accept any number of
/// connections) and reports everything asynchronous through the callbacks of `NetworkConfig`
/// (see `NetworkConfig.hpp` for their contract), on the thread that runs the event loop.
///
/// Guarantees: per connection, messages arrive in order, exactly once, with their boundaries
/// (header data followed by data as one message), or the connection is reported closed. Memory
/// stays within what the configuration allows: when it runs out, sends return `NO_RESOURCES`.
///
/// Threading: see `ThreadSafetyModel`. No call blocks on the network; set-up calls may resolve a
/// host name and, in `SAFE` mode from another thread, wait for the loop thread to apply them.
///
/// Destruction closes every endpoint without invoking callbacks. It must not happen inside one of
/// the backend's own callbacks; the loop may be running in another thread. Threads blocked in
/// `wait_for_send_space`, `wait_for_completed_sends` or `wait_for_buffer` are woken first and return
/// `WaitStatus::CLOSED`; the destructor returns only after they left the backend. (Starting a wait,
/// or any other call, once destruction has begun is undefined, as for every object.)
class NetworkBackend {
public:
  /// Stores the configuration and the loop for the derived backend.
  NetworkBackend(const NetworkConfig& config, std::shared_ptr<BaseEventLoop> evloop)
    : m_config{config}, m_evloop{std::move(evloop)} {}

  virtual ~NetworkBackend() = default;
  NetworkBackend(const NetworkBackend&) = delete;
  NetworkBackend(NetworkBackend&&) = delete;
  NetworkBackend& operator=(const NetworkBackend&) = delete;
  NetworkBackend& operator=(NetworkBackend&&) = delete;

  /// Opens a send endpoint (one connection) to `address`. Returns at once; the outcome arrives as
  /// `on_connection_established_cb(address)` or `on_connection_refused_cb(address)`. Sends before
  /// establishment return `NO_RESOURCES`.
  /// @throws InvalidEndpointAddress if the address is invalid or does not resolve
  /// @throws SendEndpointAlreadyExists if a send endpoint to `address` is open
  /// @throws FailedOpenSendEndpoint if the endpoint cannot be created (reason in the message)
  virtual void open_send_endpoint(const EndPointAddress& address, const ConnectionParameters& connection_params) = 0;

  /// Opens a listen endpoint on `address` (`0.0.0.0` or `::` for all interfaces; port 0 picks a
  /// free port). Accepts every incoming connection (unless `on_connection_request_cb` says no, or
  /// `max_connections_per_listener` is reached); accepted connections use `connection_params`.
  /// @return the address actually listened on (with the real port)
  /// @throws InvalidEndpointAddress if the address is invalid or does not resolve
  /// @throws ListenEndpointAlreadyExists if this address and port are already listened on
  /// @throws FailedOpenListenEndpoint if binding or listening fails (errno text in the message)
  virtual EndPointAddress open_listen_endpoint(const EndPointAddress& address,
                                               const ConnectionParametersRecv& connection_params) = 0;

  /// Closes the send endpoint to `address`. Its connection is closed and
  /// `on_connection_closed_cb(address, pending_keys)` fires once from the loop (keys of unfinished
  /// zero-copy sends; copying and buffered sends in flight are dropped). The address may be opened
  /// again once the call returns.
  /// @throws InvalidEndpointAddress if the address is invalid
  /// @throws UnknownSendEndpoint if there is no send endpoint to `address`
  /// @throws FailedCloseSendEndpoint if closing fails at the OS/provider level
  virtual void close_send_endpoint(const EndPointAddress& address) = 0;

  /// Closes the listen endpoint and every connection it accepted (each reported by
  /// `on_connection_closed_cb` with the peer's address).
  /// @throws InvalidEndpointAddress if the address is invalid
  /// @throws UnknownListenEndpoint if nothing listens on `address` (use the returned address)
  /// @throws FailedCloseListenEndpoint if closing fails at the OS/provider level
  virtual void close_listen_endpoint(const EndPointAddress& address) = 0;

  /// netio3 addition (needed by ibmsg_disconnect on a RECV socket): closes one connection accepted
  /// by a listen endpoint of this backend, named by the peer's address as the callbacks name it.
  /// The peer sees its connection closed; `on_connection_closed_cb(remote, {})` fires once from the
  /// loop. The listen endpoint and its other connections carry on.
  /// @throws UnknownListenEndpoint if no accepted connection has the peer address `remote`
  /// @throws UnsupportedConfiguration if the backend does not implement it (this default)
  virtual void close_accepted_connection(const EndPointAddress& remote) {
    throw UnsupportedConfiguration("close_accepted_connection(" + remote.to_string() +
                                   "): this backend cannot close a single accepted connection");
  }

  /// Zero-copy send of `header_data` followed by `data` as one message. The header is copied at
  /// once; `data` must stay untouched until `on_send_completed_cb(address, key)` (or until the key
  /// comes back in `on_connection_closed_cb`). On RDMA `data` must lie in the endpoint's registered
  /// region.
  /// @return OK, NO_RESOURCES (retry later), MESSAGE_TOO_LARGE, OUTSIDE_REGISTERED_REGION,
  ///         INVALID_ARGUMENT or FAILED (connection broken). Only OK reports the key later.
  /// @throws InvalidEndpointAddress if the address is invalid
  /// @throws UnknownSendEndpoint if there is no send endpoint to `address`
  virtual NetioStatus send_data(const EndPointAddress& address, std::span<std::uint8_t> data,
                                std::span<const std::uint8_t> header_data, std::uint64_t key) = 0;

  /// Zero-copy send of `header_data` followed by the concatenation of `iov` as one message; as the
  /// span overload. The iovec array itself may be reused at once; the memory it points to may not.
  virtual NetioStatus send_data(const EndPointAddress& address, std::span<const iovec> iov,
                                std::span<const std::uint8_t> header_data, std::uint64_t key) = 0;

  /// Copying send of `header_data` followed by `data` as one message: everything is copied before
  /// the call returns OK, so the caller may reuse its memory at once. `on_send_completed_cb(address,
  /// key)` fires when the message has been handed to the transport.
  /// @return as `send_data`
  /// @throws InvalidEndpointAddress, UnknownSendEndpoint as `send_data`
  virtual NetioStatus send_data_copy(const EndPointAddress& address, std::span<const std::uint8_t> data,
                                     std::span<const std::uint8_t> header_data, std::uint64_t key) = 0;

  /// Copying send of `header_data` followed by the concatenation of `iov`; as the span overload.
  virtual NetioStatus send_data_copy(const EndPointAddress& address, std::span<const iovec> iov,
                                     std::span<const std::uint8_t> header_data, std::uint64_t key) = 0;

  /// A free buffer of the endpoint's pool (or of the shared pool), or nullptr when none is free
  /// right now (or the connection is not established yet). See `NetworkBuffer` for ownership.
  /// After nullptr: `wait_for_buffer` (application threads, `SAFE`) or `NetworkConfig::on_send_space_cb`
  /// (the loop thread) say when to ask again.
  /// @throws UnknownSendEndpoint if the send endpoint does not exist
  /// @throws NoBuffersAllocated if the endpoint was opened without buffers
  virtual NetworkBuffer* get_buffer(const EndPointAddress& address) = 0;

  /// Sends the first `buffer->pos()` bytes of `buffer` as one message. On OK the buffer belongs to
  /// the backend until the send completes, then returns to its pool.
  /// @return OK, NO_RESOURCES, MESSAGE_TOO_LARGE, or FAILED (also when `buffer` was not handed out by
  ///         `get_buffer` for this endpoint, or is already being sent)
  /// @throws UnknownSendEndpoint if the send endpoint does not exist
  virtual NetioStatus send_buffer(const EndPointAddress& address, NetworkBuffer* buffer) = 0;

  /// The minimum number of free buffers of the endpoint's pool since the previous call (the
  /// current number on the first call).
  /// @throws UnknownSendEndpoint if the send endpoint does not exist
  /// @throws NoBuffersAllocated if the endpoint was opened without buffers
  virtual std::size_t get_num_available_buffers(const EndPointAddress& address) = 0;

  /// netio3 addition (`SAFE` only): blocks the calling thread, without spinning, until the send endpoint
  /// to `address` can take a message of `message_size` bytes (header data plus data), that is until a
  /// `send_data` or `send_data_copy` of that size would not be refused with `NO_RESOURCES` for lack of
  /// room; or until the endpoint closes, or `timeout` passes. Waits for the connection to be
  /// established, too. Meant for the sender that just got `NO_RESOURCES`:
  /// @code
  /// while ((status = backend.send_data(address, data, {}, key)) == NetioStatus::NO_RESOURCES) {
  ///   if (backend.wait_for_send_space(address, data.size(), std::chrono::seconds{1}) != WaitStatus::READY) {
  ///     break; // closed, or no progress for a second
  ///   }
  /// }
  /// @endcode
  /// `READY` is a snapshot: another thread may take the room first (the send then returns
  /// `NO_RESOURCES` again: wait again). A message larger than the receiver accepts is `READY` at once
  /// (the send then returns `MESSAGE_TOO_LARGE`). Wake-ups come from the loop thread when completions
  /// free room, when the endpoint is established, and at once when it is closed from any thread, by
  /// the peer, or the backend is destroyed. A send that does not wait pays nothing for this. Buffered
  /// endpoints: waits for room in the send queue, not for a free buffer of `get_buffer` (that is
  /// `wait_for_buffer`).
  /// @param address the send endpoint, as given to `open_send_endpoint`
  /// @param message_size header data plus data of the message to send next, in bytes
  /// @param timeout how long to wait at most; zero only looks; `std::chrono::milliseconds::max()`
  ///        (or anything longer than a century) waits without a deadline
  /// @return READY, TIMED_OUT, CLOSED (also when there is no send endpoint to `address`: never
  ///         opened, or closed), ON_LOOP_THREAD (called on the loop thread: nothing waited; use
  ///         `NetworkConfig::on_send_space_cb` there), NOT_THREAD_SAFE (an `UNSAFE` backend)
  /// @throws std::invalid_argument if `timeout` is negative
  /// @throws UnsupportedConfiguration if the backend does not implement waiting (this default)
  virtual WaitStatus wait_for_send_space(const EndPointAddress& address, std::size_t message_size,
                                         std::chrono::milliseconds timeout);

  /// netio3 addition: how many keyed sends (`send_data`, `send_data_copy`) of the send endpoint to
  /// `address` have been reported by `on_send_completed_cb` since it was opened. Increases on the loop
  /// thread after each batch of completion callbacks; keys returned by `on_connection_closed_cb` are
  /// not counted. Any thread (in `UNSAFE` mode: the one thread allowed to call). For
  /// `wait_for_completed_sends`.
  /// @throws UnknownSendEndpoint if there is no send endpoint to `address`
  /// @throws UnsupportedConfiguration if the backend does not count completions (this default)
  virtual std::uint64_t completed_sends(const EndPointAddress& address);

  /// netio3 addition (`SAFE` only): blocks the calling thread, without spinning, until
  /// `completed_sends(address)` exceeds `after_count` (at least one more keyed send completed, so its
  /// zero-copy memory may be reused), the endpoint closes (its pending keys come in
  /// `on_connection_closed_cb`), or `timeout` passes. Take `after_count` from `completed_sends`
  /// before the send that needs the memory back, so that no completion is missed:
  /// @code
  /// const std::uint64_t done = backend.completed_sends(address);
  /// if (all_buffers_in_flight()) {
  ///   backend.wait_for_completed_sends(address, done, std::chrono::seconds{1});
  /// }
  /// @endcode
  /// @param address the send endpoint, as given to `open_send_endpoint`
  /// @param after_count a value of `completed_sends(address)` read earlier: waits until the count is
  ///        larger
  /// @param timeout as for `wait_for_send_space`
  /// @return READY, TIMED_OUT, CLOSED, ON_LOOP_THREAD or NOT_THREAD_SAFE, as `wait_for_send_space`
  /// @throws std::invalid_argument if `timeout` is negative
  /// @throws UnsupportedConfiguration if the backend does not implement waiting (this default)
  virtual WaitStatus wait_for_completed_sends(const EndPointAddress& address, std::uint64_t after_count,
                                              std::chrono::milliseconds timeout);

  /// netio3 addition (`SAFE` only): blocks the calling thread, without spinning, until
  /// `get_buffer(address)` can return a buffer (the connection is established, a buffer of the
  /// endpoint's pool, or of the shared pool, is free and, where the backend counts them, the receiver
  /// has granted room for one more message), the endpoint closes, or `timeout` passes. Meant for the
  /// buffered sender that just got nullptr:
  /// @code
  /// NetworkBuffer* buffer = nullptr;
  /// while ((buffer = backend.get_buffer(address)) == nullptr) {
  ///   if (backend.wait_for_buffer(address, std::chrono::seconds{1}) != WaitStatus::READY) {
  ///     break; // closed, or no buffer for a second
  ///   }
  /// }
  /// @endcode
  /// `READY` is a snapshot: another thread (or another endpoint of the shared pool) may take the
  /// buffer first; `get_buffer` then returns nullptr again: wait again. Wake-ups come from the loop
  /// thread when send completions return buffers (or grant room), when the endpoint is established,
  /// from the thread whose send returned a buffer at once, and at once when the endpoint is closed
  /// from any thread, by the peer, or the backend is destroyed. A send that does not wait pays
  /// nothing for this. Loop-thread senders use `NetworkConfig::on_send_space_cb`, which is also
  /// called after a refused `get_buffer`.
  /// @param address the send endpoint, as given to `open_send_endpoint`
  /// @param timeout as for `wait_for_send_space`
  /// @return READY, TIMED_OUT, CLOSED (also when there is no send endpoint to `address`),
  ///         ON_LOOP_THREAD or NOT_THREAD_SAFE, as `wait_for_send_space`
  /// @throws std::invalid_argument if `timeout` is negative
  /// @throws NoBuffersAllocated if the endpoint was opened without buffers (no buffer would ever come)
  /// @throws UnsupportedConfiguration if the backend does not implement waiting (this default)
  virtual WaitStatus wait_for_buffer(const EndPointAddress& address, std::chrono::milliseconds timeout);

  /// Builds the backend `type` with `config` on `evloop`.
  /// @throws UnsupportedConfiguration if this build does not contain the backend or it cannot do
  ///         what `config` asks (the message names the backend and the reason)
  /// @throws std::invalid_argument if `evloop` is null
  static std::unique_ptr<NetworkBackend> create(NetworkType type, const NetworkConfig& config,
                                                std::shared_ptr<BaseEventLoop> evloop);

protected:
  NetworkConfig m_config;                  ///< The configuration given at creation.
  std::shared_ptr<BaseEventLoop> m_evloop; ///< The loop every callback runs on.
};

} // namespace netio3
