#pragma once

/// @file
/// `netio3::asyncmsg::BackendAsyncmsg`: the TCP backend (private header; users create it with
/// `NetworkBackend::create(NetworkType::ASYNCMSG, config, loop)`). Design: docs/tcp-backend.md;
/// wire format: docs/wire-protocol.md.
///
/// Code layout: BackendAsyncmsg.cpp (construction, destruction, the public calls that only look
/// things up, posting work to the loop), ControlPath.cpp (listen, accept, connect, handshake,
/// close, timeouts) and DataPath.cpp (sends, the send queue's writes, completions, receiving).

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <sys/uio.h>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "asyncmsg/BufferPool.hpp"
#include "asyncmsg/Connections.hpp"
#include "asyncmsg/OptionalMutex.hpp"
#include "core/Logging.hpp"
#include "core/SendWait.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::asyncmsg {

/// The TCP backend: non-blocking sockets on the given event loop, a small handshake, length-
/// prefixed frames, batched writes (`sendmsg` of many queued messages) and batched reads (one
/// `recv` decodes many messages).
///
/// Threading: every socket event, every callback and every change of loop registrations happen on
/// the loop thread. Public calls from other threads (SAFE) work on the send queue under the
/// connection's lock and post set-up and tear-down work to the loop through one signal.
class BackendAsyncmsg final : public NetworkBackend {
public:
  /// @throws UnsupportedConfiguration for `NetworkMode::RDMA` or an unusable configuration
  BackendAsyncmsg(const NetworkConfig& config, std::shared_ptr<BaseEventLoop> evloop);
  ~BackendAsyncmsg() override;
  BackendAsyncmsg(const BackendAsyncmsg&) = delete;
  BackendAsyncmsg(BackendAsyncmsg&&) = delete;
  BackendAsyncmsg& operator=(const BackendAsyncmsg&) = delete;
  BackendAsyncmsg& operator=(BackendAsyncmsg&&) = delete;

  void open_send_endpoint(const EndPointAddress& address, const ConnectionParameters& connection_params) override;
  EndPointAddress open_listen_endpoint(const EndPointAddress& address,
                                       const ConnectionParametersRecv& connection_params) override;
  void close_send_endpoint(const EndPointAddress& address) override;
  void close_listen_endpoint(const EndPointAddress& address) override;
  /// Closes the accepted connection from `remote` at once (no more data from it); the closed callback
  /// follows from the loop. From another thread while the loop runs, the search runs on the loop.
  void close_accepted_connection(const EndPointAddress& remote) override;
  NetioStatus send_data(const EndPointAddress& address, std::span<std::uint8_t> data,
                        std::span<const std::uint8_t> header_data, std::uint64_t key) override;
  NetioStatus send_data(const EndPointAddress& address, std::span<const iovec> iov,
                        std::span<const std::uint8_t> header_data, std::uint64_t key) override;
  NetioStatus send_data_copy(const EndPointAddress& address, std::span<const std::uint8_t> data,
                             std::span<const std::uint8_t> header_data, std::uint64_t key) override;
  NetioStatus send_data_copy(const EndPointAddress& address, std::span<const iovec> iov,
                             std::span<const std::uint8_t> header_data, std::uint64_t key) override;
  NetworkBuffer* get_buffer(const EndPointAddress& address) override;
  NetioStatus send_buffer(const EndPointAddress& address, NetworkBuffer* buffer) override;
  std::size_t get_num_available_buffers(const EndPointAddress& address) override;
  WaitStatus wait_for_send_space(const EndPointAddress& address, std::size_t message_size,
                                 std::chrono::milliseconds timeout) override;
  std::uint64_t completed_sends(const EndPointAddress& address) override;
  WaitStatus wait_for_buffer(const EndPointAddress& address, std::chrono::milliseconds timeout) override;
  WaitStatus wait_for_completed_sends(const EndPointAddress& address, std::uint64_t after_count,
                                      std::chrono::milliseconds timeout) override;

private:
  /// Why a send connection ends.
  enum class CloseReason {
    user,   ///< close_send_endpoint
    failed, ///< connect, handshake or rejection: on_connection_refused_cb (unless established)
    lost,   ///< peer closed, reset, timeout, protocol violation after establishment
  };

