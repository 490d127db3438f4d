#pragma once

// The C++ state behind an ibmsg_event_loop and its sockets.
//
// Mapping onto netio3: each SEND socket and each LISTEN socket owns one NetworkBackend (UNSAFE:
// everything runs on the program's thread) on the loop's EpollEventLoop. One backend per socket
// keeps the mapping from callbacks to sockets trivial (the callbacks capture their endpoint), allows
// several connections to the same server, and tells which listener accepted a connection. RECV
// sockets are the connections a listener's backend accepted, named by the peer's address.
//
// The EpollEventLoop runs only inside ibmsg_dispatch_event_loop; every callback that changes
// something the program can see calls `Loop::note_event`, which stops the loop so that dispatch
// returns after the batch in which the first event happened.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <ibmsg.h>

#include "ibmsg/Buffers.hpp"
#include "ibmsg/Transport.hpp"
#include "netio3/EpollEventLoop.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::ibmsg {

class Loop;
class ListenEndpoint;

/// What an `ibmsg_socket::ibmsg_private` points to. The tag guards against sockets of the wrong kind.
enum class SocketKind : std::uint32_t { Send = 0x53454e44U, Listen = 0x4c495354U, Recv = 0x52454356U };

/// Common part of the state behind a socket.
class SocketState {
public:
  SocketState(SocketKind kind, Loop* loop, ibmsg_socket* socket) noexcept
    : m_kind{kind}, m_loop{loop}, m_socket{socket} {}
  virtual ~SocketState() = default;
  SocketState(const SocketState&) = delete;
  SocketState& operator=(const SocketState&) = delete;
  SocketState(SocketState&&) = delete;
  SocketState& operator=(SocketState&&) = delete;

  [[nodiscard]] SocketKind kind() const noexcept { return m_kind; }
  [[nodiscard]] Loop* loop() const noexcept { return m_loop; }
  [[nodiscard]] ibmsg_socket* socket() const noexcept { return m_socket; }
  /// Forgets the program's socket (after its last status change), so that nothing writes to it.
  void detach_socket() noexcept;

protected:
  SocketKind m_kind;
  Loop* m_loop;
  ibmsg_socket* m_socket;
};

/// A SEND socket: one send endpoint on a backend of its own, with its zero-copy slab.
class SendEndpoint final : public SocketState {
public:
  SendEndpoint(Loop* loop, ibmsg_socket* socket, EndPointAddress address);
  ~SendEndpoint() override;
  SendEndpoint(const SendEndpoint&) = delete;
  SendEndpoint& operator=(const SendEndpoint&) = delete;
  SendEndpoint(SendEndpoint&&) = delete;
  SendEndpoint& operator=(SendEndpoint&&) = delete;

  /// Creates the backend and opens the endpoint. Returns an ibmsg error code.
  int open();
  /// ibmsg_post_send. Returns an ibmsg error code.
  int post_send(ibmsg_buffer* msg, BufferRecord* record);
  /// ibmsg_disconnect. Returns an ibmsg error code.
  int disconnect();
  /// A slot of the slab, or null.
  [[nodiscard]] BufferRecord* acquire_slot(std::size_t size) noexcept;
  /// True until the connection is reported closed or refused.
  [[nodiscard]] bool is_open() const noexcept { return m_open; }
  /// The port connected to.
  [[nodiscard]] std::uint16_t port() const noexcept { return m_address.port(); }
  /// Hands the slab to the loop if the program still holds slots of it (called before destruction).
  void give_up_slab() noexcept;

private:
  void on_established();
  void on_refused();
  void on_closed();
  void on_send_completed(std::uint64_t key);
  void link_in_flight(BufferRecord* record) noexcept;
  void unlink_in_flight(BufferRecord* record) noexcept;
  /// Marks every send still in flight as not sent; returns how many there were.
  std::size_t fail_in_flight() noexcept;
  void finish(ibmsg_socket_status status, int error);

  EndPointAddress m_address;
  std::unique_ptr<SendSlab> m_slab;
  std::unique_ptr<NetworkBackend> m_backend;
  BufferRecord* m_in_flight{nullptr};
  bool m_open{false};
  bool m_disconnect_requested{false};
};

/// A RECV socket: a connection accepted by a listener.
class RecvConnection final : public SocketState {
public:
  RecvConnection(Loop* loop, ibmsg_socket* socket, ListenEndpoint* listener, EndPointAddress remote) noexcept
    : SocketState{SocketKind::Recv, loop, socket}, m_listener{listener}, m_remote{std::move(remote)} {}

  [[nodiscard]] ListenEndpoint* listener() const noexcept { return m_listener; }
  [[nodiscard]] const EndPointAddress& remote() const noexcept { return m_remote; }
  /// ibmsg_disconnect on the RECV socket. Returns an ibmsg error code.
  int disconnect();

  bool established{false};
  bool disconnect_requested{false};
  /// Set when a message had to be dropped (the program holds the whole receive pool): the
  /// connection is unusable from then on and its messages are not delivered.
  bool failed{false};

private:
  ListenEndpoint* m_listener;
  EndPointAddress m_remote;
};

/// A LISTEN socket: one listen endpoint on a backend of its own, and its accepted connections.
class ListenEndpoint final : public SocketState {
public:
  ListenEndpoint(Loop* loop, ibmsg_socket* socket, EndPointAddress address);
  ~ListenEndpoint() override;
  ListenEndpoint(const ListenEndpoint&) = delete;
  ListenEndpoint& operator=(const ListenEndpoint&) = delete;
  ListenEndpoint(ListenEndpoint&&) = delete;
  ListenEndpoint& operator=(ListenEndpoint&&) = delete;

