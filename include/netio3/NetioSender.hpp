#pragma once

/// @file
/// `NetioSender`: point-to-point sending of tagged messages over either backend, coalesced
/// (`BUFFERED`), copied (`COPY`) or zero-copy (`ZERO_COPY`). The other end is a `NetioReceiver`.
///
/// Contract: `send` never blocks: it returns `NO_RESOURCES` when the connection's `nbuffers`
/// buffers or the backend's queue are full (nothing kept: retry later). `BUFFERED` and `COPY`
/// copy the caller's bytes before returning; `ZERO_COPY` reads them until `on_send_completed_cb`
/// reports the key (or the key comes back in `on_connection_closed_cb`). Callbacks run on the loop
/// thread, never inside the call; `thread_safety` says which threads may call.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "netio3/BaseEventLoop.hpp"
#include "netio3/EndPointAddress.hpp"
#include "netio3/FrontendTypes.hpp"
#include "netio3/NetworkConfig.hpp"
#include "netio3/Types.hpp"

namespace netio3 {

namespace detail {
class SendEngine;
} // namespace detail

/// Configuration of a `NetioSender`, fixed at construction.
struct NetioSenderConfig {
  /// The backend that carries the data.
  NetworkType backend_type{NetworkType::ASYNCMSG};
  /// Its transport (`TCP` for asyncmsg; `RDMA` or `TCP` for libfabric).
  NetworkMode backend_mode{NetworkMode::TCP};
  /// `SAFE`: every call from any thread. `UNSAFE`: one thread at a time (normally the loop's).
  ThreadSafetyModel thread_safety{ThreadSafetyModel::SAFE};
  /// How each message is sent.
  SendMethod method{SendMethod::BUFFERED};
  /// Bytes per buffer (BUFFERED, COPY). A message takes at most 13 bytes more than its payload,
  /// so the largest payload is `buffersize - 13`. The receiver must accept messages of this size
  /// (`ConnectionParametersRecv::buf_size >= buffersize`).
  std::size_t buffersize{16384};
  /// Buffers per connection (BUFFERED, COPY): the bound of what one connection holds unsent.
  std::size_t nbuffers{16};
  /// BUFFERED: a buffer is sent at the latest this long after its first message. Zero: only when
  /// full or on `flush()`. Must not be negative.
  std::chrono::microseconds flush_interval{1000};
  /// ZERO_COPY over libfabric: the one region in which every payload lies (registered once per
  /// connection). Ignored by the TCP backend and by the other methods.
  std::uint8_t* mr_start{nullptr};
  /// Size of the zero-copy region in bytes.
  std::size_t mr_size{0};
  /// libfabric provider (see `NetworkConfig::provider`).
  std::string provider{};
  /// See `NetworkConfig::max_unsent_bytes`.
  std::size_t max_unsent_bytes{std::size_t{8} << 20U};
  /// See `NetworkConfig::connect_timeout`.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds{10}};
  /// See `NetworkConfig::peer_timeout`.
  std::chrono::milliseconds peer_timeout{std::chrono::seconds{10}};

  /// The connection to a receiver is established: sends to it may begin.
  OnConnectionEstablishedCb on_connection_established_cb{};
  /// The connection is closed (by `disconnect`, the peer, or lost). ZERO_COPY: the keys of sends
  /// that had not completed, each reported exactly once here or by `on_send_completed_cb`.
  /// BUFFERED and COPY messages not yet sent are dropped. Last callback for the address.
  OnConnectionClosedKeysCb on_connection_closed_cb{};
  /// The connection could not be made. Last callback for the address.
  OnConnectionRefusedCb on_connection_refused_cb{};
  /// ZERO_COPY: the send with this key completed; its memory is the caller's again.
  OnSendCompletedCb on_send_completed_cb{};
};

/// Sends tagged messages to `NetioReceiver`s, one connection per receiver.
///
/// Callbacks run on the loop thread only, never inside the call that caused them. Nothing here
/// blocks on the network: when buffers or queue space run out, `send` returns `NO_RESOURCES`
/// (nothing was kept; retry later) and memory stays bounded (`nbuffers` x `buffersize` per
/// connection, plus the backend's `max_unsent_bytes`).
///
/// Per connection, messages arrive in the order of the `send` calls that returned OK, exactly
/// once, or the connection is reported closed.
///
/// Destruction closes every connection without callbacks; it must not happen inside one of the
/// sender's callbacks, and the loop must outlive the sender.
class NetioSender {
public:
  /// Creates the backend on `loop`.
  /// @throws UnsupportedConfiguration for a backend this build lacks, a configuration it cannot do,
  ///         or invalid settings (zero buffers, buffers too small for a message, negative interval)
  /// @throws std::invalid_argument if `loop` is null
  NetioSender(const NetioSenderConfig& config, std::shared_ptr<BaseEventLoop> loop);
  ~NetioSender();
  NetioSender(const NetioSender&) = delete;
  NetioSender& operator=(const NetioSender&) = delete;
  NetioSender(NetioSender&&) = delete;
  NetioSender& operator=(NetioSender&&) = delete;

  /// Opens the connection to the receiver listening on `receiver`. Returns at once; the outcome
  /// arrives as `on_connection_established_cb` or `on_connection_refused_cb`.
  /// @throws as `NetworkBackend::open_send_endpoint`
  void connect(const EndPointAddress& receiver);

  /// Closes the connection to `receiver`; `on_connection_closed_cb` follows from the loop.
  /// BUFFERED messages not yet sent are dropped (call `flush` first to send them).
  /// @throws UnknownSendEndpoint if there is no connection to `receiver`
  void disconnect(const EndPointAddress& receiver);

  /// Sends one message of `data` with `tag` and `status` to `receiver`, as the configured method
  /// does. `key` is reported by `on_send_completed_cb` for ZERO_COPY and ignored otherwise.
  /// @return OK; NO_RESOURCES (no free buffer or queue space, or not connected yet: retry);
  ///         MESSAGE_TOO_LARGE (over `buffersize - 13`, or over the receiver's limit for
  ///         ZERO_COPY); OUTSIDE_REGISTERED_REGION; INVALID_ARGUMENT (null data with a size);
  ///         FAILED (the connection is broken)
  /// @throws UnknownSendEndpoint if there is no connection to `receiver`
  NetioStatus send(const EndPointAddress& receiver, std::uint64_t tag, std::span<const std::uint8_t> data,
                   std::uint8_t status = 0, std::uint64_t key = 0);

  /// BUFFERED: hands the partly filled buffer of `receiver` to the backend now. A no-op for the
  /// other methods and for an empty buffer.
  /// @return OK, or NO_RESOURCES when the backend cannot take it now (it is sent later, by the
  ///         flush timer or the next send; nothing is lost)
  /// @throws UnknownSendEndpoint if there is no connection to `receiver`
  NetioStatus flush(const EndPointAddress& receiver);

  /// `flush(receiver)` for every connection.
  void flush();

  /// The minimum number of free buffers of `receiver`'s pool since the previous call (BUFFERED,
  /// COPY; 0 for ZERO_COPY).
  /// @throws UnknownSendEndpoint if there is no connection to `receiver`
  [[nodiscard]] std::size_t get_num_available_buffers(const EndPointAddress& receiver);

private:
  std::unique_ptr<detail::SendEngine> m_engine;
};

} // namespace netio3
