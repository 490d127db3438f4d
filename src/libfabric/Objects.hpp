#pragma once

// The objects of the libfabric backend (private): domains (fabric, domain, event queue),
// completion queues (shared by the connections of a domain and role), listeners (passive
// endpoints) and connections (active endpoints with their registered memory and credit state).
// They are plain data; BackendLibfabric's control path (ControlPath.cpp, Domain.cpp, Listener.cpp)
// creates and destroys them, its data path (DataPath.cpp) moves messages.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/Resolve.hpp"
#include "libfabric/Fabric.hpp"
#include "libfabric/Memory.hpp"
#include "libfabric/Protocol.hpp"
#include "netio3/EndPointAddress.hpp"
#include "netio3/NetworkConfig.hpp"

namespace netio3::libfabric {

/// Room in each send slot for the wire header plus inline header data. Header data that do not fit
/// go through the bounce ring instead.
inline constexpr std::size_t slot_header_room = 128;
/// Size of each control (credit) receive buffer of a send endpoint.
inline constexpr std::size_t control_buffer_size = 64;
/// The most send slots and control receive buffers per connection, whatever the provider allows.
inline constexpr std::size_t max_queue_depth = 1024;
/// Send slots of a receive connection (it only sends credit messages).
inline constexpr std::size_t receiver_send_slots = 8;
/// The most iovec entries handed to the provider in one send (the rest is copied).
inline constexpr std::size_t max_iov_entries = 32;

struct Connection;
struct CompletionQueue;

/// A fabric, a domain and the event queue of all endpoints opened in it. Shared by every endpoint of
/// the backend whose fi_info names the same provider, fabric and domain.
struct DomainContext {
  std::string key;
  InfoPtr info;
  FidHandle<fid_fabric> fabric{"fabric"};
  FidHandle<fid_domain> domain{"domain"};
  FidHandle<fid_eq> eq{"event queue"};
  /// The event queue's wait fd, or -1 when the provider gives none (then the progress timer polls).
  int eq_fd{-1};
  bool eq_fd_registered{false};
  /// Endpoints (listeners and connections) using this domain; torn down on the loop at zero.
  std::size_t users{0};
  /// Keys for fi_mr_reg (providers without FI_MR_PROV_KEY need them unique per domain).
  std::uint64_t next_key{1};
  /// The provider progresses only when its queues are read (tcp): poll while work is outstanding.
  bool manual_progress{false};
  /// Connections sharing one completion queue at most (see queue_member_limit in Domain.cpp).
  std::size_t queue_member_limit{1};
  /// Registrations of the backend's shared pools in this domain (made when first needed).
  Registration shared_send;
  Registration shared_receive;

  /// An event-queue entry read early (when a passive endpoint closes, its queued connection
  /// requests must be answered first); the others wait here for the loop.
  struct StashedEvent {
    bool error{false};
    std::uint32_t event{0};
    const fid* source{nullptr};      // error entries: the endpoint
    std::string error_text;          // error entries: fi_strerror and the provider's text
    std::vector<std::uint8_t> bytes; // other entries: the fi_eq_cm_entry and its data
  };
  std::deque<StashedEvent> stashed_events;
  /// The fi_infos of passive endpoints closed in this domain, kept until the event queue closes:
  /// providers (tcp, sockets) read them when a request queued for the endpoint is read.
  std::vector<InfoPtr> retired_infos;
  /// The completion queues of this domain's connections (both roles); closed by the loop once no
  /// connection uses them, before the domain closes.
  std::vector<std::shared_ptr<CompletionQueue>> queues;

  [[nodiscard]] std::uint64_t take_key() noexcept { return next_key++; }
};

/// A listen endpoint: a passive endpoint and the connections it accepted.
struct Listener {
  EndPointAddress address;
  /// The passive endpoint's own socket address (fi_getname), to recognise sockets accepted on it.
  sockaddr_storage bound_name{};
  ConnectionParametersRecv params;
  std::shared_ptr<DomainContext> domain;
  /// The fi_info the passive endpoint was made from. Kept for its lifetime: the sockets provider
  /// keeps pointers into it (and reads freed memory otherwise).
  InfoPtr info;
  FidHandle<fid_pep> pep{"passive endpoint"};
  std::unordered_set<Connection*> accepted;
  bool closing{false};
  /// The loop thread is inside on_connection_request_cb for this listener (it uses the passive
  /// endpoint afterwards, so closing it must wait for the loop).
  bool in_request_callback{false};
};

/// What a completion-queue entry's context points to: provider scratch space first (FI_CONTEXT2),
/// then the connection and which slot of which kind the operation used (a queue is shared, so the
/// entry names its connection).
struct OperationContext {
  fi_context2 provider_scratch{};
  Connection* connection{nullptr};
  enum class Kind : std::uint8_t { send, receive } kind{Kind::send};
  std::uint32_t index{0};
};

/// A completion queue shared by the connections of one domain and one role (send endpoints, or
/// connections accepted by listeners): one wait fd in the event loop however many connections
/// there are, and one read hands over the completions of all of them. Its entries name their
/// connection (OperationContext::connection).
struct CompletionQueue {
  CompletionQueue(DomainContext& owner, bool receiving) : domain{&owner}, for_receivers{receiving} {}

