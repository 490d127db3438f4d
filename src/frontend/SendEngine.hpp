#pragma once

// The send side of the frontend (private): one backend, one `Channel` per destination, coalescing
// into pool buffers, the flush timer, and the bounded queue that makes a fan-out all-or-nothing.
// `NetioSender` is a thin wrapper; `NetioPublisher` drives it for each subscriber of a tag.
//
// Locking: one lock (`mutex()`, a spin lock in SAFE mode, nothing in UNSAFE mode) guards every
// channel and the timer state. Data-path calls (`reserve`, `append`, `flush`, `send_zero_copy`)
// are made with it held, and call the backend's data path (which never waits for the loop).
// Set-up calls (`open`, `close`) take it themselves and release it before calling the backend,
// whose set-up calls may wait for the loop thread, which may be waiting for this lock. `events`
// are invoked on the loop thread without the lock, so they may call back in.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/OptionalMutex.hpp"
#include "frontend/FixedQueues.hpp"
#include "netio3/BufferFormatter.hpp"
#include "netio3/FrontendTypes.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::detail {

/// What the engine is built with (from `NetioSenderConfig` or `NetioPublisherConfig`).
struct SendEngineConfig {
  NetworkType backend_type{NetworkType::ASYNCMSG};
  NetworkMode backend_mode{NetworkMode::TCP};
  ThreadSafetyModel thread_safety{ThreadSafetyModel::SAFE};
  SendMethod method{SendMethod::BUFFERED};
  std::size_t buffersize{16384};
  std::size_t nbuffers{16};
  std::chrono::microseconds flush_interval{1000};
  std::uint8_t* mr_start{nullptr};
  std::size_t mr_size{0};
  std::string provider{};
  std::size_t max_unsent_bytes{std::size_t{8} << 20U};
  std::chrono::milliseconds connect_timeout{std::chrono::seconds{10}};
  std::chrono::milliseconds peer_timeout{std::chrono::seconds{10}};
  /// ZERO_COPY: sends per channel that may wait in the engine when the backend is full (0: the
  /// backend's NO_RESOURCES is returned as it is).
  std::size_t zero_copy_queue{0};
  /// For error messages: "NetioSender" or "NetioPublisher".
  std::string owner{"NetioSender"};
};

class Channel;

/// The engine's settings from a public configuration (`NetioSenderConfig`, `NetioPublisherConfig`:
/// the same field names), for `owner`, with `zero_copy_queue` sends per channel allowed to wait.
template <typename PublicConfig>
[[nodiscard]] SendEngineConfig make_engine_config(const PublicConfig& config, std::string owner,
                                                  std::size_t zero_copy_queue) {
  SendEngineConfig engine;
  engine.backend_type = config.backend_type;
  engine.backend_mode = config.backend_mode;
  engine.thread_safety = config.thread_safety;
  engine.method = config.method;
  engine.buffersize = config.buffersize;
  engine.nbuffers = config.nbuffers;
  engine.flush_interval = config.flush_interval;
  engine.mr_start = config.mr_start;
  engine.mr_size = config.mr_size;
  engine.provider = config.provider;
  engine.max_unsent_bytes = config.max_unsent_bytes;
  engine.connect_timeout = config.connect_timeout;
  engine.peer_timeout = config.peer_timeout;
  engine.zero_copy_queue = zero_copy_queue;
  engine.owner = std::move(owner);
  return engine;
}

/// `std::lock_guard` for the engine's lock on the publish fast path, where the compiler would
/// otherwise call the guard's destructor through the PLT of the shared library.
class InlineLock {
public:
  [[gnu::always_inline]] explicit InlineLock(OptionalMutex& mutex) noexcept : m_mutex{mutex} { m_mutex.lock(); }
  [[gnu::always_inline]] ~InlineLock() { m_mutex.unlock(); }
  InlineLock(const InlineLock&) = delete;
  InlineLock& operator=(const InlineLock&) = delete;
  InlineLock(InlineLock&&) = delete;
  InlineLock& operator=(InlineLock&&) = delete;

private:
  OptionalMutex& m_mutex;
};

