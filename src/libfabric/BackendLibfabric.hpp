#pragma once

/// @file
/// `netio3::libfabric::BackendLibfabric`: the RDMA backend on libfabric FI_EP_MSG endpoints (private
/// header; users create it with `NetworkBackend::create(NetworkType::LIBFABRIC, config, loop)`).
/// Design, wire protocol and progress rules: docs/libfabric-backend.md.
///
/// Code layout: BackendLibfabric.cpp (construction, destruction, locking, deferred work, the
/// progress timer), ControlPath.cpp (domains, listen, connect, accept, the event queue, closing),
/// DataPath.cpp (the send calls, completion queues, credits, receiving) and Keepalive.cpp (the
/// keepalive timer that enforces `NetworkConfig::peer_timeout`).

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <sys/uio.h>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/Logging.hpp"
#include "core/SendWait.hpp"
#include "libfabric/Objects.hpp"
#include "libfabric/OptionalMutex.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::libfabric {

/// The libfabric backend. Connections are FI_EP_MSG endpoints of the configured provider (`verbs`
/// for RDMA, `tcp` for TCP, or a forced one); their event and completion queues are watched through
/// their wait fds on the event loop, with a progress timer for providers that only progress when
/// polled. Messages are sent with a small wire header; the receiver grants credits (its posted
/// buffers) so that a send never meets a receiver without a buffer.
///
/// Threading: every completion, every event and every callback is handled on the loop thread. In
/// SAFE mode one mutex guards the backend's state and every libfabric call (the domains are opened
/// with FI_THREAD_DOMAIN); it is released while user callbacks run. Tear-down of endpoints always
/// happens on the loop thread.
class BackendLibfabric final : public NetworkBackend {
public:
  /// @throws UnsupportedConfiguration when the configuration cannot work (e.g. empty shared pools)
  /// @throws EventLoopError when the loop cannot create the backend's timer or signal
  BackendLibfabric(const NetworkConfig& config, std::shared_ptr<BaseEventLoop> evloop);
  ~BackendLibfabric() override;
  BackendLibfabric(const BackendLibfabric&) = delete;
  BackendLibfabric(BackendLibfabric&&) = delete;
  BackendLibfabric& operator=(const BackendLibfabric&) = delete;
  BackendLibfabric& operator=(BackendLibfabric&&) = delete;

  void open_send_endpoint(const EndPointAddress& address, const ConnectionParameters& connection_params) override;
  EndPointAddress open_listen_endpoint(const EndPointAddress& address,
                                       const ConnectionParametersRecv& connection_params) override;
  void close_send_endpoint(const EndPointAddress& address) override;
  void close_listen_endpoint(const EndPointAddress& address) override;
  /// Closes the connection accepted from the peer `remote` (as the callbacks name it) like closing
  /// its listener would: the sender sees its connection closed, `on_connection_closed_cb(remote, {})`
  /// follows from the loop (once, and only if the connection was announced), the listener carries on.
  /// A connection already ending (peer closed, error, earlier call) keeps its single notice.
  /// @throws UnknownListenEndpoint if no listener of this backend has a connection from `remote`
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

  /// The provider this backend opens endpoints with.
  [[nodiscard]] const std::string& provider() const noexcept { return m_provider; }

  /// Test hook: keepalive messages this backend has posted so far (tests/libfabric/keepalive_test.cpp
  /// counts them; nothing else observes a keepalive). Any thread.
  [[nodiscard]] std::uint64_t keepalives_posted() const noexcept {
    return m_keepalives_posted.load(std::memory_order_relaxed);
  }

private:
  using Lock = std::unique_lock<OptionalMutex>;

  /// Completions handled per wake-up of one completion queue before other fds get their turn.
  static constexpr std::size_t completion_budget = 1024;
  /// Reads of one completion queue per wake-up (each lets the provider progress).
  static constexpr int progress_rounds = 8;
  /// Longest stretch of receive polling (NetworkConfig::receive_poll) before the loop's other work.
  static constexpr std::chrono::microseconds poll_slice{50};
  /// Period of the progress timer (polls queues that cannot signal, and connect deadlines).
  static constexpr std::chrono::milliseconds progress_tick{1};
  /// Idle ticks after which the progress timer stops.
  static constexpr std::uint32_t idle_ticks_before_stop = 100;
  /// Keepalive ticks per `peer_timeout`: the keepalive timer's period is peer_timeout / this, and a
  /// connection silent for more than this many ticks is declared lost.
  static constexpr std::uint32_t keepalive_ticks_per_timeout = 4;

