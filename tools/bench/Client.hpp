#pragma once

// The sending side of netio3-bench: opens the data connections and a listen endpoint for the
// server's replies, then runs one measurement per message size.
//
// Threading: the event loop runs on its own thread. With ThreadSafetyModel::UNSAFE every backend
// call after set-up happens on the loop thread (the sender is a self-rescheduling loop task); with
// SAFE the calling (application) thread sends while the loop thread does the I/O.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "Options.hpp"
#include "Protocol.hpp"
#include "Results.hpp"
#include "netio3/EpollEventLoop.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::bench {

/// How long set-up steps (connect, hello, result) may take before the client gives up.
inline constexpr std::chrono::milliseconds kControlTimeout{60000};

/// Runs the client role.
class Client {
public:
  explicit Client(ClientOptions options);
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  Client(Client&&) = delete;
  Client& operator=(Client&&) = delete;
  ~Client();

  /// Connects, runs every size of the options in turn, disconnects.
  /// @throws std::runtime_error when set-up fails (the message says what and why); a failed run is
  ///         reported in its RunResult instead.
  std::vector<RunResult> run_all();

private:
  using Clock = std::chrono::steady_clock;

  enum class Phase : std::uint8_t { Sending, Flushing, Ending, Done };

  /// One data connection (one send endpoint).
  struct Connection {
    EndPointAddress address;
    std::uint32_t index{0};
    Phase phase{Phase::Done};
    std::uint64_t next_sequence{0};
    std::uint64_t quota{0};         ///< Messages still to send in count mode.
    NetworkBuffer* buffer{nullptr}; ///< Buffered mode: the buffer being filled.
  };

  // --- set-up and tear-down ---
  void start();
  void stop() noexcept;
  [[nodiscard]] std::vector<EndPointAddress> data_addresses() const;
  /// Opens the reply listener(s) where the server's reply connection can arrive (see
  /// reply_listen_hosts in Client.cpp), all on one port.
  void open_reply_listeners(const ConnectionParametersRecv& receive);
  /// "127.0.0.1:P and [::1]:P": the reply listeners, for messages.
  [[nodiscard]] std::string reply_listeners_text() const;
  /// Runs `task` where backend calls are allowed (the loop thread in UNSAFE, here in SAFE) and
  /// waits for it.
  void run_in_sender_context(const std::function<void()>& task);
  void wait_for(const char* what, std::chrono::milliseconds timeout, const std::function<bool()>& done);

  // --- one run ---
  RunResult run_one(std::size_t size, std::uint32_t run_id);
  void prepare_run(std::size_t size, std::uint32_t run_id);
  void send_hellos();
  void run_throughput();
  void run_latency();
  void finish_result(RunResult& result);

  // --- sending (the sender context only) ---
  /// Sends a budget of messages over the connections; returns true when anything was accepted.
  bool pump();
  NetioStatus send_data_message(Connection& connection, MessageKind kind);
  NetioStatus flush_buffer(Connection& connection);
  NetioStatus send_control(Connection& connection, std::span<const std::uint8_t> message);
  void note_sent(std::uint64_t count);
  void note_data_finished();
  void on_pump_signal();
  bool send_next_ping();
  void on_pong(const WireHeader& header);

  // --- callbacks (loop thread) ---
  void on_data(std::span<const std::uint8_t> message);
  void on_established(const EndPointAddress& address);
  void on_closed(const EndPointAddress& address);
  void on_refused(const EndPointAddress& address);
  void fail(std::string reason);
  void on_progress_timer();

  ClientOptions m_options;
  std::shared_ptr<EpollEventLoop> m_loop;
  std::unique_ptr<NetworkBackend> m_backend;
  std::thread m_loop_thread;
  EventSignalHandle m_task_signal;
  EventSignalHandle m_pump_signal;
  EventTimerHandle m_progress_timer;
  bool m_progress_enabled{false};
  std::atomic<bool> m_progress_active{false};
  std::atomic<Clock::rep> m_progress_start_ns{0};
  std::atomic<std::size_t> m_progress_size{0};

