#pragma once

/// @file
/// `NetioReceiver`: receives the tagged messages of `NetioSender`s (or of a `NetioPublisher`, inside
/// `NetioSubscriber`) and hands them over one by one, decoded, or as whole buffers.
///
/// Contract: data callbacks run on the loop thread, in order per connection; the bytes they get
/// belong to the receiver and are valid during the call only (copy what must outlive it). A
/// callback must not block: it holds up every connection of the loop.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "netio3/BaseEventLoop.hpp"
#include "netio3/EndPointAddress.hpp"
#include "netio3/NetworkConfig.hpp"
#include "netio3/Types.hpp"

namespace netio3 {

/// Called once per message: its tag, its payload (valid during the call only) and its status.
using OnTaggedDataCb = std::function<void(std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t status)>;
/// Called once per received buffer, undecoded (buffered wire format, see `BufferFormatter`; valid
/// during the call only), for programs that decode themselves or forward buffers as they are.
using OnBufferCb = std::function<void(std::span<const std::uint8_t> buffer)>;

/// Configuration of a `NetioReceiver`, fixed at construction.
struct NetioReceiverConfig {
  /// The backend that carries the data (the sender's must be the same).
  NetworkType backend_type{NetworkType::ASYNCMSG};
  /// Its transport.
  NetworkMode backend_mode{NetworkMode::TCP};
  /// `SAFE`: every call from any thread. `UNSAFE`: one thread at a time (normally the loop's).
  ThreadSafetyModel thread_safety{ThreadSafetyModel::SAFE};
  /// libfabric provider (see `NetworkConfig::provider`).
  std::string provider{};
  /// See `NetworkConfig::peer_timeout`.
  std::chrono::milliseconds peer_timeout{std::chrono::seconds{10}};

  /// Each decoded message. Not called when `on_buffer_cb` is set.
  OnTaggedDataCb on_data_cb{};
  /// Each buffer as received, instead of `on_data_cb`. The buffer is not checked: decode it with
  /// `BufferFormatter::decode`, which rejects malformed ones.
  OnBufferCb on_buffer_cb{};
  /// A sender connected (its address: IP literal and source port).
  OnConnectionEstablishedCb on_connection_established_cb{};
  /// A sender's connection closed (also after a malformed buffer, see the class comment).
  OnConnectionClosedKeysCb on_connection_closed_cb{};
  /// Asked before a connection is accepted (see `NetworkConfig::on_connection_request_cb`).
  /// Unset: accept all.
  OnConnectionRequestCb on_connection_request_cb{};
};

/// Listens for `NetioSender` connections and delivers their messages on the loop thread.
///
/// A buffer that is not in the buffered wire format (see `BufferFormatter::check`) is rejected as a
/// whole, before any of its messages is delivered: the reason is logged at error level and the
/// connection that sent it is closed (`on_connection_closed_cb`). Other connections carry on.
///
/// Destruction closes every listener and connection without callbacks; it must not happen inside
/// one of the receiver's callbacks.
class NetioReceiver {
public:
  /// Creates the backend on `loop`.
  /// @throws UnsupportedConfiguration for a backend this build lacks or a configuration it cannot do
  /// @throws std::invalid_argument if `loop` is null, or neither callback is set
  NetioReceiver(const NetioReceiverConfig& config, std::shared_ptr<BaseEventLoop> loop);
  ~NetioReceiver();
  NetioReceiver(const NetioReceiver&) = delete;
  NetioReceiver& operator=(const NetioReceiver&) = delete;
  NetioReceiver(NetioReceiver&&) = delete;
  NetioReceiver& operator=(NetioReceiver&&) = delete;

  /// Listens on `local` (port 0: a free port) for senders; `params.buf_size` is the largest
  /// message (or buffer) accepted.
  /// @return the address actually listened on
  /// @throws as `NetworkBackend::open_listen_endpoint`
  EndPointAddress listen(const EndPointAddress& local, const ConnectionParametersRecv& params = {});

  /// Stops listening on `local` (as returned by `listen`) and closes its connections.
  /// @throws as `NetworkBackend::close_listen_endpoint`
  void close(const EndPointAddress& local);

  /// Closes one sender's connection (named by its address as the callbacks name it).
  /// @throws UnknownListenEndpoint if there is no such connection
  void close_connection(const EndPointAddress& remote);

private:
  class Impl;
  std::unique_ptr<Impl> m_impl;
};

} // namespace netio3
