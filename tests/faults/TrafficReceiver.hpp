#pragma once

/// @file
/// `TrafficReceiver`: a listen endpoint that checks every message it receives with a
/// `StreamVerifier` (order, exactly-once, integrity per stream) and keeps count of connections,
/// closes and admission decisions. Its loop runs on a thread of its own; figures can be read from
/// any thread.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>

#include "FaultProtocol.hpp"
#include "netio3/EpollEventLoop.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::faults {

/// How a `TrafficReceiver` is set up.
struct ReceiverOptions {
  NetworkType type{NetworkType::ASYNCMSG};
  std::string provider{}; ///< libfabric provider ("tcp"); empty: the backend's default.
  ThreadSafetyModel thread_safety{ThreadSafetyModel::SAFE};
  EndPointAddress listen{"127.0.0.1", 0};
  std::size_t max_message{(std::size_t{1} << 20U) + 64U}; ///< ConnectionParametersRecv::buf_size
  std::size_t num_buf{16};                                ///< ConnectionParametersRecv::num_buf
  std::chrono::milliseconds peer_timeout{std::chrono::seconds{10}};
  /// NetworkConfig::connect_timeout (on a listener: how long an accepted connection may take to
  /// complete its handshake).
  std::chrono::milliseconds connect_timeout{std::chrono::seconds{10}};
  std::size_t max_connections{0}; ///< NetworkConfig::max_connections_per_listener
  /// NetworkConfig::on_connection_request_cb (called on the loop thread); unset: accept all.
  std::function<bool(const EndPointAddress& remote)> admission{};
  /// After this many messages the loop thread blocks inside on_data until `release_stall()` (or the
  /// process dies): a receiver that stops reading. 0: never.
  std::uint64_t stall_after{0};
};

/// Figures of a `TrafficReceiver` at one moment.
struct ReceiverSnapshot {
  VerifierTotals totals{};
  std::string first_error{};
  std::uint64_t established{0};      ///< on_connection_established_cb calls
  std::uint64_t closed{0};           ///< on_connection_closed_cb calls
  std::uint64_t open_connections{0}; ///< established and not yet closed
  std::uint64_t requests{0};         ///< on_connection_request_cb calls
  std::uint64_t rejected{0};         ///< of those, answered false
  std::uint64_t protocol_errors{0};  ///< callbacks breaking the contract (keys on a receive side, closed twice, ...)
  std::uint64_t closed_with_data{0}; ///< closed connections that had carried at least one message
};

/// See the file comment.
class TrafficReceiver {
public:
  /// Creates the loop and backend, opens the listen endpoint, starts the loop thread.
  /// Throws what `NetworkBackend::create` / `open_listen_endpoint` throw.
  explicit TrafficReceiver(ReceiverOptions options);
  TrafficReceiver(const TrafficReceiver&) = delete;
  TrafficReceiver& operator=(const TrafficReceiver&) = delete;
  TrafficReceiver(TrafficReceiver&&) = delete;
  TrafficReceiver& operator=(TrafficReceiver&&) = delete;
  /// Stops the loop and destroys the backend (closing every connection without callbacks).
  ~TrafficReceiver();

  /// The address actually listened on (real port).
  [[nodiscard]] const EndPointAddress& address() const noexcept { return m_address; }
  /// Figures now.
  [[nodiscard]] ReceiverSnapshot snapshot() const;
  /// Verifier state of `stream`.
  [[nodiscard]] StreamState stream(std::uint16_t stream) const;
  /// True when the connection that carried `stream` was reported closed.
  [[nodiscard]] bool stream_connection_closed(std::uint16_t stream) const;
  /// Remote addresses whose connection request was asked, in order (admission tests).
  [[nodiscard]] std::vector<EndPointAddress> requested_remotes() const;
  /// Remote addresses currently connected.
  [[nodiscard]] std::set<EndPointAddress> open_remotes() const;
  /// Lets a stalled loop thread continue (see `ReceiverOptions::stall_after`).
  void release_stall();
  /// Closes the listen endpoint (and its connections) from the calling thread.
  void close_listener();
  /// Stops the loop thread (figures stay readable). Idempotent.
  void stop();

private:
  void on_data(const EndPointAddress& remote, std::span<const std::uint8_t> data);

  ReceiverOptions m_options;
  std::shared_ptr<EpollEventLoop> m_loop;
  std::unique_ptr<NetworkBackend> m_backend;
  EndPointAddress m_address;
  std::thread m_thread;
  std::atomic<bool> m_stopped{false};

  mutable std::mutex m_mutex;
  StreamVerifier m_verifier;
  ReceiverSnapshot m_counts;
  struct Connection {
    std::uint16_t stream{0};
    bool has_stream{false};
  };
  std::unordered_map<EndPointAddress, Connection> m_connections; ///< open connections
  std::set<std::uint16_t> m_closed_streams;
  std::vector<EndPointAddress> m_requested;
  std::uint64_t m_messages{0};

  std::mutex m_stall_mutex;
  std::condition_variable m_stall_cv;
  bool m_stall_released{false};
};

} // namespace netio3::faults
