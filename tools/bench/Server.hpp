#pragma once

// The receiving side of netio3-bench: one listen endpoint; counts and checks the data messages of
// each run, echoes pings, and sends the receiver's figures back to the client over a reply
// connection that it opens to the client's listen port.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <vector>

#include "Options.hpp"
#include "Protocol.hpp"
#include "netio3/EpollEventLoop.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::bench {

/// Runs the server role until stopped (SIGINT/SIGTERM) or, with `once`, until its client leaves.
class Server {
public:
  explicit Server(ServerOptions options);
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  Server(Server&&) = delete;
  Server& operator=(Server&&) = delete;
  ~Server();

  /// Listens, prints "netio3-bench server: listening on ADDRESS:PORT" on stdout, serves.
  /// @return the process exit code.
  int run();

private:
  using Clock = std::chrono::steady_clock;

  /// State of the run announced by the latest hello.
  struct RunState {
    bool active{false};
    HelloBody hello{};
    std::vector<std::uint64_t> next_sequence; ///< Per data connection.
    std::uint32_t hellos{0};
    std::uint32_t ends{0};
    std::uint64_t expected{0};
    std::uint64_t received{0};
    std::uint64_t sequence_errors{0};
    std::uint64_t protocol_errors{0};
    bool started{false};
    Clock::time_point first_data{};
    std::uint64_t warm_count{0}; ///< Received count at which warm-up ends; 0: decided by time.
    Clock::duration warm_time{};
    std::uint64_t warm_check_interval{1024}; ///< Duration mode: messages between two clock reads.
    std::uint32_t connections_seen{0};       ///< Connections that have delivered data in this run.
    bool warmed{false};
    std::uint64_t allocations_at_warm{0};
    std::uint64_t received_at_warm{0};
  };

  void on_data(const EndPointAddress& remote, std::span<const std::uint8_t> message);
  void count_data(const WireHeader& header);
  /// Handles a control message at the start of `rest`; returns the bytes it used (0: stop parsing).
  std::size_t handle_control(const EndPointAddress& remote, const WireHeader& header,
                             std::span<const std::uint8_t> rest);
  void handle_hello(const EndPointAddress& remote, std::span<const std::uint8_t> message);
  void handle_end(std::span<const std::uint8_t> message);
  void finish_run();
  void ensure_reply_endpoint(const EndPointAddress& remote, std::uint16_t port, SendMode mode);
  void on_established(const EndPointAddress& address);
  void on_closed(const EndPointAddress& address);
  void on_refused(const EndPointAddress& address);
  /// Sends on the reply connection now, or queues it (in order) until that is possible.
  void send_reply(std::span<const std::uint8_t> message);
  NetioStatus send_reply_now(std::span<const std::uint8_t> message);
  void flush_pending_replies();
  void end_session();

  ServerOptions m_options;
  std::shared_ptr<EpollEventLoop> m_loop;
  std::unique_ptr<NetworkBackend> m_backend;
  EventSignalHandle m_stop_signal;
  EventTimerHandle m_retry_timer;

  std::optional<EndPointAddress> m_reply;
  SendMode m_reply_mode{SendMode::Copy};
  bool m_reply_established{false};
  NetworkBuffer* m_reply_held_buffer{nullptr};  ///< A filled buffer whose send_buffer was refused.
  NetworkBuffer* m_reply_spare_buffer{nullptr}; ///< An empty buffer got from the pool and not used.
  std::vector<std::vector<std::uint8_t>> m_pending_replies;
  std::uint64_t m_reply_key{0};

  std::size_t m_open_connections{0};
  std::set<EndPointAddress> m_data_peers; ///< Accepted data connections, by peer address.
  bool m_session_started{false};
  int m_exit_code{0};
  RunState m_run;
};

} // namespace netio3::bench