  /// A connection whose handshake must end by `when`.
  struct Deadline {
    std::chrono::steady_clock::time_point when;
    std::weak_ptr<SendConnection> send;
    std::weak_ptr<RecvConnection> recv;
    std::uint32_t attempt{0}; ///< SendConnection::attempt it was set for
  };

  /// Marks the loop thread as running one of this backend's event handlers. Connections that need
  /// service because of calls made meanwhile (sends from inside callbacks) are serviced when the
  /// outermost handler ends, without a wake-up through the signal.
  class DispatchScope {
  public:
    explicit DispatchScope(BackendAsyncmsg& backend) noexcept;
    DispatchScope(const DispatchScope&) = delete;
    DispatchScope& operator=(const DispatchScope&) = delete;
    DispatchScope(DispatchScope&&) = delete;
    DispatchScope& operator=(DispatchScope&&) = delete;
    ~DispatchScope();

  private:
    BackendAsyncmsg& m_backend;
    BackendAsyncmsg* m_previous;
  };

  // --- machinery (BackendAsyncmsg.cpp) ---
  /// Services the connections that asked for it during the dispatch that just ended (loop thread).
  void run_inline_service() noexcept;
  /// Reports the keys of m_direct_completions (loop thread).
  void deliver_direct_completions() noexcept;
  /// Runs `task` on the loop thread, from the loop (never inside the calling public function).
  void post(std::function<void()> task);
  /// Puts `connection` on the service list (flush + completions on the loop). Its mutex is held.
  void request_service_locked(SendConnection& connection);
  /// Puts `connection` (whose `service_requested` is set, mutex held) on the signal's service list.
  void hand_to_signal_locked(SendConnection& connection);
  void fire_wakeup();
  void on_wakeup();
  void register_fd(const EventContext& context);
  void unregister_fd(int fd);
  [[nodiscard]] std::shared_ptr<SendConnection> find_send_locked(const EndPointAddress& address) const;
  /// Data-path lookup: the send connection to `address`, or null. The calling thread keeps a
  /// reference to it until its next lookup (so the connection stays alive during the call without
  /// holding the map lock), and finds it again without hashing while the map is unchanged.
  [[nodiscard]] SendConnection* find_for_send(const EndPointAddress& address) const;
  /// Called on every change of m_send_endpoints (exclusive map lock held): invalidates the lookups
  /// that threads remember.
  void forget_lookup_locked() noexcept { m_map_generation.fetch_add(1, std::memory_order_release); }
  template <typename Callback, typename... Args>
  void invoke(const char* name, const Callback& callback, Args&&... args) noexcept;

  // --- control path (ControlPath.cpp) ---
  void start_send_connection(const std::shared_ptr<SendConnection>& connection);
  /// Starts a non-blocking connect to the next of `connection.untried` that can be started (a
  /// socket, bound, connect in progress or done); addresses that fail at once are noted in
  /// `failed_attempts` and skipped. Returns false when none is left: `immediate_error` is then the
  /// last error when every failure meant "nobody there", otherwise `local_failure` is set.
  bool connect_next_address(SendConnection& connection, bool& local_failure);
  /// A connect attempt of `connection` failed before the handshake (`why`): on to the next
  /// address, or refused when there is none (loop thread).
  void connect_attempt_failed(SendConnection& connection, const std::string& why);
  void on_send_readable(SendConnection& connection);
  void on_send_writable(SendConnection& connection);
  void on_connected(SendConnection& connection);
  void read_reply(SendConnection& connection);
  void close_send_connection(SendConnection& connection, CloseReason reason);
  void start_listener(const std::shared_ptr<Listener>& listener);
  void on_listener_readable(Listener& listener);
  void accept_one(Listener& listener, int socket_fd, const EndPointAddress& peer);
  void on_recv_readable(RecvConnection& connection);
  void read_hello(RecvConnection& connection);
  void close_recv_connection(RecvConnection& connection, bool report);
  void close_listener(Listener& listener);
  [[nodiscard]] static bool deadline_settled(const Deadline& deadline);
  void add_deadline(Deadline deadline);
  void on_deadline_timer();

