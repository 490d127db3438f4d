#pragma once

/// @file
/// `TrafficSender`: streams of verifiable test messages (see FaultProtocol.hpp) over send endpoints
/// of one or more backends sharing one event loop, in every send mode, with exact bookkeeping of
/// the completion keys: each key of an accepted send must come back exactly once, through
/// `on_send_completed_cb` or in the pending keys of `on_connection_closed_cb`.
///
/// One stream is one send endpoint (one connection). A "pump" sends as much as the backend takes
/// (until `NO_RESOURCES`, a full key window or a busy zero-copy slot) and retries after
/// completions. With `ThreadSafetyModel::SAFE` the pump runs on a thread of its own, concurrently
/// with the loop thread (the normal application case); with `UNSAFE` it runs on the loop thread
/// (from a timer and a signal), so the backend is only ever called from that thread.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "netio3/EpollEventLoop.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::faults {

/// The send calls the sender uses; the mode of each message is picked among the enabled ones.
enum class SendMode : unsigned {
  copy = 0,         ///< send_data_copy(span)
  copy_iov = 1,     ///< send_data_copy(iovec), payload in three pieces
  zerocopy = 2,     ///< send_data(span) from the stream's registered region
  zerocopy_iov = 3, ///< send_data(iovec) from the region, in three pieces
  buffered = 4,     ///< get_buffer / send_buffer (header written into the buffer)
};
inline constexpr unsigned send_mode_count = 5;
/// Bit of `mode` in `SenderOptions::modes`.
[[nodiscard]] constexpr unsigned mode_bit(SendMode mode) noexcept {
  return 1U << static_cast<unsigned>(mode);
}
/// Every send mode.
inline constexpr unsigned all_send_modes = (1U << send_mode_count) - 1U;
/// Parses "copy,zerocopy,buffered,copy-iov,zerocopy-iov" or "all" into a mode mask; throws
/// std::invalid_argument naming the unknown word.
[[nodiscard]] unsigned parse_send_modes(const std::string& text);
/// "copy" etc.
[[nodiscard]] const char* send_mode_name(SendMode mode) noexcept;

/// What one stream sends and how fast.
struct StreamProfile {
  unsigned modes{all_send_modes};        ///< Send modes to mix (mask of `mode_bit`).
  std::size_t min_size{0};               ///< Smallest payload (after the 16-byte record header).
  std::size_t max_size{4096};            ///< Largest payload.
  std::size_t window{4096};              ///< Most keyed sends in flight (rounded up to a power of 2).
  std::size_t zerocopy_bytes{4U << 20U}; ///< Registered zero-copy region (at least 2 slots of max_size).
  std::size_t buffer_count{32};          ///< Buffers of the endpoint's buffered pool.
  std::size_t burst{256};                ///< Most messages per pump round.
  std::uint64_t rate{0};                 ///< Messages per second; 0: as fast as the backend accepts.
};

/// How a `TrafficSender` is set up.
struct SenderOptions {
  NetworkType type{NetworkType::ASYNCMSG};
  std::string provider{}; ///< libfabric provider ("tcp"); empty: the backend's default.
  ThreadSafetyModel thread_safety{ThreadSafetyModel::SAFE};
  std::size_t backends{1}; ///< Backend instances on the loop; stream i uses instance i % backends.
  StreamProfile profile{}; ///< Default profile of the streams.
  std::chrono::milliseconds peer_timeout{std::chrono::seconds{10}};
  std::chrono::milliseconds connect_timeout{std::chrono::seconds{10}};
  std::size_t max_unsent_bytes{8U << 20U};
};

/// A snapshot of one stream's figures.
struct StreamStats {
  std::uint16_t stream{0};
  EndPointAddress target{};
  bool established{false};               ///< on_connection_established_cb came.
  bool refused{false};                   ///< on_connection_refused_cb came (terminal).
  bool closed{false};                    ///< on_connection_closed_cb came (terminal).
  bool audited{false};                   ///< The keys were audited after close/refusal (figures final).
  bool done_sending{false};              ///< The last message was accepted.
  std::uint64_t sent{0};                 ///< Messages accepted (OK).
  std::uint64_t keyed_sent{0};           ///< Of those, sends with a key (copy and zero-copy).
  std::uint64_t completed{0};            ///< Keys reported by on_send_completed_cb.
  std::uint64_t pending_returned{0};     ///< Keys reported by on_connection_closed_cb.
  std::uint64_t no_resources{0};         ///< Sends or get_buffer calls answered NO_RESOURCES / nullptr.
  std::uint64_t local_stalls{0};         ///< Rounds stopped by a full key window or no free zero-copy slot.
  std::uint64_t failed_sends{0};         ///< Sends answered FAILED (or throwing after a close).
  std::uint64_t unexpected_status{0};    ///< MESSAGE_TOO_LARGE, OUTSIDE_REGISTERED_REGION, INVALID_ARGUMENT.
  std::uint64_t key_errors{0};           ///< Keys reported twice, unknown keys, callbacks after close.
  std::uint64_t unreported_zero_copy{0}; ///< Zero-copy keys never reported when the stream closed.
  std::uint64_t dropped_copy_keys{0};    ///< Copy keys never reported when the stream closed.
  std::uint64_t outstanding{0};          ///< Keys in flight now.
};