/// Connection events, invoked on the loop thread without the engine's lock. `closed` carries the
/// keys of ZERO_COPY sends not completed (the backend's and those still queued in the engine).
struct SendEngineEvents {
  std::function<void(const EndPointAddress& address)> established;
  std::function<void(const EndPointAddress& address, const std::vector<std::uint64_t>& keys)> closed;
  std::function<void(const EndPointAddress& address)> refused;
  std::function<void(const EndPointAddress& address, std::uint64_t key)> send_completed;
  /// Invoked with the lock held just before a channel is destroyed (closed, refused, or its open
  /// failed), so that the owner drops every pointer to it in the same critical section. Must not
  /// call the engine.
  std::function<void(Channel& channel)> erasing;
};

/// A ZERO_COPY send waiting in the engine for room in the backend.
struct QueuedZeroCopy {
  const std::uint8_t* data{nullptr};
  std::size_t size{0};
  std::uint64_t key{0};
  BufferFormatter::MessageHeader header{};
};

/// The send state of one destination. Owned by the engine; valid until `events.closed` or
/// `events.refused` for its address has been invoked.
class Channel {
public:
  Channel(EndPointAddress address_, std::size_t nbuffers, std::size_t zero_copy_queue)
    : address{std::move(address_)}, ready{nbuffers}, queued{zero_copy_queue} {}

  const EndPointAddress address;
  /// The largest message the receiver accepts, when known (the publisher learns it from the
  /// subscriber's request); the backend checks it in any case.
  std::size_t receive_limit{SIZE_MAX};
  /// Set when the connection cannot go on (its close has been asked for).
  bool broken{false};

  // BUFFERED, COPY: the buffer being filled, and filled ones the backend has not taken yet.
  NetworkBuffer* current{nullptr};
  BufferFormatter formatter{};
  FixedRing<NetworkBuffer*> ready;
  // ZERO_COPY: sends waiting for the backend.
  FixedRing<QueuedZeroCopy> queued;

  DeadlineLink<Channel> flush_link{};
  DeadlineLink<Channel> retry_link{};
  /// For the owner's use (the publisher's subscriber record).
  void* user{nullptr};
};

class SendEngine {
public:
  /// @throws UnsupportedConfiguration for invalid settings or a backend the build lacks
  SendEngine(SendEngineConfig config, std::shared_ptr<BaseEventLoop> loop, SendEngineEvents events);
  ~SendEngine();
  SendEngine(const SendEngine&) = delete;
  SendEngine& operator=(const SendEngine&) = delete;
  SendEngine(SendEngine&&) = delete;
  SendEngine& operator=(SendEngine&&) = delete;

  [[nodiscard]] OptionalMutex& mutex() noexcept { return m_mutex; }
  [[nodiscard]] const SendEngineConfig& config() const noexcept { return m_config; }
  [[nodiscard]] NetworkBackend& backend() noexcept { return *m_backend; }

  // --- set-up (without the lock) ------------------------------------------------------------------

  /// Creates the channel and opens the backend's send endpoint; `user` and `receive_limit` are
  /// stored in the channel before the backend can report anything for it.
  /// @throws as `NetworkBackend::open_send_endpoint`
  void open(const EndPointAddress& address, std::size_t receive_limit = SIZE_MAX, void* user = nullptr);
  /// Closes the backend's send endpoint; `events.closed` follows. The channel leaves at once (and
  /// `events.erasing` is invoked): the address may be opened again when this returns.
  /// @throws as `NetworkBackend::close_send_endpoint`
  void close(const EndPointAddress& address);
  /// From now on no event is invoked and no timer armed (called first by the owner's destructor).
  void shut_down() noexcept;

  // --- data path (with the lock held) -------------------------------------------------------------