  // --- data path (DataPath.cpp) ---
  enum class SendMode { copy, zero_copy };
  NetioStatus send_message(const EndPointAddress& address, std::span<const iovec> pieces,
                           std::span<const std::uint8_t> header_data, std::uint64_t key, SendMode mode);
  enum class WriteResult {
    written, ///< all of `outgoing` written, or the bounded number of writes done
    full,    ///< the socket takes no more: the writable event continues
    failed,  ///< the connection is broken (logged)
  };
  /// Writes as much of the connection's `outgoing` batch as the socket takes (loop thread).
  WriteResult flush(SendConnection& connection);
  /// Pops finished messages of `outgoing`: buffers back to their pool, keys to
  /// on_send_completed_cb (loop thread).
  void deliver_completions(SendConnection& connection);
  void service(SendConnection& connection);
  /// How `receive` ended.
  enum class ReceiveOutcome {
    drained, ///< read and delivered everything the socket held
    pending, ///< stopped after its bounded number of reads; the socket may hold more
    idle,    ///< the spin-wait found nothing
    closed,  ///< the connection was closed
  };
  /// Readable event of an established receive connection: receive, and wait briefly for more when
  /// a callback answered (loop thread).
  void on_data_readable(RecvConnection& connection);
  /// Reads and delivers what the socket holds. With `spin`, a first read that finds nothing is
  /// retried, yielding the processor in between, until data arrive or the spin budget is spent.
  ReceiveOutcome receive(RecvConnection& connection, bool spin);
  /// Sets the socket's receive low-water mark for the large message being received (or back to 1).
  void adjust_low_water(RecvConnection& connection) noexcept;
  /// Records that a send was accepted (on the loop thread, inside one of our callbacks).
  void note_send() noexcept;
  /// A send was refused for lack of room: remember it for on_send_space_cb (mutex held).
  void note_refused_locked(SendConnection& connection, std::size_t frame) const noexcept {
    if (m_notify_space) {
      connection.space_wanted = true;
      connection.space_wanted_bytes = frame;
    }
  }
  /// get_buffer found no free buffer: remember it for on_send_space_cb (mutex held).
  void note_buffer_refused_locked(SendConnection& connection) noexcept {
    if (m_notify_space) {
      connection.buffer_wanted = true;
      if (connection.pool == m_shared_send_pool.get()) {
        m_shared_buffer_wanted.store(true, std::memory_order_relaxed);
      }
    }
  }
  /// A send returned its buffer at once to a pool that had none free (mutex held): wakes
  /// wait_for_buffer's waiters, and has the loop call on_send_space_cb for a refused get_buffer.
  void buffer_returned_locked(SendConnection& connection);
  /// On the loop after buffers of the shared pool came back: on_send_space_cb for every endpoint
  /// of the shared pool whose get_buffer was refused and that could now get a buffer.
  void call_back_shared_buffer_waiters();
  /// The common checks of the waiting calls: UNSAFE, loop thread, or the connection to wait on
  /// (null: CLOSED).
  [[nodiscard]] std::optional<WaitStatus> wait_precheck(const EndPointAddress& address,
                                                        std::shared_ptr<SendConnection>& connection) const;
  /// A waiter on `connection` returns CLOSED: the backend shuts down or the connection ended
  /// (its mutex held by the caller).
  [[nodiscard]] bool ended_for_waiters(const SendConnection& connection) const noexcept;
  /// True on the loop thread inside one of this backend's event handlers.
  [[nodiscard]] bool in_dispatch() const noexcept;

  const bool m_thread_safe;
  /// on_data_from_cb is set (it replaces on_data_cb).
  const bool m_use_data_from;
  /// on_send_space_cb is set: refusals for lack of room are remembered.
  const bool m_notify_space;
  /// Threads in wait_for_send_space / wait_for_completed_sends / wait_for_buffer (core/SendWait.hpp).
  mutable detail::SendWaitHub m_send_wait;
  /// An endpoint of the shared pool has `buffer_wanted` set: the loop looks at all of them when
  /// shared buffers come back. Set by senders (their connection's mutex held), cleared by the loop.
  std::atomic<bool> m_shared_buffer_wanted{false};
  /// (loop) The endpoints call_back_shared_buffer_waiters calls back, kept so that its capacity is reused.
  std::vector<std::shared_ptr<SendConnection>> m_buffer_ready;
  std::atomic<bool> m_shutting_down{false};