  /// A callback to deliver from the loop thread once the state it reports is settled.
  struct Notice {
    enum class Kind { established, closed, refused } kind;
    EndPointAddress address;
    std::vector<std::uint64_t> pending_keys;
  };

  // --- BackendLibfabric.cpp: locking, deferred work, progress timer ---------------------------
  /// Runs `callback` (a user callback) with the lock released; exceptions are logged.
  template <typename Callback>
  void call_user(Lock& lock, const char* name, Callback&& callback);
  /// Tears down what was queued for it and delivers queued notices (loop thread).
  void run_deferred(Lock& lock);
  /// Tears down the connections queued for it and queues their closed/refused notices (loop thread).
  void process_teardowns();
  /// Delivers queued notices only (loop thread).
  void deliver_notices(Lock& lock);
  /// Makes the loop run `run_deferred` soon (from any thread).
  void wake_loop();
  /// Starts the progress timer unless it runs.
  void ensure_progress_timer();
  void on_wake();
  void on_progress_timer();
  /// Whether the progress timer must read `queue` (it cannot signal, could not sleep, or its
  /// provider progresses only when read and sends are outstanding).
  [[nodiscard]] static bool needs_timer(const CompletionQueue& queue) noexcept;

  // --- Keepalive.cpp: peer_timeout --------------------------------------------------------
  /// Keepalive ticks of silence allowed for `timeout`: ceil(timeout / period), at least
  /// keepalive_ticks_per_timeout; 0 (never) when peer_timeout is 0 here.
  [[nodiscard]] std::uint32_t silence_limit_for(std::chrono::milliseconds timeout) const noexcept;
  /// The silence limit (in this backend's keepalive ticks) for a connection accepted from a sender
  /// whose peer_timeout is `sender_timeout_ms` (0: it sends no keepalives, never judged silent).
  [[nodiscard]] std::uint32_t receiver_silence_limit(std::uint32_t sender_timeout_ms) const noexcept;
  /// The sender's peer_timeout as told to the receiver in the connect request.
  [[nodiscard]] std::uint32_t advertised_peer_timeout_ms() const noexcept;
  /// Starts the keepalive timer unless it runs or peer_timeout is 0 (a connection was established).
  void ensure_keepalive_timer();
  void on_keepalive_timer();
  /// `tcp` provider only: starts the timer that closes sockets accepted on a listener port that
  /// never became a connection (no connection request within connect_timeout). The provider
  /// accepts them itself and waits for their request without a deadline (libfabric 1.17,
  /// prov/tcp/src/tcpx_conn_mgr.c), so the backend finds them among the process's descriptors.
  void ensure_unclaimed_socket_timer();
  void on_unclaimed_socket_timer();
  /// One tick for one established connection: count its silence, close it, or send a keepalive.
  void keepalive_tick(const std::shared_ptr<Connection>& connection);
  /// Posts a keepalive (a credit and a send slot must be free).
  void post_keepalive(Connection& connection);

