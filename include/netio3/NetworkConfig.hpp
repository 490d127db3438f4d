#pragma once

/// @file
/// Configuration of a backend and of its endpoints, and the callback types.
///
/// Callback contract (every backend keeps it):
/// - callbacks run only on the event-loop thread, one at a time, never from inside the public call
///   that caused them (a send that completes at once still reports its completion from the loop);
/// - nothing fires for an address after its `on_connection_closed_cb` (or `on_connection_refused_cb`)
///   until it is opened or accepted again;
/// - an exception thrown by a callback is caught and logged and does not corrupt the backend;
/// - callbacks may call the backend again (send, close, open), in either thread-safety model;
/// - a callback must not block: it stalls every connection on the loop.
///
/// Addresses in callbacks: for send endpoints, the address passed to `open_send_endpoint`; for
/// accepted (receive) connections, the peer's address (IP literal and its source port).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "netio3/EndPointAddress.hpp"
#include "netio3/Types.hpp"

namespace netio3 {

/// Parameters of one send endpoint (`NetworkBackend::open_send_endpoint`).
struct ConnectionParameters {
  /// Size of each buffer of the endpoint's buffered pool (bytes). Used when `num_buf > 0`.
  std::size_t buf_size{0};
  /// Number of buffers in the endpoint's pool. `num_buf > 0` makes the endpoint buffered
  /// (`get_buffer`/`send_buffer`); 0 means no pool of its own.
  std::size_t num_buf{0};
  /// Use the backend-wide shared send pool of `NetworkConfig` instead of a pool of its own.
  bool use_shared_send_buffers{false};
  /// Start of the one memory region in which every zero-copy payload of this endpoint lies.
  /// Registered once when the endpoint opens. Required for zero-copy on RDMA (a payload outside it
  /// gives `NetioStatus::OUTSIDE_REGISTERED_REGION`); ignored by the TCP backend. May be null when
  /// the endpoint never sends zero-copy (copying sends and buffered sends do not need it).
  std::uint8_t* mr_start{nullptr};
  /// Size of the zero-copy region in bytes.
  std::size_t mr_size{0};
};

/// Parameters of the connections a listen endpoint accepts (`NetworkBackend::open_listen_endpoint`).
struct ConnectionParametersRecv {
  /// The largest message (header data plus data) accepted on each connection, in bytes. Told to
  /// the sender at connection set-up; a larger send fails there with `MESSAGE_TOO_LARGE`.
  std::size_t buf_size{std::size_t{1} << 20U};
  /// Receive buffers per connection (RDMA: posted receives, i.e. the sender's credit window;
  /// TCP: how many messages may be decoded ahead, see docs/).
  std::size_t num_buf{16};
  /// Receive into the backend-wide shared pool of `NetworkConfig` instead of per-connection buffers.
  bool use_shared_receive_buffers{false};
};

/// Called with each received message (header data followed by data, one message per call). The
/// span is valid only during the call. Not called when `on_data_from_cb` is set.
using OnDataCb = std::function<void(std::span<const std::uint8_t> data)>;
/// netio3 addition: like `OnDataCb`, also naming the connection's remote address.
using OnDataFromCb = std::function<void(const EndPointAddress& remote, std::span<const std::uint8_t> data)>;
/// A connection is established: on the sender for the address given to `open_send_endpoint`, on the
/// receiver for the peer's address.
using OnConnectionEstablishedCb = std::function<void(const EndPointAddress& address)>;
/// A connection is closed (by either side, or lost). `pending_keys` holds the keys of zero-copy
/// sends of this connection that had not completed (each key is reported exactly once: either by
/// `on_send_completed_cb` or here); empty otherwise. Last callback for that connection.
using OnConnectionClosedKeysCb =
    std::function<void(const EndPointAddress& address, const std::vector<std::uint64_t>& pending_keys)>;
/// A send endpoint could not connect: nobody listens, the peer rejected it, the address is
/// unreachable or the connect timed out. The endpoint is gone afterwards. Last callback for it.
using OnConnectionRefusedCb = std::function<void(const EndPointAddress& address)>;
/// A zero-copy (`send_data`) or copying (`send_data_copy`) send completed: the library no longer
/// needs the data, and the key given to the send is reported, exactly once per accepted send (or in
/// `on_connection_closed_cb` instead). Buffered sends (`send_buffer`) carry no key and do not call
/// it: their buffer silently returns to the pool.
using OnSendCompletedCb = std::function<void(const EndPointAddress& address, std::uint64_t key)>;
/// netio3 addition: an endpoint that returned `NO_RESOURCES` for lack of room (send queue, credits,
/// send slots, bounce buffers) has room again for the message that was refused, or an endpoint whose
/// `get_buffer` returned nullptr (no free buffer, or no room granted by the receiver) can return a
/// buffer again. Called on the loop thread once per such refusal streak (the next refusal arms it
/// again; a refused send and a refused `get_buffer` of one endpoint are armed separately, and each
/// is called for), so that loop-thread senders (`UNSAFE`, or `SAFE` senders inside callbacks) resume
/// without a timer. Not called for a refusal because the endpoint is not established yet
/// (`on_connection_established_cb` says when), nor after the endpoint closed. Threads other than the
/// loop's wait with `NetworkBackend::wait_for_send_space` or `NetworkBackend::wait_for_buffer`.
using OnSendSpaceCb = std::function<void(const EndPointAddress& address)>;
/// netio3 addition: asked on the loop thread before an incoming connection is accepted. Return
/// false to reject it (the peer sees `on_connection_refused_cb`). Unset: accept all.
using OnConnectionRequestCb = std::function<bool(const EndPointAddress& remote)>;

/// Configuration of a backend, fixed at `NetworkBackend::create`.
struct NetworkConfig {
  /// Transport. The TCP backend only accepts `TCP`.
  NetworkMode mode{NetworkMode::TCP};
  /// Whether public calls may come from any thread (see `ThreadSafetyModel`).
  ThreadSafetyModel thread_safety{ThreadSafetyModel::SAFE};