  /// Guards the endpoint maps.
  mutable OptionalSharedMutex m_map_mutex;
  std::unordered_map<EndPointAddress, std::shared_ptr<SendConnection>> m_send_endpoints;
  std::unordered_map<EndPointAddress, std::shared_ptr<Listener>> m_listeners;

  /// Each thread remembers its last data-path lookup (callers usually send to one endpoint many
  /// times in a row, and comparing the address is cheaper than hashing it); the entry is valid
  /// while the map's generation is unchanged (map nodes stay where they are until erased). Written
  /// under the exclusive map lock, read under the shared one.
  std::atomic<std::uint64_t> m_map_generation{0};
  /// Names this backend in those remembered lookups (the address of a destroyed backend may be
  /// reused by a new one).
  const std::uint64_t m_instance_id;

  std::unique_ptr<BufferPool> m_shared_send_pool;

  // Work handed to the loop: tasks and connections to service, behind one signal.
  OptionalMutex m_post_mutex;
  std::vector<std::function<void()>> m_tasks;
  std::vector<std::function<void()>> m_tasks_running; ///< (loop) swapped with m_tasks
  std::vector<std::shared_ptr<SendConnection>> m_service;
  std::vector<std::shared_ptr<SendConnection>> m_service_running; ///< (loop) swapped with m_service
  std::atomic<bool> m_wakeup_pending{false};
  EventSignalHandle m_wakeup;

  // Handshake deadlines (loop thread). All use connect_timeout, so the deque is in deadline order.
  std::deque<Deadline> m_deadlines;
  EventTimerHandle m_deadline_timer;

  /// A spare descriptor (/dev/null): when accept fails for lack of descriptors, it is closed to
  /// accept and at once close the waiting connection, so that a level-triggered listener does not
  /// spin (loop thread).
  OwnedFd m_spare_fd;

  /// Every fd this backend registered with the loop (for the destructor).
  std::mutex m_registry_mutex;
  std::unordered_set<int> m_registered_fds;

  // Dispatch state (loop thread): see DispatchScope.
  int m_dispatch_depth{0};
  /// A message a send from inside one of our callbacks wrote completely at once: its key is
  /// reported when the dispatch ends, without a trip through the connection's queue (the common
  /// case of a reply from on_data_cb). Such a message never has older unreported messages of its
  /// connection, and every delivery of queued completions first reports these, so the order per
  /// connection holds. A closing connection takes its entries (they go with its pending keys).
  struct DirectCompletion {
    SendConnection* connection; ///< null once the connection was closed
    std::uint64_t key;
  };
  std::vector<DirectCompletion> m_direct_completions;
  std::vector<DirectCompletion> m_direct_running; ///< (loop) swapped with m_direct_completions
  bool m_delivering_direct{false};
  /// A callback sent something during the current dispatch (a response to it is then likely).
  bool m_sent_in_dispatch{false};
  std::vector<std::shared_ptr<SendConnection>> m_inline_service;
  std::vector<std::shared_ptr<SendConnection>> m_inline_running;

  // Loop-thread scratch, reused so that the data path does not allocate.
  std::array<iovec, 1024> m_iov{};
  std::vector<std::uint64_t> m_completed_keys;
};

template <typename Callback, typename... Args>
void BackendAsyncmsg::invoke(const char* name, const Callback& callback, Args&&... args) noexcept {
  if (!callback) {
    return;
  }
  try {
    callback(std::forward<Args>(args)...);
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("asyncmsg: the {} callback threw: {}", name, error.what());
  } catch (...) {
    NETIO3_LOG_ERROR("asyncmsg: the {} callback threw an unknown exception", name);
  }
}

} // namespace netio3::asyncmsg