  // --- ControlPath.cpp ----------------------------------------------------------------------
  std::shared_ptr<DomainContext> acquire_domain(const fi_info& info);
  void release_domain(const std::shared_ptr<DomainContext>& domain);
  void destroy_domain(DomainContext& domain, bool on_loop);
  /// Reads what is left in a domain's event queue before it closes: connection requests are
  /// rejected and their fi_info freed.
  void discard_pending_events(DomainContext& domain);
  /// Gives `connection` (endpoint open, not yet bound) a completion queue of its domain and role
  /// with room for `reservation` outstanding entries, opening one if none has room, and binds the
  /// endpoint to it.
  void join_completion_queue(Connection& connection, std::size_t reservation);
  /// Takes a connection whose endpoint was just closed off its queue: it stays in the queue's
  /// retired list until a read found the queue empty (entries may still name it).
  static void leave_completion_queue(Connection& connection);
  /// Closes the completion queues of `domain` that no connection uses (all of them: `all`).
  void close_unused_queues(DomainContext& domain, bool on_loop, bool all);
  /// Watches the domain's event-queue fd (on the loop thread; queued for it from other threads).
  void watch_domain_fd(const std::shared_ptr<DomainContext>& domain);
  /// Watches a completion queue's fd (on the loop thread; queued for it from other threads).
  void watch_queue_fd(const std::shared_ptr<CompletionQueue>& queue);
  /// Registers what other threads queued (loop thread).
  void apply_pending_registrations();
  /// Makes the loop read the completion queue soon.
  void progress_queue_later(const std::shared_ptr<CompletionQueue>& queue);
  /// After posting a send: providers with manual progress push data out only while the queue is
  /// read, so make sure the loop reads it soon (coalesced: one wake-up for many sends).
  void note_posted(Connection& connection);
  void on_eq_ready(const std::weak_ptr<DomainContext>& weak_domain);
  void progress_event_queue(DomainContext& domain, Lock& lock);
  void handle_eq_event(DomainContext& domain, std::uint32_t event, const fi_eq_cm_entry& entry, std::size_t data_size,
                       Lock& lock);
  /// Reads an error entry of the event queue (after -FI_EAVAIL) and acts on it.
  void handle_eq_error(DomainContext& domain);
  /// Acts on an error entry for the endpoint `source`.
  void handle_eq_failure(const fid* source, const std::string& reason);
  /// Reads every entry now in the domain's event queue into its stash (handled later by the loop).
  void stash_events(DomainContext& domain);
  /// The text of an error entry: fi_strerror and the provider's explanation.
  [[nodiscard]] static std::string eq_error_text(DomainContext& domain, const fi_eq_err_entry& error);
  void handle_connection_request(const std::shared_ptr<Listener>& listener, InfoPtr info,
                                 std::span<const std::uint8_t> data, Lock& lock);
  std::shared_ptr<Connection> create_receiver(const std::shared_ptr<Listener>& listener, const fi_info& info,
                                              const ConnectRequest& request);
  void handle_connected(Connection& connection, std::span<const std::uint8_t> data, Lock& lock);
  /// The notice for a connection that ends without the application asking: closed once it was
  /// announced; before that refused (send endpoint) or nothing (accepted connection).
  [[nodiscard]] static CloseNotice loss_notice(const Connection& connection) noexcept;
  /// Ends a connection: no more traffic; tear-down and the notice follow from the loop.
  void begin_close(const std::shared_ptr<Connection>& connection, CloseNotice notice, std::string_view reason);
  /// Closes the libfabric objects of a connection and frees its memory (loop thread, destructor, or
  /// a failed set-up); its completion queue closes later, on the loop (close_unused_queues).
  void teardown_connection(Connection& connection, std::vector<std::uint64_t>* pending_keys);
  void close_listener_now(Listener& listener);
  void check_connect_deadlines();
  /// Closes (and reports closed) every other accepted connection from `fresh`'s remote address:
  /// called when `fresh` is established, so that a peer's old connection whose close has not
  /// arrived yet is reported closed before the new one is reported established.
  void close_stale_connections_from(const Connection& fresh);
  void mark_established(Connection& connection);
  /// The fabric info for the first of `candidates` that the provider takes (those it refuses are
  /// removed and noted in `failures`), or null when none is left.
  InfoPtr next_fabric_info(const EndPointAddress& address, std::vector<detail::ResolvedAddress>& candidates,
                           std::string& failures) const;
  /// Creates a sending Connection from `info` and starts its fi_connect (mutex held). It is in
  /// m_connections and watched, not yet in m_senders. `refused_at_once`: fi_connect said
  /// FI_ECONNREFUSED. Throws std::runtime_error (everything created is torn down).
  std::shared_ptr<Connection> start_connection(const EndPointAddress& address, const ConnectionParameters& params,
                                               InfoPtr info, bool& refused_at_once);
  /// A send endpoint's attempt failed before it was established (`why`): a new attempt to the
  /// next address takes its place, or, with none left, it is refused (mutex held).
  void connect_attempt_failed(const std::shared_ptr<Connection>& connection, const std::string& why);