  /// Create a backend-wide send pool, used by endpoints opened with
  /// `ConnectionParameters::use_shared_send_buffers`.
  bool use_shared_send_buffers{false};
  /// Size of each buffer of the shared send pool (bytes).
  std::size_t shared_send_buf_size{std::size_t{64} << 10U};
  /// Number of buffers in the shared send pool.
  std::size_t shared_send_num_buf{256};

  /// Create a backend-wide receive pool, used by listen endpoints opened with
  /// `ConnectionParametersRecv::use_shared_receive_buffers`.
  bool use_shared_receive_buffers{false};
  /// Size of each buffer of the shared receive pool: the largest message accepted on connections
  /// that use it.
  std::size_t shared_receive_buf_size{std::size_t{1} << 20U};
  /// Number of buffers in the shared receive pool.
  std::size_t shared_receive_num_buf{256};

  /// Each received message (see `OnDataCb`); not called when `on_data_from_cb` is set.
  OnDataCb on_data_cb{};
  /// A connection is established (see `OnConnectionEstablishedCb`).
  OnConnectionEstablishedCb on_connection_established_cb{};
  /// A connection is closed, with its pending zero-copy keys (see `OnConnectionClosedKeysCb`).
  OnConnectionClosedKeysCb on_connection_closed_cb{};
  /// A send endpoint could not connect (see `OnConnectionRefusedCb`).
  OnConnectionRefusedCb on_connection_refused_cb{};
  /// A zero-copy or copying send completed (see `OnSendCompletedCb`).
  OnSendCompletedCb on_send_completed_cb{};
  /// netio3 addition: each received message with its connection's remote address, instead of
  /// `on_data_cb` (see `OnDataFromCb`).
  OnDataFromCb on_data_from_cb{};
  /// netio3 addition: asked before an incoming connection is accepted (see `OnConnectionRequestCb`).
  OnConnectionRequestCb on_connection_request_cb{};
  /// netio3 addition: a send endpoint that refused a send with `NO_RESOURCES` has room again (see
  /// `OnSendSpaceCb`). Unset: nothing is recorded on a refusal.
  OnSendSpaceCb on_send_space_cb{};

  /// libfabric only: provider to use instead of the mode's default (`verbs` for RDMA, `tcp` for
  /// TCP), e.g. `"sockets"`. Empty: the `FI_PROVIDER` environment variable if set, else the default.
  std::string provider{};
  /// Per connection: the most bytes accepted by send calls but not yet handed to the transport.
  /// Past it sends return `NO_RESOURCES` (never block, never grow memory beyond it). Its effect on
  /// throughput depends on the message size (docs/performance.md, 1 MiB from an application thread).
  std::size_t max_unsent_bytes{std::size_t{8} << 20U};
  /// How long a connect may take before it is reported through `on_connection_refused_cb`.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds{10}};
  /// How long a silent or unresponsive peer may go unnoticed before its connection is reported
  /// closed (with its pending keys). TCP backend: TCP keepalive and TCP_USER_TIMEOUT. libfabric
  /// backend: keepalive messages on idle connections, checked every peer_timeout/4 (a receiver
  /// whose loop thread is blocked for longer than this is taken for dead, too). Zero: no detection
  /// of our own (the OS or provider defaults).
  std::chrono::milliseconds peer_timeout{std::chrono::seconds{10}};
  /// libfabric only: after a wake-up of a receiving connection that completed nothing (part of a
  /// large message arrived), how long the loop keeps reading its completion queue (between its
  /// other work, never blocking it) before sleeping on the queue's fd again. Each such sleep costs
  /// the sender a wake-up per arriving segment; 1 MiB messages over the `tcp` provider run about
  /// 1.3x faster with it. Adaptive per connection: halved after a poll that saw no completion, so a
  /// connection whose data trickles in stops polling. Zero: never poll. Must not be negative.
  std::chrono::microseconds receive_poll{500};
  /// Most connections accepted per listen endpoint at once; further ones are rejected. 0: no limit.
  std::size_t max_connections_per_listener{0};
};

} // namespace netio3