  /// Creates the backend and starts listening. Returns an ibmsg error code.
  int open();
  /// ibmsg_disconnect on the LISTEN socket. Returns an ibmsg error code.
  int disconnect();
  /// ibmsg_accept: registers `socket` as the RECV socket of the request being decided (only inside
  /// the connection_request callback). Returns an ibmsg error code.
  int accept(ibmsg_socket* socket);
  /// Closes one accepted connection (ibmsg_disconnect on a RECV socket).
  int close_connection(RecvConnection* connection);
  /// The port actually listened on.
  [[nodiscard]] std::uint16_t port() const noexcept;
  /// True while listening or while accepted connections are still being closed.
  [[nodiscard]] bool is_open() const noexcept { return m_listening || !m_connections.empty(); }

private:
  bool on_connection_request(const EndPointAddress& remote);
  void on_established(const EndPointAddress& remote);
  void on_data(const EndPointAddress& remote, std::span<const std::uint8_t> data);
  void on_closed(const EndPointAddress& remote);
  void deliver(RecvConnection& connection, std::span<const std::uint8_t> data);
  void drop_connection(RecvConnection& connection, int error) noexcept;
  [[nodiscard]] RecvConnection* find(const EndPointAddress& remote) noexcept;
  void retire_if_done() noexcept;

  /// The connection request being decided by the program's connection_request callback.
  struct PendingRequest {
    EndPointAddress remote{};
    bool active{false};
    ibmsg_socket* accepted{nullptr};
  };

  EndPointAddress m_address;
  std::unique_ptr<NetworkBackend> m_backend;
  std::unordered_map<EndPointAddress, std::unique_ptr<RecvConnection>> m_connections;
  PendingRequest m_request;
  bool m_listening{false};
  bool m_retired{false};
};

/// The state behind an ibmsg_event_loop.
class Loop {
public:
  /// Builds the loop for `c_loop`; returns an ibmsg error code and sets `loop` on success.
  static int create(ibmsg_event_loop* c_loop, std::unique_ptr<Loop>& loop);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;
  Loop(Loop&&) = delete;
  Loop& operator=(Loop&&) = delete;

  int connect(ibmsg_socket* socket, const char* ip, std::uint16_t port);
  int listen(ibmsg_socket* socket, const char* ip, std::uint16_t port);
  /// Runs the event loop until an event (timeout_ms < 0) or at most timeout_ms.
  int dispatch(int timeout_ms);
  int set_max_message_size(std::size_t size);
  /// True while dispatch runs (callbacks are running or may run).
  [[nodiscard]] bool dispatching() const noexcept { return m_dispatching; }

  [[nodiscard]] ibmsg_event_loop* c_loop() const noexcept { return m_c_loop; }
  [[nodiscard]] const std::shared_ptr<EpollEventLoop>& event_loop() const noexcept { return m_event_loop; }
  [[nodiscard]] Transport transport() const noexcept { return m_transport; }
  [[nodiscard]] std::size_t max_message_size() const noexcept { return m_max_message_size; }
  /// The pool received messages are copied into (created with the first socket).
  [[nodiscard]] ReceivePool& receive_pool();

  /// Records an event the program can see: dispatch returns after the current batch.
  void note_event() noexcept;
  /// Records that a posted send failed: dispatch returns IBMSG_SEND_FAILED.
  void note_send_failure() noexcept;
  /// Records that a send was refused for lack of resources. What frees them (a returned credit, a
  /// drained socket buffer) is invisible to the program, so the next dispatch waits at most about a
  /// millisecond instead of until the next visible event: a retry loop never hangs.
  void note_backpressure() noexcept { m_backpressure = true; }
  /// Takes an endpoint out of the open set; it is destroyed outside every callback (`collect`).
  void retire(SocketState* endpoint);
  /// Destroys the retired endpoints, unless callbacks may be running.
  void collect() noexcept;
  /// A slab whose endpoint is gone while the program still holds some of its slots.
  void adopt_slab(std::unique_ptr<SendSlab> slab);
  /// Called when a slot of an adopted slab came back: frees the slab once it is unused.
  void slab_slot_released(SendSlab* slab) noexcept;
  void track_heap_buffer(BufferRecord* record);
  void untrack_heap_buffer(BufferRecord* record) noexcept;
  /// A backend configuration with the loop's transport and single-thread model.
  [[nodiscard]] NetworkConfig base_config() const;
  [[nodiscard]] NetworkType network_type() const noexcept;

private:
  Loop(ibmsg_event_loop* c_loop, Transport transport, std::size_t max_message_size,
       std::shared_ptr<EpollEventLoop> event_loop) noexcept;

  ibmsg_event_loop* m_c_loop;
  Transport m_transport;
  std::size_t m_max_message_size;
  std::shared_ptr<EpollEventLoop> m_event_loop;
  std::unique_ptr<ReceivePool> m_receive_pool;
  /// Every socket state the loop owns (open, or closing). Keyed by address for O(1) retirement.
  std::unordered_map<SocketState*, std::unique_ptr<SocketState>> m_endpoints;
  std::vector<std::unique_ptr<SocketState>> m_retired;
  std::vector<std::unique_ptr<SendSlab>> m_orphan_slabs;
  std::unordered_set<BufferRecord*> m_heap_buffers;
  bool m_dispatching{false};
  bool m_event_seen{false};
  bool m_send_failed{false};
  bool m_backpressure{false};
};

/// The loop behind a C event loop, or null if it is not initialised.
[[nodiscard]] inline Loop* loop_of(const ibmsg_event_loop* c_loop) noexcept {
  return c_loop == nullptr ? nullptr : static_cast<Loop*>(c_loop->ibmsg_private);
}

/// The state behind a C socket, or null if it is not open (or not ours).
[[nodiscard]] SocketState* state_of(const ibmsg_socket* socket) noexcept;

} // namespace netio3::ibmsg