  // --- Completions.cpp ----------------------------------------------------------------------
  void on_cq_ready(const std::weak_ptr<CompletionQueue>& weak_queue);
  /// Reads and handles completions until the queue is empty and may sleep (or a budget runs out).
  void progress_queue(const std::shared_ptr<CompletionQueue>& queue, Lock& lock);
  /// After a read of a receivers' queue: true if the loop should read it again soon instead of
  /// sleeping on its fd (receive polling, NetworkConfig::receive_poll).
  bool keep_polling(CompletionQueue& queue, bool completed, std::chrono::steady_clock::time_point now);
  /// Reads completions until the queue is empty or `handled` reaches the budget, then does the
  /// follow-up work of each connection that had some (credits, keys, room).
  void drain_completions(CompletionQueue& queue, Lock& lock, std::size_t& handled);
  /// Follow-up work of the connections in m_touched after a read of their queue.
  void finish_touched(Lock& lock);
  void handle_cq_error(CompletionQueue& queue);

  // --- DataPath.cpp -------------------------------------------------------------------------
  /// Handles one received message; false when the connection ended.
  bool handle_receive(Connection& connection, std::uint32_t index, std::size_t length, Lock& lock);
  bool post_receive(Connection& connection, std::uint32_t index);
  void return_credits(Connection& connection);
  /// Reports the keys collected in `m_completed_keys` for `connection` and clears them.
  void deliver_completed_keys(const Connection& connection, Lock& lock);

  /// The send endpoint for `address` (throws UnknownSendEndpoint).
  Connection& find_sender(const EndPointAddress& address);
  /// Whether a message may be posted now (OK) or why not.
  [[nodiscard]] NetioStatus check_ready(const Connection& connection, std::size_t message_size) const noexcept;
  /// True when a send of `message_size` bytes (header data plus data) would not be refused for lack
  /// of room now: credits, a send slot, the provider's queue and (once it exists) the bounce ring.
  [[nodiscard]] bool has_room(const Connection& connection, std::size_t message_size) const noexcept;
  /// `status` came from a send of `message_size` bytes: a refusal for lack of room on an
  /// established connection is remembered for on_send_space_cb. Returns `status`.
  NetioStatus note_refusal(Connection& connection, NetioStatus status, std::size_t message_size) const noexcept;
  /// True when get_buffer would return a buffer now: established, a credit, and a free buffer of
  /// the endpoint's pool (or the shared pool).
  [[nodiscard]] bool has_buffer(const Connection& connection) const noexcept;
  /// get_buffer refused `connection` (established): remembered for on_send_space_cb. Returns nullptr.
  NetworkBuffer* note_buffer_refusal(Connection& connection) noexcept;
  /// After completions or credits (lock held): wakes waiting senders and calls on_send_space_cb
  /// when a refused message fits again or a refused get_buffer could return a buffer (loop thread).
  void room_changed(Connection& connection, Lock& lock);
  /// Part of room_changed: on_send_space_cb for the endpoints whose get_buffer was refused and that
  /// could now get a buffer (all that wait for the shared pool, when `connection` uses it).
  void buffers_returned(Connection& connection, Lock& lock);
  /// The send endpoint to `address` that waiters may wait on, or null when they return CLOSED (the
  /// backend shuts down, no such endpoint, or it is closing). Lock held.
  [[nodiscard]] const Connection* open_sender(const EndPointAddress& address) const;
  /// Common checks of the waiting calls (UNSAFE, loop thread).
  [[nodiscard]] std::optional<WaitStatus> wait_precheck() const;
  /// True when [data, data + size) lies in the endpoint's zero-copy region.
  [[nodiscard]] static bool in_region(const Connection& connection, const void* data, std::size_t size) noexcept;
  /// Creates the bounce ring on first use; false if that fails.
  bool ensure_ring(Connection& connection);
  /// Posts `count` entries of `iov`/`desc` (entry 0 is the wire header and header data) as one
  /// message of `type` (data or keepalive) and books it; releases the slot and chunk on failure.
  NetioStatus post_message(Connection& connection, std::uint32_t slot, const iovec* iov, void** desc, std::size_t count,
                           std::uint64_t key, bool has_key, MessageType type = MessageType::data);
  /// Copies header and payload into the bounce ring and posts the message.
  NetioStatus send_copied(Connection& connection, std::span<const iovec> payload, std::size_t payload_size,
                          std::span<const std::uint8_t> header_data, std::uint64_t key);
  NetioStatus send_zero_copy(const EndPointAddress& address, std::span<const iovec> payload,
                             std::span<const std::uint8_t> header_data, std::uint64_t key);
  void release_slot(Connection& connection, std::uint32_t slot);
  [[nodiscard]] SendBufferPool* pool_of(const Connection& connection) const noexcept;

