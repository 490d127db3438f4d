#pragma once

/// @file
/// `Recorder`: receives every callback of one backend, checks the callback contract as it goes
/// (loop thread only, not inside the call that caused it, nothing after the closed callback), keeps
/// what the tests look at, and lets the test thread wait for a condition with a deadline.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "conformance/Support.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::conformance {

/// What the recorder does with received messages.
enum class DataMode {
  /// Decode each message as a test message (see `check_message`) and check it is the next one of
  /// its stream; keep only counts and errors (cheap, for many messages).
  Validate,
  /// Keep a copy of every message, for tests that compare byte for byte with what they sent.
  Store,
};

/// One `on_connection_closed_cb`.
struct ClosedEvent {
  EndPointAddress address;
  std::vector<std::uint64_t> pending_keys;
};

/// One received message (`DataMode::Store`).
struct ReceivedMessage {
  /// The remote address (empty address when delivered through `on_data_cb`).
  EndPointAddress remote;
  std::vector<std::uint8_t> bytes;
};

/// Progress of one stream of test messages (`DataMode::Validate`).
struct StreamProgress {
  /// The sequence number expected next (= messages received in order so far).
  std::uint64_t next_seq{0};
  /// The connection the stream arrived on (first message).
  EndPointAddress remote;
};

/// Everything recorded. Read it through `Recorder::inspect` or `Recorder::wait`.
struct RecorderState {
  /// Every `on_connection_established_cb`, in order.
  std::vector<EndPointAddress> established;
  /// Every `on_connection_closed_cb`, in order.
  std::vector<ClosedEvent> closed;
  /// Every `on_connection_refused_cb`, in order.
  std::vector<EndPointAddress> refused;
  /// Addresses passed to `on_connection_request_cb`.
  std::vector<EndPointAddress> requests;
  /// Times each key was reported by `on_send_completed_cb`.
  std::unordered_map<std::uint64_t, unsigned> completed;
  /// Times each key was returned in `on_connection_closed_cb`.
  std::unordered_map<std::uint64_t, unsigned> returned;
  /// `on_send_completed_cb` calls.
  std::size_t completions{0};
  /// Keys returned in `on_connection_closed_cb` calls (all of them, repeats included).
  std::size_t returned_total{0};

  /// Data callbacks (messages received), and their bytes.
  std::size_t messages{0};
  std::size_t bytes{0};
  /// Messages that came through `on_data_cb` and through `on_data_from_cb`.
  std::size_t via_on_data_cb{0};
  std::size_t via_on_data_from_cb{0};
  /// Copies of the messages (`DataMode::Store`).
  std::vector<ReceivedMessage> stored;
  /// Progress per stream (`DataMode::Validate`).
  std::map<std::uint32_t, StreamProgress> streams;
  /// Messages that were corrupt, out of order, duplicated or after a gap.
  std::size_t data_error_count{0};
  /// The first data errors (at most 20).
  std::vector<std::string> data_errors;

  /// Callback-contract violations.
  std::size_t violation_count{0};
  /// The first contract violations (at most 20).
  std::vector<std::string> violations;
  /// Callbacks of every kind.
  std::size_t callbacks{0};
  /// Data callbacks currently held by `pause_data`.
  std::size_t paused_callbacks{0};

  /// The life of the connections of one address, counted in generations (an address may be
  /// opened, closed and opened again).
  struct AddressLife {
    /// A send endpoint of the test (opened with `expect_reopen`), not an accepted connection.
    bool send_endpoint{false};
    /// Generations begun: opens of a send endpoint, or established accepted connections.
    unsigned begun{0};
    /// Established callbacks.
    unsigned established{0};
    /// Generations ended by a closed or refused callback.
    unsigned ended{0};
    /// Established generations not yet closed (data and completions are allowed only then).
    unsigned live{0};
  };
  /// Per address, for the ordering checks.
  std::unordered_map<EndPointAddress, AddressLife> lives;

  /// Keys done (completed or returned) among `keys`.
  [[nodiscard]] std::size_t keys_done(const std::vector<std::uint64_t>& keys) const;
  /// True when `key` was completed or returned.
  [[nodiscard]] bool key_done(std::uint64_t key) const;
  /// Number of closed callbacks for `address`.
  [[nodiscard]] std::size_t closed_count(const EndPointAddress& address) const;
  /// Number of established callbacks for `address`.
  [[nodiscard]] std::size_t established_count(const EndPointAddress& address) const;
  /// Number of refused callbacks for `address`.
  [[nodiscard]] std::size_t refused_count(const EndPointAddress& address) const;
  /// Messages received in order on `stream` so far.
  [[nodiscard]] std::uint64_t stream_progress(std::uint32_t stream) const;
};