/// Totals over all streams (sums of `StreamStats`, counts of states).
struct SenderTotals {
  std::uint64_t streams{0}, established{0}, refused{0}, closed{0}, done_sending{0};
  std::uint64_t sent{0}, keyed_sent{0}, completed{0}, pending_returned{0}, no_resources{0}, local_stalls{0},
      failed_sends{0}, unexpected_status{0}, key_errors{0}, unreported_zero_copy{0}, dropped_copy_keys{0},
      outstanding{0};
  /// Contract violations seen by the sender: must be zero in every test.
  [[nodiscard]] std::uint64_t errors() const noexcept { return unexpected_status + key_errors + unreported_zero_copy; }
};

/// See the file comment.
class TrafficSender {
public:
  /// Called in the pump context (never with locks held) when a stream ends: closed or refused,
  /// after its keys were audited. May call `add_stream` (e.g. to reconnect).
  using StreamEndedHook = std::function<void(const StreamStats& stats)>;
  /// Receives one line per event ("ESTABLISHED stream=3", ...). Called from the loop or pump thread.
  using EventSink = std::function<void(const std::string& line)>;

  /// Creates the loop and the backends (not started). Throws what `NetworkBackend::create` throws.
  explicit TrafficSender(SenderOptions options, EventSink events = {}, StreamEndedHook on_ended = {});
  TrafficSender(const TrafficSender&) = delete;
  TrafficSender& operator=(const TrafficSender&) = delete;
  TrafficSender(TrafficSender&&) = delete;
  TrafficSender& operator=(TrafficSender&&) = delete;
  /// Stops the pump and the loop, then destroys the backends (their connections close silently).
  ~TrafficSender();

  /// Starts the loop thread (and the pump thread in SAFE mode).
  void start();
  /// Stops pumping and the loop; figures stay readable. Idempotent.
  void stop();

  /// Opens a send endpoint to `target` for stream `stream`, on backend instance `backend` (default
  /// stream % backends), no earlier than `delay` from now. `messages` 0: unlimited until
  /// `finish_stream`. Asynchronous: watch `stats(stream)`.
  void add_stream(std::uint16_t stream, const EndPointAddress& target, std::uint64_t messages,
                  std::chrono::milliseconds delay = std::chrono::milliseconds{0}, std::size_t backend = SIZE_MAX);
  /// As above, with a profile of its own instead of `SenderOptions::profile`.
  void add_stream(std::uint16_t stream, const EndPointAddress& target, std::uint64_t messages,
                  const StreamProfile& profile, std::chrono::milliseconds delay = std::chrono::milliseconds{0},
                  std::size_t backend = SIZE_MAX);
  /// Makes the next message of `stream` its last (for unlimited streams).
  void finish_stream(std::uint16_t stream);
  /// `finish_stream` for every stream.
  void finish_all();
  /// Closes the send endpoint of `stream` (close_send_endpoint) from the pump context.
  void close_stream(std::uint16_t stream);

  /// Figures of `stream` (default figures when unknown).
  [[nodiscard]] StreamStats stats(std::uint16_t stream) const;
  /// Figures of every stream.
  [[nodiscard]] std::vector<StreamStats> all_stats() const;
  /// Totals.
  [[nodiscard]] SenderTotals totals() const;
  /// The first contract violation seen, in words (empty when none).
  [[nodiscard]] std::string first_error() const;
  /// True when every stream ended (closed/refused and audited) or finished sending with no key in
  /// flight, and no command is waiting.
  [[nodiscard]] bool quiescent() const;

private:
  struct Stream;
  struct Command {
    std::chrono::steady_clock::time_point not_before;
    std::function<void()> action;
  };

  void on_established(std::size_t backend, const EndPointAddress& address);
  void on_closed(std::size_t backend, const EndPointAddress& address, const std::vector<std::uint64_t>& keys);
  void on_refused(std::size_t backend, const EndPointAddress& address);
  void on_completed(std::size_t backend, const EndPointAddress& address, std::uint64_t key);
  Stream* find(std::size_t backend, const EndPointAddress& address) const;
  void release_key(Stream& stream, std::uint64_t key, bool from_close);

  void post(Command command);
  void wake() noexcept;
  bool pump_round();
  bool run_commands();
  bool pump_stream(Stream& stream);
  NetioStatus send_one(Stream& stream, bool& local_stall);
  void open_stream(Stream& stream);
  void audit(Stream& stream);
  void emit(const std::string& line);
  void note_error(const std::string& text);
  [[nodiscard]] StreamStats snapshot(const Stream& stream) const;

  SenderOptions m_options;
  EventSink m_events;
  StreamEndedHook m_on_ended;
  std::shared_ptr<EpollEventLoop> m_loop;
  std::vector<std::unique_ptr<NetworkBackend>> m_backends;

  mutable std::mutex m_mutex; ///< Guards the stream list, lookup maps, commands, first error.
  std::vector<std::unique_ptr<Stream>> m_streams;
  /// Per backend instance: target address -> its live stream (callbacks name only the address).
  std::vector<std::unordered_map<EndPointAddress, Stream*>> m_lookup;
  std::vector<Stream*> m_pump_list; ///< Pump context only: the streams to pump this round.
  std::vector<Command> m_ready;     ///< Pump context only: commands due this round.
  std::uint64_t m_unknown_callbacks{0};
  std::vector<Command> m_commands;
  std::string m_first_error;

  std::thread m_loop_thread;
  std::thread m_pump_thread;
  std::atomic<bool> m_running{false};
  std::atomic<bool> m_wake_pending{false};
  std::mutex m_wake_mutex;
  std::condition_variable m_wake_cv;
  EventTimerHandle m_pump_timer;   ///< UNSAFE: periodic pump on the loop thread.
  EventSignalHandle m_pump_signal; ///< UNSAFE: pump soon (after completions, commands).
};

} // namespace netio3::faults