  DomainContext* domain; ///< outlives the queue (DomainContext::queues owns it)
  bool for_receivers;    ///< accepted connections (true) or send endpoints (false)
  FidHandle<fid_cq> cq{"completion queue"};
  int fd{-1}; ///< the wait fd, or -1 (polled by the progress timer)
  bool fd_registered{false};
  /// Entries the queue holds; 0: no limit that matters (the provider keeps an overflow list, as
  /// the tcp and sockets providers do). Otherwise the sum of the members' reservations never
  /// exceeds it: an overrun queue (verbs) is fatal for every endpoint on it.
  std::size_t capacity{0};
  /// Entries the members may have outstanding at once (send slots plus posted receives).
  std::size_t reserved{0};
  /// Connections bound to it; at zero the loop closes it (run_deferred).
  std::size_t members{0};
  /// Sends of its members not completed yet (a provider with manual progress needs reads then).
  std::size_t sends_outstanding{0};
  /// Connections closed while bound to it. Their endpoints are closed, but entries they left in the
  /// queue still point to them (and providers may add cancelled ones on fi_close); they are freed
  /// once a read found the queue empty after they were put here.
  std::vector<std::shared_ptr<Connection>> retired;

  // --- reading it (DataPath.cpp) ----------------------------------------------------------------
  /// The queue could not be put to sleep (fi_trywait said no): the progress timer polls it.
  bool needs_poll{false};
  /// The progress timer's tick during which the queue was last read (the timer skips queues that
  /// the loop read anyway since its previous tick).
  std::uint64_t serviced_tick{0};
  /// The tick in which the progress timer last listed this queue to poll (one listing per tick).
  std::uint64_t listed_tick{0};
  /// The loop should read the queue again soon (completions left behind by the fairness budget, or
  /// sends posted that a provider with manual progress only pushes out while its queue is read).
  bool ready_again{false};
  /// The loop thread is reading this queue.
  bool draining{false};
  /// Something was posted while draining: read the queue again before sleeping (manual progress).
  bool posted_during_drain{false};
  // --- receive polling (NetworkConfig::receive_poll; see BackendLibfabric::keep_polling) --------
  /// How long the next wake-up that completes nothing is followed by polling (adaptive; 0: none).
  std::chrono::steady_clock::duration poll_budget{};
  /// While polling: when to give up and sleep on the queue's fd again.
  std::chrono::steady_clock::time_point poll_deadline{};
  /// The previous wake-up that completed nothing (decides when a budget of 0 grows again).
  std::chrono::steady_clock::time_point last_empty_wake{};
  bool polling{false};
};

/// One posted send and what to release when it completes.
struct SendSlot {
  bool busy{false};
  std::uint32_t ring_chunk{BounceRing::no_chunk};
  /// Buffered send: the pool buffer to give back (-1: none).
  std::int64_t pool_buffer{-1};
  bool shared_pool{false};
};

/// A sent message the receiver has not given its credit back for yet; its key is reported when it
/// does (or in on_connection_closed_cb when the connection ends first).
struct UnackedMessage {
  std::uint64_t key{0};
  bool has_key{false};
};

/// Who a closed connection is reported to.
enum class CloseNotice : std::uint8_t {
  none,    ///< nothing (backend destruction, or an accepted connection never announced)
  closed,  ///< on_connection_closed_cb
  refused, ///< on_connection_refused_cb
};

/// The object an event-queue entry belongs to (exactly one of the two is set).
struct FidOwner {
  std::shared_ptr<Listener> listener;
  std::shared_ptr<Connection> connection;
};

/// One connection: a send endpoint (role sender) or a connection accepted by a listener (role
/// receiver). Messages flow from sender to receiver; credits flow back.
struct Connection : std::enable_shared_from_this<Connection> {
  enum class Role { sender, receiver };
  enum class State {
    connecting,  ///< sender: fi_connect issued
    accepting,   ///< receiver: fi_accept issued
    established, ///< messages may flow
    closing,     ///< being closed: nothing is sent or delivered any more
  };

  Connection(Role connection_role, EndPointAddress remote) : role{connection_role}, address{std::move(remote)} {}

  Role role;
  State state{State::connecting};
  /// The address in callbacks: as given to open_send_endpoint, or the peer's for accepted ones.
  EndPointAddress address;
  std::shared_ptr<DomainContext> domain;
  Listener* listener{nullptr}; // receiver: the listener that accepted it (null once it is gone)