  std::vector<Connection> m_connections;
  std::unordered_map<EndPointAddress, std::size_t> m_connection_index;
  std::vector<EndPointAddress> m_reply_listens; ///< One port; one listener per address family needed.
  std::vector<std::uint8_t> m_payload;          ///< Constant bytes sent by copy and zero-copy sends.
  std::size_t m_max_size{0};
  std::size_t m_pool_buffer_size{0};
  std::size_t m_pool_buffers{0};

  // Shared between the loop thread and the application thread, under m_mutex.
  std::mutex m_mutex;
  std::condition_variable m_changed;
  std::vector<std::function<void()>> m_tasks;
  std::size_t m_established{0};
  std::string m_failure;
  std::atomic<bool> m_failed{false};
  std::uint32_t m_ready_run{0};
  std::uint32_t m_awaiting_ready_run{0}; ///< The run whose ready message is awaited (0: none).
  std::optional<ReceiverFigures> m_receiver_figures;
  std::uint32_t m_result_run{0};
  bool m_sending_finished{false};
  std::uint32_t m_run_id_started{0}; ///< The run the application thread is in.

  // The current run. Written by the sender context; read by the application thread after
  // m_sending_finished (under m_mutex) or by the sender itself.
  std::uint32_t m_run_id{0};
  std::size_t m_size{0};
  std::size_t m_buffer_limit{0}; ///< Buffered mode: bytes packed per buffer in this run.
  bool m_duration_mode{false};
  Clock::time_point m_deadline{};
  std::size_t m_cursor{0};
  std::size_t m_sending_connections{0};
  std::size_t m_done_connections{0};
  bool m_started{false};
  bool m_data_finished{false};
  Clock::time_point m_first_send{};
  Clock::time_point m_last_send{};
  std::uint64_t m_warm_count{0};
  bool m_warmed{false};
  std::size_t m_connections_started{0}; ///< Connections that have sent in this run.
  std::uint64_t m_allocations_at_warm{0};
  std::uint64_t m_sent_at_warm{0};
  std::uint64_t m_allocations_at_end{0};
  std::atomic<std::uint64_t> m_sent{0};
  std::uint64_t m_no_resources{0};
  /// Throughput: the connection that refused a send in the last pump (null: none), the size
  /// of what it refused, for wait_for_send_space, and whether the refusal was get_buffer's nullptr,
  /// for wait_for_buffer.
  Connection* m_refused{nullptr};
  std::size_t m_refused_size{0};
  bool m_refused_buffer{false};
  /// Set by the send call that just returned NO_RESOURCES because get_buffer returned nullptr;
  /// taken by note_refused.
  bool m_no_buffer{false};
  void note_refused(Connection& connection, std::size_t size) noexcept {
    m_refused = &connection;
    m_refused_size = size;
    m_refused_buffer = m_no_buffer;
    m_no_buffer = false;
  }
  /// Waits after a refused send of `size` bytes on `connection` (SAFE): for a free buffer after
  /// get_buffer's nullptr, else for room. CLOSED or a timeout: the next attempt reports it.
  void wait_after_refusal(const Connection& connection, std::size_t size, bool no_buffer,
                          std::chrono::milliseconds timeout);
  std::atomic<std::uint64_t> m_completions{0};
  /// UNSAFE: the sender made no progress and waits for on_send_space_cb (loop thread only).
  bool m_waiting_for_space{false};

  // Latency runs.
  std::vector<std::uint64_t> m_round_trips_ns;
  std::size_t m_round_trip_capacity{0};
  std::uint64_t m_pings_sent{0};
  std::uint64_t m_pings_wanted{0}; ///< 0 in duration mode.
  std::uint64_t m_pings_warmup{0};
  Clock::time_point m_ping_sent_at{};
  bool m_ping_pending{false};            ///< A ping was refused for backpressure and waits for a retry.
  bool m_ping_refused_buffer{false};     ///< That refusal was get_buffer's nullptr (buffered mode).
  std::atomic<std::uint64_t> m_pongs{0}; ///< Pongs received; UINT64_MAX when the run failed.
};

} // namespace netio3::bench