  /// The channel of `address`, or nullptr.
  [[nodiscard]] Channel* find(const EndPointAddress& address) noexcept;
  /// BUFFERED, COPY: makes room in `channel` for a message of `payload_size` bytes. OK, or
  /// NO_RESOURCES (no free buffer), or FAILED (the channel is broken). Changes nothing that a
  /// caller could observe besides sending buffers that were full anyway, so a fan-out may reserve
  /// in every channel before appending to any.
  [[nodiscard]] NetioStatus reserve(Channel& channel, std::uint64_t tag, std::size_t payload_size,
                                    std::uint8_t status) {
    // Inline: most messages fit in the current buffer; only the others take the call.
    if (!channel.broken && channel.current != nullptr && channel.formatter.fits(tag, payload_size, status)) {
      return NetioStatus::OK;
    }
    return reserve_new_buffer(channel, tag, payload_size, status);
  }
  /// Appends the message for which `reserve` returned OK (COPY: and sends its buffer).
  void append(Channel& channel, std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t status);
  /// BUFFERED: `reserve` and `append` in one step when the message fits in the current buffer (the
  /// common case: no backend call, nothing out of line). Returns false, having changed nothing,
  /// when it does not fit, the channel is broken, or the method is not BUFFERED.
  /// Always inlined: a call (through the PLT, in the shared library) would cost as much as the
  /// append itself.
  [[nodiscard, gnu::always_inline]] bool append_in_place(Channel& channel, std::uint64_t tag,
                                                         std::span<const std::uint8_t> data, std::uint8_t status) {
    if (!m_buffered || channel.current == nullptr || channel.broken) {
      return false;
    }
    const bool first = channel.formatter.empty();
    if (!channel.formatter.append(tag, data, status)) {
      return false;
    }
    if (channel.formatter.capacity() - channel.formatter.size() < BufferFormatter::header_size) [[unlikely]] {
      send_full(channel);
    } else if (first && m_config.flush_interval.count() > 0) [[unlikely]] {
      schedule_flush(channel);
    }
    return true;
  }
  /// BUFFERED: seals the current buffer and hands what waits to the backend.
  NetioStatus flush(Channel& channel);
  /// Every channel's `flush`.
  void flush_all();
  /// ZERO_COPY: whether `channel` can take a send now or queue it.
  [[nodiscard]] bool can_take_zero_copy(const Channel& channel) const noexcept {
    return !channel.broken && (channel.queued.empty() || !channel.queued.full());
  }
  /// ZERO_COPY: sends, or queues when the backend is full (or broken: the key then comes back with
  /// the close) and the queue has room. Returns what the backend returned when nothing was queued.
  NetioStatus send_zero_copy(Channel& channel, std::uint64_t tag, std::span<const std::uint8_t> data,
                             std::uint8_t status, std::uint64_t key);
  /// The largest payload a BUFFERED or COPY message may have.
  [[nodiscard]] std::size_t max_buffered_payload() const noexcept {
    return m_config.buffersize - BufferFormatter::max_overhead;
  }

private:
  void validate_config() const;
  void on_established(const EndPointAddress& address);
  void on_closed(const EndPointAddress& address, const std::vector<std::uint64_t>& backend_keys);
  void on_refused(const EndPointAddress& address);
  void on_send_completed(const EndPointAddress& address, std::uint64_t key);
  void on_timer();
  void on_signal();
  /// Removes the channel of `address` (lock held); returns its queued ZERO_COPY keys.
  std::vector<std::uint64_t> erase_channel(const EndPointAddress& address);

  NetioStatus reserve_new_buffer(Channel& channel, std::uint64_t tag, std::size_t payload_size, std::uint8_t status);
  /// Seals a buffer that cannot take even an empty message and hands it to the backend.
  void send_full(Channel& channel);
  void seal(Channel& channel) noexcept;
  NetioStatus drain(Channel& channel);
  NetioStatus drain_zero_copy(Channel& channel);
  void schedule_flush(Channel& channel);
  void schedule_retry(Channel& channel);
  void arm_timer(std::chrono::steady_clock::time_point deadline);
  /// Marks `channel` broken and has the loop close it (the backend's close must not be called with
  /// the lock held).
  void break_channel(Channel& channel, NetioStatus status, const char* what);

  SendEngineConfig m_config;
  bool m_buffered{false}; // m_config.method == BUFFERED, read on every append_in_place
  std::shared_ptr<BaseEventLoop> m_loop;
  SendEngineEvents m_events;
  OptionalMutex m_mutex;
  bool m_shut_down{false};

  std::unordered_map<EndPointAddress, std::unique_ptr<Channel>> m_channels;
  std::unordered_map<EndPointAddress, std::unique_ptr<Channel>> m_closing; // close() called, close not reported yet
  // One-entry cache of `find`: sends to one destination in a row skip the hash of its address.
  Channel* m_last_found{nullptr};

  DeadlineList<Channel, &Channel::flush_link> m_flush_list;
  DeadlineList<Channel, &Channel::retry_link> m_retry_list;
  std::chrono::steady_clock::time_point m_timer_deadline{std::chrono::steady_clock::time_point::max()};
  std::vector<EndPointAddress> m_to_close; // broken channels, closed by the signal's callback

  EventTimerHandle m_timer;
  EventSignalHandle m_signal;
  std::unique_ptr<NetworkBackend> m_backend; // last: destroyed first, so no backend callback outlives the rest
};

} // namespace netio3::detail