/// Collects the callbacks of one backend (see the file comment). Thread-safe.
class Recorder {
public:
  /// @param loop_thread the thread that runs the backend's event loop: every callback must run there.
  explicit Recorder(std::thread::id loop_thread) : m_loop_thread{loop_thread} {}

  /// Sets every callback of `config` to this recorder. With `use_on_data_from`, received data come
  /// through `on_data_from_cb`, otherwise through `on_data_cb`; with `set_both_data_callbacks` both
  /// are set (and only `on_data_from_cb` may be used by the backend).
  void attach(NetworkConfig& config, bool use_on_data_from = true, bool set_both_data_callbacks = false);

  /// Chooses how data are recorded (before the data arrive).
  void set_data_mode(DataMode mode);
  /// Whether incoming connection requests are accepted (default true).
  void set_accept_connections(bool accept) { m_accept_connections.store(accept); }
  /// With `paused`, every data callback blocks the loop thread until `pause_data(false)`, so that
  /// the backend stops reading (a receiver that stops consuming).
  void pause_data(bool paused);
  /// With `every > 0`, every `every`-th data callback and every `every`-th completion callback throws
  /// `std::runtime_error` after recording (the backend must catch it and carry on).
  void throw_from_callbacks(std::size_t every) { m_throw_every.store(every); }
  /// The test is about to (re)open a send endpoint to `address`: callbacks for it are allowed again.
  void expect_reopen(const EndPointAddress& address);
  /// Marks the current thread as inside a public backend call (see `CallScope`).
  void enter_call() { m_in_call.fetch_add(1); }
  void leave_call() { m_in_call.fetch_sub(1); }

  /// Waits until `predicate(state)` holds or `deadline` passes; returns whether it holds.
  template <class Predicate>
  bool wait_until(Predicate predicate, std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock{m_mutex};
    return m_changed.wait_until(lock, deadline, [&] { return predicate(std::as_const(m_state)); });
  }
  /// `wait_until` with the environment's deadline.
  template <class Predicate>
  bool wait(Predicate predicate) {
    return wait_until(predicate, deadline_from_now());
  }
  /// Waits until any callback happens or `timeout` passes (used between retries after NO_RESOURCES).
  void wait_for_progress(std::chrono::milliseconds timeout);
  /// Runs `reader(state)` under the lock and returns what it returns.
  template <class Reader>
  auto inspect(Reader reader) const {
    std::lock_guard lock{m_mutex};
    return reader(m_state);
  }

  /// One line with the counts of everything recorded, for failure messages.
  [[nodiscard]] std::string summary() const;
  /// Contract violations seen so far (wrong thread, re-entrant, after closed, ...), one per line.
  [[nodiscard]] std::string violations_text() const;
  [[nodiscard]] std::size_t violation_count() const;
  /// Data errors seen so far, one per line.
  [[nodiscard]] std::string data_errors_text() const;
  [[nodiscard]] std::size_t data_error_count() const;

private:
  void on_data(const EndPointAddress* remote, std::span<const std::uint8_t> data);
  void on_established(const EndPointAddress& address);
  void on_closed(const EndPointAddress& address, const std::vector<std::uint64_t>& keys);
  void on_refused(const EndPointAddress& address);
  void on_completed(const EndPointAddress& address, std::uint64_t key);
  bool on_request(const EndPointAddress& remote);

  /// Common checks of every callback; call with the lock held.
  void check_callback(const char* name, const EndPointAddress* address);
  void violation(std::string text);
  void data_error(std::string text);

  const std::thread::id m_loop_thread;
  mutable std::mutex m_mutex;
  std::condition_variable m_changed;
  RecorderState m_state;
  DataMode m_data_mode{DataMode::Validate};
  bool m_paused{false};
  std::atomic<bool> m_accept_connections{true};
  std::atomic<int> m_in_call{0};
  std::atomic<std::size_t> m_throw_every{0};
};

/// Marks a public backend call made on the loop thread, so that a callback that runs inside it is
/// reported as a violation ("never from inside the call that caused them").
class CallScope {
public:
  explicit CallScope(Recorder& recorder) : m_recorder{recorder} { m_recorder.enter_call(); }
  ~CallScope() { m_recorder.leave_call(); }
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;
  CallScope(CallScope&&) = delete;
  CallScope& operator=(CallScope&&) = delete;

private:
  Recorder& m_recorder;
};

} // namespace netio3::conformance