  std::string m_provider;
  mutable OptionalMutex m_mutex;
  bool m_shutting_down{false};
  /// Threads in wait_for_send_space / wait_for_completed_sends / wait_for_buffer (core/SendWait.hpp).
  detail::SendWaitHub m_send_wait;
  /// A shared-pool endpoint has `buffer_wanted` set: buffers returned by any shared-pool endpoint
  /// make room_changed look at all of them.
  bool m_shared_buffer_wanted{false};
  /// (loop) The endpoints buffers_returned calls back, kept so that its capacity is reused.
  std::vector<std::shared_ptr<Connection>> m_buffer_ready;

  std::unordered_map<std::string, std::shared_ptr<DomainContext>> m_domains;
  std::unordered_map<EndPointAddress, std::shared_ptr<Connection>> m_senders;
  std::unordered_map<EndPointAddress, std::shared_ptr<Listener>> m_listeners;
  /// Every live connection (senders, accepted ones, and those waiting for tear-down).
  std::unordered_map<const Connection*, std::shared_ptr<Connection>> m_connections;
  /// Which object an event-queue entry's fid belongs to (never dereferencing a closed fid).
  std::unordered_map<const fid*, FidOwner> m_fid_owners;

  std::unique_ptr<SendBufferPool> m_shared_send_pool;
  std::unique_ptr<SharedReceivePool> m_shared_receive_pool;

  std::vector<std::shared_ptr<Connection>> m_teardown_queue;
  std::vector<std::shared_ptr<Listener>> m_listener_teardown_queue;
  std::deque<Notice> m_notices;
  std::vector<std::shared_ptr<CompletionQueue>> m_ready_again; // to read again soon (fairness budget)
  std::vector<std::shared_ptr<CompletionQueue>> m_poll_scratch;
  /// Connections with completions in the current read of a queue (reused: no allocation per read).
  std::vector<Connection*> m_touched;
  std::vector<std::weak_ptr<DomainContext>> m_pending_domain_fds;
  std::vector<std::weak_ptr<CompletionQueue>> m_pending_queue_fds;
  std::vector<std::uint64_t> m_completed_keys; // keys of one drain, reused: no allocation per message

  EventSignalHandle m_wake;
  EventTimerHandle m_progress_timer;
  bool m_timer_running{false};
  std::uint64_t m_tick{1}; // advanced by every progress timer tick
  /// A connection may be in set-up (connecting, accepting): the progress timer looks for them (and
  /// their connect deadlines) only while this is set, not at every tick over every connection.
  bool m_setup_in_progress{false};
  std::uint32_t m_idle_ticks{0};

  /// Period of the keepalive timer: peer_timeout / keepalive_ticks_per_timeout (1 ms to 1 day);
  /// zero when peer_timeout is 0 (no keepalives, no timer).
  std::chrono::milliseconds m_keepalive_period{0};
  EventTimerHandle m_keepalive_timer; // empty when peer_timeout is 0
  bool m_keepalive_running{false};
  std::atomic<std::uint64_t> m_keepalives_posted{0}; // keepalives_posted(): one increment per keepalive

  /// Closes sockets that the `tcp` provider accepted on a listener of this backend and that sent
  /// no connection request within connect_timeout (ensure_unclaimed_socket_timer). Empty for
  /// other providers.
  EventTimerHandle m_unclaimed_timer;
  bool m_unclaimed_running{false};
  /// Such sockets by inode, with the time they were first seen unclaimed.
  std::unordered_map<std::uint64_t, std::chrono::steady_clock::time_point> m_unclaimed_since;
};

template <typename Callback>
void BackendLibfabric::call_user(Lock& lock, const char* name, Callback&& callback) {
  lock.unlock();
  try {
    std::forward<Callback>(callback)();
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("libfabric backend: the application's {} threw: {}", name, error.what());
  } catch (...) {
    NETIO3_LOG_ERROR("libfabric backend: the application's {} threw an unknown exception", name);
  }
  lock.lock();
}

} // namespace netio3::libfabric