  /// The fi_info the endpoint was made from, kept for its lifetime (see Listener::info).
  InfoPtr info;
  FidHandle<fid_ep> ep{"endpoint"};
  /// The completion queue it shares with the other connections of its domain and role.
  std::shared_ptr<CompletionQueue> queue;
  /// Entries this connection may leave in its queue at once (its share of CompletionQueue::reserved).
  std::size_t queue_reservation{0};
  bool provider_connected{false}; ///< FI_CONNECTED seen on this side
  bool established_reported{false};
  CloseNotice close_notice{CloseNotice::none};
  bool teardown_queued{false};
  std::chrono::steady_clock::time_point connect_deadline{};
  // --- sender: the addresses of a destination with several (a host name) --------------------
  /// The addresses not tried yet, in getaddrinfo's order: when this attempt fails before the
  /// connection is established, a new Connection takes its place for the next one.
  std::vector<detail::ResolvedAddress> untried_addresses;
  ConnectionParameters params; ///< as given to open_send_endpoint, for the next attempt
  std::string trying;          ///< the numeric address of this attempt ("::1")
  std::string failed_attempts; ///< what became of the addresses tried before, for the log
  /// Had completions in the current read of its queue (their follow-up work runs after the read).
  bool touched{false};
  std::size_t iov_limit{1};

  // --- peer_timeout: the keepalive timer's view (see BackendLibfabric::on_keepalive_timer) -----
  /// Keepalive ticks since anything was last received on this connection (reset by every receive
  /// completion; counted by the timer, so no clock is read per message).
  std::uint32_t silent_ticks{0};
  /// `silent_ticks` beyond which the peer is declared lost; 0: never (peer_timeout is 0 here, or
  /// the sender on an accepted connection sends no keepalives).
  std::uint32_t silence_limit_ticks{0};
  /// Sender: a message was posted since the previous keepalive tick (no keepalive needed then).
  bool sent_since_tick{false};

  // --- sending (both roles: data on senders, credit messages on receivers) -------------------
  HostMemory send_header_memory;
  Registration send_header_registration;
  std::vector<SendSlot> send_slots;
  std::vector<OperationContext> send_contexts;
  IndexStack free_send_slots;
  std::size_t sends_outstanding{0};

  // --- receiving (data buffers on receivers, control buffers on senders) ---------------------
  HostMemory receive_memory; // own buffers (empty when the shared receive pool is used)
  Registration receive_registration;
  std::vector<std::uint8_t*> receive_buffers; // one per posted receive
  void* receive_desc{nullptr};
  std::size_t receive_buffer_size{0}; // bytes per receive buffer (wire header included)
  std::vector<std::uint32_t> shared_receive_indices;
  std::vector<OperationContext> receive_contexts;

  // --- sender: credits and messages in flight -------------------------------------------------
  std::uint64_t peer_max_message{0};
  std::uint32_t window{0};                // credits granted at set-up
  std::uint32_t credits_granted_total{0}; // cumulative, as told by the receiver (wrapping)
  std::uint32_t messages_sent_total{0};   // cumulative (wrapping)
  std::vector<UnackedMessage> unacked;    // circular, capacity `window`
  std::size_t unacked_first{0};
  std::size_t unacked_count{0};

  // --- sender: buffered pool, zero-copy region, bounce ring ---------------------------------
  std::unique_ptr<SendBufferPool> own_pool;
  Registration own_pool_registration;
  bool uses_shared_send_pool{false};
  std::size_t pool_min_free{static_cast<std::size_t>(-1)}; // low-water mark since the last query
  bool pool_queried{false};
  const std::uint8_t* zero_copy_start{nullptr};
  std::size_t zero_copy_size{0};
  Registration zero_copy_registration;
  std::unique_ptr<BounceRing> ring;
  HostMemory ring_memory;
  Registration ring_registration;

  // --- receiver: credits returned -----------------------------------------------------------
  std::uint32_t messages_received_total{0}; // cumulative (wrapping)
  std::uint32_t credits_available_total{0}; // initial window + buffers reposted (wrapping)
  std::uint32_t credits_sent_total{0};      // what the last credit message told the sender

  // --- sender: waiting for room (NetworkBackend::wait_for_send_space, on_send_space_cb) ---------
  /// Keyed sends reported by on_send_completed_cb (NetworkBackend::completed_sends): written under
  /// the backend's lock by the loop thread (sequentially consistent, see core/SendWait.hpp).
  mutable std::atomic<std::uint64_t> completed_keys{0};
  /// The provider refused a send (-FI_EAGAIN): no room until a send completion comes.
  bool provider_full{false};
  /// A send was refused for lack of room while on_send_space_cb is set: the loop calls it once a
  /// message of `space_wanted_bytes` fits again.
  bool space_wanted{false};
  std::size_t space_wanted_bytes{0};
  /// get_buffer returned nullptr on the established endpoint while on_send_space_cb is set: the loop
  /// calls it once get_buffer could return a buffer (armed apart from `space_wanted`).
  bool buffer_wanted{false};

  [[nodiscard]] std::uint32_t credits() const noexcept { return credits_granted_total - messages_sent_total; }
};

} // namespace netio3::libfabric
