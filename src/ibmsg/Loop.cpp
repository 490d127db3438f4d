#include "ibmsg/Loop.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string_view>
#include <utility>

#include "core/Logging.hpp"

namespace netio3::ibmsg {

namespace {

/// Bounds of the largest message a loop may be configured for.
constexpr std::size_t min_message_size_limit{1};
constexpr std::size_t max_message_size_limit{std::size_t{64} << 20U};
/// Receive buffers per accepted connection: RDMA posted receives (the sender's credit window),
/// TCP messages decoded ahead. About 1 MiB per connection, between 8 and 64 buffers.
constexpr std::size_t receive_window_bytes{std::size_t{1} << 20U};

/// The ibmsg error code for an exception thrown while opening an endpoint, logged with its reason.
int open_error_code(const std::exception_ptr& error, int failed_to_open_code, const EndPointAddress& address,
                    const char* what) noexcept {
  try {
    std::rethrow_exception(error);
  } catch (const InvalidEndpointAddress& invalid) {
    NETIO3_LOG_WARNING("ibmsg: {} {}: {}", what, address.to_string(), invalid.what());
    return IBMSG_GETADDRINFO_FAILED;
  } catch (const UnsupportedConfiguration& unsupported) {
    NETIO3_LOG_WARNING("ibmsg: {} {}: {}", what, address.to_string(), unsupported.what());
    return IBMSG_TRANSPORT_UNAVAILABLE;
  } catch (const std::bad_alloc&) {
    NETIO3_LOG_WARNING("ibmsg: {} {}: out of memory", what, address.to_string());
    return IBMSG_ALLOC_FAILED;
  } catch (const std::exception& other) {
    NETIO3_LOG_WARNING("ibmsg: {} {}: {}", what, address.to_string(), other.what());
    return failed_to_open_code;
  } catch (...) {
    NETIO3_LOG_WARNING("ibmsg: {} {}: unknown exception", what, address.to_string());
    return IBMSG_INTERNAL_ERROR;
  }
}

/// Puts a socket struct of the program into its initial state.
void reset_socket(ibmsg_socket* socket, ibmsg_socket_type type) noexcept {
  socket->cmid = nullptr;
  socket->status = IBMSG_UNCONNECTED;
  socket->socket_type = type;
  socket->recv_buffer.mr = nullptr;
  socket->recv_buffer.data = nullptr;
  socket->recv_buffer.size = 0;
  socket->recv_buffer.status = IBMSG_WAITING;
  socket->recv_buffer.ibmsg_private = nullptr;
  socket->ibmsg_private_error = IBMSG_OK;
  socket->ibmsg_private = nullptr;
}

/// Parses IBMSG_MAX_MSGSIZE; false if it is not a number within the bounds.
bool parse_message_size(std::string_view text, std::size_t& size) noexcept {
  std::size_t value{0};
  const auto* end = text.data() + text.size();
  const auto [position, error] = std::from_chars(text.data(), end, value);
  if (error != std::errc{} || position != end || value < min_message_size_limit || value > max_message_size_limit) {
    return false;
  }
  size = value;
  return true;
}

} // namespace

SocketState* state_of(const ibmsg_socket* socket) noexcept {
  return socket == nullptr ? nullptr : static_cast<SocketState*>(socket->ibmsg_private);
}

void SocketState::detach_socket() noexcept {
  if (m_socket != nullptr) {
    m_socket->ibmsg_private = nullptr;
    m_socket = nullptr;
  }
}

// --- SendEndpoint -------------------------------------------------------------------------------

SendEndpoint::SendEndpoint(Loop* loop, ibmsg_socket* socket, EndPointAddress address)
  : SocketState{SocketKind::Send, loop, socket}, m_address{std::move(address)} {}

SendEndpoint::~SendEndpoint() {
  m_backend.reset(); // first: the transport stops using the slab
  give_up_slab();
}

void SendEndpoint::give_up_slab() noexcept {
  if (!m_slab) {
    return;
  }
  m_slab->endpoint_alive = false;
  if (m_slab->slots_in_use() > 0) {
    try {
      m_loop->adopt_slab(std::move(m_slab));
    } catch (const std::bad_alloc&) {
      NETIO3_LOG_ERROR("ibmsg: out of memory while keeping the buffers of a closed connection; they are released");
    }
  }
  m_slab.reset();
}

int SendEndpoint::open() {
  try {
    const std::size_t max_size = m_loop->max_message_size();
    m_slab = std::make_unique<SendSlab>(m_loop, max_size, SendSlab::slot_count_for(max_size));
    NetworkConfig config = m_loop->base_config();
    config.on_connection_established_cb = [this](const EndPointAddress&) { on_established(); };
    config.on_connection_refused_cb = [this](const EndPointAddress&) { on_refused(); };
    config.on_connection_closed_cb = [this](const EndPointAddress&, const std::vector<std::uint64_t>&) {
      on_closed(); // every send still in flight fails, whether its key is listed or not
    };
    config.on_send_completed_cb = [this](const EndPointAddress&, std::uint64_t key) { on_send_completed(key); };
    m_backend = NetworkBackend::create(m_loop->network_type(), config, m_loop->event_loop());
    ConnectionParameters parameters;
    parameters.mr_start = m_slab->region_start();
    parameters.mr_size = m_slab->region_size();
    m_backend->open_send_endpoint(m_address, parameters);
  } catch (...) {
    m_backend.reset();
    return open_error_code(std::current_exception(), IBMSG_CREATE_ID_FAILED, m_address, "cannot connect to");
  }
  m_open = true;
  return IBMSG_OK;
}

BufferRecord* SendEndpoint::acquire_slot(std::size_t size) noexcept {
  return m_slab ? m_slab->acquire(size) : nullptr;
}

int SendEndpoint::post_send(ibmsg_buffer* msg, BufferRecord* record) {
  // The program may point `data` anywhere inside its buffer and lower `size`.
  const auto buffer_start = reinterpret_cast<std::uintptr_t>(record->data);
  const auto data_start = reinterpret_cast<std::uintptr_t>(msg->data);
  const std::size_t offset = data_start - buffer_start;
  if (msg->size > 0 && (msg->data == nullptr || data_start < buffer_start || offset > record->usable ||
                        msg->size > record->usable - offset)) {
    return IBMSG_INVALID_ARGUMENT;
  }
  std::uint8_t* const data = record->data + (msg->size > 0 ? offset : 0);
  if (msg->size > m_loop->max_message_size()) {
    return IBMSG_MESSAGE_TOO_LARGE;
  }
  if (!m_open || m_disconnect_requested || m_socket == nullptr || m_socket->status != IBMSG_CONNECTED) {
    return IBMSG_NOT_CONNECTED;
  }
  const auto key = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(record));
  NetioStatus status{NetioStatus::FAILED};
  try {
    if (record->origin == BufferOrigin::SendSlab && record->owner == m_slab.get()) {
      // Zero-copy from the registered slab: the memory stays untouched until the completion.
      status = m_backend->send_data(m_address, std::span<std::uint8_t>{data, msg->size}, {}, key);
    }
    if (status == NetioStatus::OUTSIDE_REGISTERED_REGION || record->origin != BufferOrigin::SendSlab ||
        record->owner != m_slab.get()) {
      status = m_backend->send_data_copy(m_address, std::span<const std::uint8_t>{data, msg->size}, {}, key);
    }
  } catch (const std::exception& error) {
    NETIO3_LOG_WARNING("ibmsg: sending to {} failed: {}", m_address.to_string(), error.what());
    return IBMSG_POST_SEND_FAILED;
  }
  switch (status) {
  case NetioStatus::OK:
    record->state = BufferState::InFlight;
    record->user = msg;
    msg->status = IBMSG_WAITING;
    link_in_flight(record);
    return IBMSG_OK;
  case NetioStatus::NO_RESOURCES: m_loop->note_backpressure(); return IBMSG_NO_RESOURCES;
  case NetioStatus::MESSAGE_TOO_LARGE: return IBMSG_MESSAGE_TOO_LARGE;
  case NetioStatus::INVALID_ARGUMENT: return IBMSG_INVALID_ARGUMENT;
  case NetioStatus::FAILED:
  case NetioStatus::OUTSIDE_REGISTERED_REGION: break;
  }
  NETIO3_LOG_WARNING("ibmsg: sending to {} failed: {}", m_address.to_string(), to_string(status));
  return IBMSG_POST_SEND_FAILED;
}

int SendEndpoint::disconnect() {
  if (!m_open || m_disconnect_requested) {
    return IBMSG_OK;
  }
  m_disconnect_requested = true;
  if (m_socket != nullptr) {
    m_socket->status = IBMSG_DISCONNECTING;
  }
  try {
    m_backend->close_send_endpoint(m_address); // on_connection_closed_cb (or refused) follows from the loop
  } catch (const std::exception& error) {
    NETIO3_LOG_WARNING("ibmsg: closing the connection to {} failed: {}", m_address.to_string(), error.what());
    finish(IBMSG_UNCONNECTED, IBMSG_DISCONNECT_FAILED);
    return IBMSG_DISCONNECT_FAILED;
  }
  return IBMSG_OK;
}

void SendEndpoint::on_established() {
  if (!m_open || m_disconnect_requested || m_socket == nullptr) {
    return;
  }
  m_socket->status = IBMSG_CONNECTED;
  m_loop->note_event();
  if (auto* callback = m_loop->c_loop()->connection_established; callback != nullptr) {
    callback(m_socket);
  }
}

void SendEndpoint::on_refused() {
  if (!m_open) {
    return;
  }
  NETIO3_LOG_DEBUG("ibmsg: the connection to {} was refused", m_address.to_string());
  if (m_disconnect_requested) {
    finish(IBMSG_UNCONNECTED, IBMSG_OK);
  } else {
    finish(IBMSG_ERROR, IBMSG_CONNECTION_REFUSED);
  }
}

void SendEndpoint::on_closed() {
  if (!m_open) {
    return;
  }
  const bool sends_pending = m_in_flight != nullptr;
  if (m_disconnect_requested) {
    finish(IBMSG_UNCONNECTED, sends_pending ? IBMSG_SEND_FAILED : IBMSG_OK);
  } else if (sends_pending) {
    finish(IBMSG_ERROR, IBMSG_SEND_FAILED);
  } else {
    finish(IBMSG_UNCONNECTED, IBMSG_CONNECTION_CLOSED);
  }
}

void SendEndpoint::on_send_completed(std::uint64_t key) {
  // The key is the record's address, given to the backend by this file's send (ibmsg has no other
  // handle for a message in flight); it is checked against this endpoint before use.
  auto* record = reinterpret_cast<BufferRecord*>(static_cast<std::uintptr_t>(key)); // NOLINT(performance-no-int-to-ptr)
  if (record == nullptr || record->endpoint != this) {
    NETIO3_LOG_ERROR("ibmsg: completion for unknown send key {:#x} on {}", key, m_address.to_string());
    return;
  }
  unlink_in_flight(record);
  if (record->state == BufferState::InFlightOrphaned) {
    release_buffer(record); // the program freed it while it was being sent
  } else {
    record->state = BufferState::Held;
    if (record->user != nullptr) {
      record->user->status = IBMSG_SENT;
    }
  }
  m_loop->note_event();
}

void SendEndpoint::link_in_flight(BufferRecord* record) noexcept {
  record->endpoint = this;
  record->previous_in_flight = nullptr;
  record->next_in_flight = m_in_flight;
  if (m_in_flight != nullptr) {
    m_in_flight->previous_in_flight = record;
  }
  m_in_flight = record;
}

void SendEndpoint::unlink_in_flight(BufferRecord* record) noexcept {
  if (record->previous_in_flight != nullptr) {
    record->previous_in_flight->next_in_flight = record->next_in_flight;
  } else {
    m_in_flight = record->next_in_flight;
  }
  if (record->next_in_flight != nullptr) {
    record->next_in_flight->previous_in_flight = record->previous_in_flight;
  }
  record->previous_in_flight = nullptr;
  record->next_in_flight = nullptr;
  record->endpoint = nullptr;
}

std::size_t SendEndpoint::fail_in_flight() noexcept {
  std::size_t failed{0};
  while (m_in_flight != nullptr) {
    BufferRecord* record = m_in_flight;
    unlink_in_flight(record);
    if (record->state == BufferState::InFlightOrphaned) {
      release_buffer(record);
    } else {
      record->state = BufferState::Held;
      if (record->user != nullptr) {
        record->user->status = IBMSG_NOT_SENT;
      }
    }
    ++failed;
  }
  return failed;
}

void SendEndpoint::finish(ibmsg_socket_status status, int error) {
  m_open = false;
  if (fail_in_flight() > 0) {
    m_loop->note_send_failure();
  }
  if (m_socket != nullptr) {
    m_socket->status = status;
    m_socket->ibmsg_private_error = error;
    detach_socket();
  }
  m_loop->note_event();
  m_loop->retire(this);
}

// --- RecvConnection -----------------------------------------------------------------------------

int RecvConnection::disconnect() {
  return m_listener->close_connection(this);
}

// --- ListenEndpoint -----------------------------------------------------------------------------

ListenEndpoint::ListenEndpoint(Loop* loop, ibmsg_socket* socket, EndPointAddress address)
  : SocketState{SocketKind::Listen, loop, socket}, m_address{std::move(address)} {}

ListenEndpoint::~ListenEndpoint() {
  // Closes the listen endpoint and its connections without callbacks. The program's RECV sockets
  // are not written to: at loop teardown the program may already have freed them.
  m_backend.reset();
}

int ListenEndpoint::open() {
  try {
    NetworkConfig config = m_loop->base_config();
    config.on_connection_request_cb = [this](const EndPointAddress& remote) { return on_connection_request(remote); };
    config.on_connection_established_cb = [this](const EndPointAddress& remote) { on_established(remote); };
    config.on_data_from_cb = [this](const EndPointAddress& remote, std::span<const std::uint8_t> data) {
      on_data(remote, data);
    };
    config.on_connection_closed_cb = [this](const EndPointAddress& remote, const std::vector<std::uint64_t>&) {
      on_closed(remote);
    };
    m_backend = NetworkBackend::create(m_loop->network_type(), config, m_loop->event_loop());
    ConnectionParametersRecv parameters;
    parameters.buf_size = m_loop->max_message_size();
    parameters.num_buf = std::clamp<std::size_t>(receive_window_bytes / parameters.buf_size, 8, 64);
    m_address = m_backend->open_listen_endpoint(m_address, parameters);
  } catch (...) {
    m_backend.reset();
    return open_error_code(std::current_exception(), IBMSG_BIND_FAILED, m_address, "cannot listen on");
  }
  m_listening = true;
  return IBMSG_OK;
}

int ListenEndpoint::disconnect() {
  if (!m_listening) {
    return IBMSG_OK;
  }
  m_listening = false;
  int result{IBMSG_OK};
  try {
    m_backend->close_listen_endpoint(m_address); // each accepted connection's closed callback follows
  } catch (const std::exception& error) {
    NETIO3_LOG_WARNING("ibmsg: closing the listener on {} failed: {}", m_address.to_string(), error.what());
    result = IBMSG_DISCONNECT_FAILED;
  }
  if (m_socket != nullptr) {
    m_socket->status = IBMSG_UNCONNECTED;
    m_socket->ibmsg_private_error = result;
    detach_socket();
  }
  // Established connections are reported closed by the backend; those that were accepted but
  // never established may never be: end them now.
  for (auto entry = m_connections.begin(); entry != m_connections.end();) {
    if (entry->second->established && result == IBMSG_OK) {
      entry->second->disconnect_requested = true;
      if (ibmsg_socket* socket = entry->second->socket(); socket != nullptr && !entry->second->failed) {
        socket->status = IBMSG_DISCONNECTING;
      }
      ++entry;
      continue;
    }
    if (ibmsg_socket* socket = entry->second->socket(); socket != nullptr) {
      socket->status = IBMSG_UNCONNECTED;
      socket->ibmsg_private_error = IBMSG_OK;
    }
    entry->second->detach_socket();
    entry = m_connections.erase(entry);
  }
  retire_if_done();
  return result;
}

int ListenEndpoint::accept(ibmsg_socket* socket) {
  if (!m_request.active || m_request.accepted != nullptr) {
    return IBMSG_ACCEPT_FAILED;
  }
  reset_socket(socket, IBMSG_RECV_SOCKET);
  auto connection = std::make_unique<RecvConnection>(m_loop, socket, this, m_request.remote);
  if (auto existing = m_connections.find(m_request.remote); existing != m_connections.end()) {
    // A stale entry for the same peer address and port: its connection is gone.
    if (ibmsg_socket* old_socket = existing->second->socket(); old_socket != nullptr) {
      old_socket->status = IBMSG_UNCONNECTED;
    }
    existing->second->detach_socket();
    m_connections.erase(existing);
  }
  socket->ibmsg_private = connection.get();
  m_connections.emplace(m_request.remote, std::move(connection));
  m_request.accepted = socket;
  return IBMSG_OK;
}

bool ListenEndpoint::on_connection_request(const EndPointAddress& remote) {
  if (!m_listening) {
    return false;
  }
  m_loop->note_event();
  auto* callback = m_loop->c_loop()->connection_request;
  if (callback == nullptr) {
    NETIO3_LOG_DEBUG("ibmsg: connection request from {} rejected: no connection_request callback", remote.to_string());
    return false; // as the original: without a callback every request is rejected
  }
  m_request.remote = remote;
  m_request.active = true;
  m_request.accepted = nullptr;
  // ibmsg_accept works only while the callback runs, also if a C++ callback throws.
  const std::unique_ptr<PendingRequest, void (*)(PendingRequest*)> end_of_request{
      &m_request, [](PendingRequest* pending) { pending->active = false; }};
  ibmsg_connection_request request{};
  request.cmid = nullptr;
  request.status = IBMSG_UNDECIDED;
  request.ibmsg_private = this;
  callback(&request);
  m_request.active = false;
  if (m_request.accepted == nullptr) {
    NETIO3_LOG_DEBUG("ibmsg: connection request from {} rejected by the program", remote.to_string());
    return false;
  }
  if (request.status != IBMSG_ACCEPTED || !m_listening) {
    // The program accepted, then changed the status back (or closed the listener): reject.
    if (auto entry = m_connections.find(remote); entry != m_connections.end()) {
      if (ibmsg_socket* socket = entry->second->socket(); socket != nullptr) {
        socket->status = IBMSG_UNCONNECTED;
      }
      entry->second->detach_socket();
      m_connections.erase(entry);
    }
    return false;
  }
  return true;
}

void ListenEndpoint::on_established(const EndPointAddress& remote) {
  RecvConnection* connection = find(remote);
  if (connection == nullptr) {
    // Not accepted by the program (or closed by it before it was established): end it.
    try {
      m_backend->close_accepted_connection(remote);
    } catch (const std::exception& error) {
      NETIO3_LOG_WARNING("ibmsg: cannot close the unaccepted connection from {}: {}", remote.to_string(), error.what());
    }
    return;
  }
  connection->established = true;
  ibmsg_socket* socket = connection->socket();
  if (socket == nullptr || connection->disconnect_requested) {
    return;
  }
  socket->status = IBMSG_CONNECTED;
  m_loop->note_event();
  if (auto* callback = m_loop->c_loop()->connection_established; callback != nullptr) {
    callback(socket);
  }
}

void ListenEndpoint::on_data(const EndPointAddress& remote, std::span<const std::uint8_t> data) {
  RecvConnection* connection = find(remote);
  if (connection == nullptr || connection->failed || connection->disconnect_requested ||
      connection->socket() == nullptr) {
    return; // the program closed this connection: what was still on its way is discarded
  }
  deliver(*connection, data);
}

void ListenEndpoint::deliver(RecvConnection& connection, std::span<const std::uint8_t> data) {
  m_loop->note_event();
  auto* callback = m_loop->c_loop()->message_received;
  if (callback == nullptr) {
    return; // the library "frees" it: nothing was copied
  }
  ReceivePool& pool = m_loop->receive_pool();
  if (data.size() > m_loop->max_message_size()) { // the backend enforces the limit; never trust it blindly
    NETIO3_LOG_ERROR("ibmsg: a message of {} bytes from {} exceeds the limit of {} bytes", data.size(),
                     connection.remote().to_string(), m_loop->max_message_size());
    drop_connection(connection, IBMSG_MESSAGE_TOO_LARGE);
    return;
  }
  BufferRecord* record = pool.acquire();
  if (record == nullptr) {
    NETIO3_LOG_ERROR("ibmsg: the program holds {} received messages without freeing them; the connection "
                     "from {} is closed",
                     pool.slots_in_use(), connection.remote().to_string());
    drop_connection(connection, IBMSG_NO_RESOURCES);
    return;
  }
  if (!data.empty()) {
    std::memcpy(record->data, data.data(), data.size());
  }
  ibmsg_socket* socket = connection.socket();
  ibmsg_buffer& buffer = socket->recv_buffer;
  buffer.mr = nullptr;
  buffer.data = record->data;
  buffer.size = data.size();
  buffer.status = IBMSG_RECEIVED;
  buffer.ibmsg_private = record;
  record->user = &buffer;
  record->usable = data.size();
  callback(socket, &buffer);
}

void ListenEndpoint::drop_connection(RecvConnection& connection, int error) noexcept {
  connection.failed = true;
  if (ibmsg_socket* socket = connection.socket(); socket != nullptr) {
    socket->status = IBMSG_ERROR;
    socket->ibmsg_private_error = error;
  }
  try {
    m_backend->close_accepted_connection(connection.remote()); // its closed callback erases the entry
  } catch (const std::exception& close_error) {
    NETIO3_LOG_WARNING("ibmsg: cannot close the connection from {}: {}; its messages are discarded",
                       connection.remote().to_string(), close_error.what());
  }
}

int ListenEndpoint::close_connection(RecvConnection* connection) {
  if (connection->disconnect_requested) {
    return IBMSG_OK;
  }
  ibmsg_socket* socket = connection->socket();
  const EndPointAddress remote = connection->remote();
  if (!connection->established || connection->failed) {
    // Not (or no longer) a live transport connection: end it here.
    if (socket != nullptr) {
      socket->status = IBMSG_UNCONNECTED;
    }
    connection->disconnect_requested = true;
    try {
      m_backend->close_accepted_connection(remote);
    } catch (const std::exception&) { // nothing to close at the transport level
    }
    if (auto entry = m_connections.find(remote); entry != m_connections.end() && entry->second.get() == connection) {
      connection->detach_socket();
      m_connections.erase(entry);
    }
    retire_if_done();
    return IBMSG_OK;
  }
  try {
    m_backend->close_accepted_connection(remote); // on_connection_closed_cb follows from the loop
  } catch (const UnknownListenEndpoint&) {
    // The transport already dropped it; its closed callback is on its way or was never due.
  } catch (const std::exception& error) {
    NETIO3_LOG_WARNING("ibmsg: cannot close the connection from {}: {}", remote.to_string(), error.what());
    return IBMSG_DISCONNECT_FAILED;
  }
  connection->disconnect_requested = true;
  if (socket != nullptr) {
    socket->status = IBMSG_DISCONNECTING;
  }
  return IBMSG_OK;
}

void ListenEndpoint::on_closed(const EndPointAddress& remote) {
  auto entry = m_connections.find(remote);
  if (entry == m_connections.end()) {
    return;
  }
  const std::unique_ptr<RecvConnection> connection = std::move(entry->second);
  m_connections.erase(entry);
  if (ibmsg_socket* socket = connection->socket(); socket != nullptr) {
    if (!connection->failed) {
      socket->status = IBMSG_UNCONNECTED;
      socket->ibmsg_private_error = connection->disconnect_requested ? IBMSG_OK : IBMSG_CONNECTION_CLOSED;
    }
    connection->detach_socket();
  }
  m_loop->note_event();
  retire_if_done();
}

RecvConnection* ListenEndpoint::find(const EndPointAddress& remote) noexcept {
  const auto entry = m_connections.find(remote);
  return entry == m_connections.end() ? nullptr : entry->second.get();
}

void ListenEndpoint::retire_if_done() noexcept {
  if (!m_listening && m_connections.empty() && !m_retired) {
    m_retired = true;
    m_loop->retire(this);
  }
}

std::uint16_t ListenEndpoint::port() const noexcept {
  return m_address.port();
}

// --- Loop ---------------------------------------------------------------------------------------

Loop::Loop(ibmsg_event_loop* c_loop, Transport transport, std::size_t max_message_size,
           std::shared_ptr<EpollEventLoop> event_loop) noexcept
  : m_c_loop{c_loop}, m_transport{transport}, m_max_message_size{max_message_size}, m_event_loop{
                                                                                        std::move(event_loop)} {}

int Loop::create(ibmsg_event_loop* c_loop, std::unique_ptr<Loop>& loop) {
  std::size_t max_message_size{IBMSG_MAX_MSGSIZE};
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read when a loop is created; the library never sets it
  if (const char* text = std::getenv("IBMSG_MAX_MSGSIZE"); text != nullptr && *text != '\0') {
    if (!parse_message_size(text, max_message_size)) {
      NETIO3_LOG_ERROR("ibmsg: IBMSG_MAX_MSGSIZE='{}' is not a size between {} and {} bytes", text,
                       min_message_size_limit, max_message_size_limit);
      return IBMSG_INVALID_ARGUMENT;
    }
  }
  std::shared_ptr<EpollEventLoop> event_loop;
  try {
    event_loop = std::make_shared<EpollEventLoop>();
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("ibmsg: cannot create the event loop: {}", error.what());
    return IBMSG_EPOLL_FAILED;
  }
  Transport transport{Transport::Tcp};
  if (const int result = choose_transport(event_loop, transport); result != IBMSG_OK) {
    return result;
  }
  NETIO3_LOG_INFO("ibmsg: event loop over {} (largest message {} bytes)", transport_name(transport), max_message_size);
  loop.reset(new Loop{c_loop, transport, max_message_size, std::move(event_loop)});
  return IBMSG_OK;
}

Loop::~Loop() {
  // Backends first (they close their connections without callbacks and stop using the slabs),
  // then the memory the program may still hold, then the event loop.
  m_retired.clear();
  m_endpoints.clear();
  m_orphan_slabs.clear();
  for (BufferRecord* record : m_heap_buffers) {
    free_heap_buffer(record, false);
  }
  m_heap_buffers.clear();
  m_receive_pool.reset();
  m_event_loop.reset();
}

NetworkConfig Loop::base_config() const {
  NetworkConfig config;
  // Rdma: libfabric's verbs provider. FabricTcp: libfabric in TCP mode (its tcp provider, unless
  // FI_PROVIDER says otherwise). Tcp: the asyncmsg backend.
  config.mode = m_transport == Transport::Rdma ? NetworkMode::RDMA : NetworkMode::TCP;
  config.thread_safety = ThreadSafetyModel::UNSAFE; // everything runs on the program's thread
  return config;
}

NetworkType Loop::network_type() const noexcept {
  return m_transport == Transport::Tcp ? NetworkType::ASYNCMSG : NetworkType::LIBFABRIC;
}

ReceivePool& Loop::receive_pool() {
  if (!m_receive_pool) {
    m_receive_pool = std::make_unique<ReceivePool>(m_max_message_size);
  }
  return *m_receive_pool;
}

int Loop::connect(ibmsg_socket* socket, const char* ip, std::uint16_t port) {
  reset_socket(socket, IBMSG_SEND_SOCKET);
  collect();
  std::unique_ptr<SendEndpoint> endpoint;
  try {
    endpoint = std::make_unique<SendEndpoint>(this, socket, EndPointAddress{ip, port});
  } catch (const InvalidEndpointAddress& error) {
    NETIO3_LOG_WARNING("ibmsg: cannot connect: {}", error.what());
    socket->status = IBMSG_ERROR;
    socket->ibmsg_private_error = IBMSG_GETADDRINFO_FAILED;
    return IBMSG_GETADDRINFO_FAILED;
  }
  if (const int result = endpoint->open(); result != IBMSG_OK) {
    endpoint->detach_socket();
    socket->status = IBMSG_ERROR;
    socket->ibmsg_private_error = result;
    return result;
  }
  socket->ibmsg_private = endpoint.get();
  SendEndpoint* key = endpoint.get();
  m_endpoints.emplace(key, std::move(endpoint));
  return IBMSG_OK;
}

int Loop::listen(ibmsg_socket* socket, const char* ip, std::uint16_t port) {
  reset_socket(socket, IBMSG_LISTEN_SOCKET);
  collect();
  std::unique_ptr<ListenEndpoint> endpoint;
  try {
    endpoint = std::make_unique<ListenEndpoint>(this, socket, EndPointAddress{ip, port});
  } catch (const InvalidEndpointAddress& error) {
    NETIO3_LOG_WARNING("ibmsg: cannot listen: {}", error.what());
    socket->status = IBMSG_ERROR;
    socket->ibmsg_private_error = IBMSG_GETADDRINFO_FAILED;
    return IBMSG_GETADDRINFO_FAILED;
  }
  (void)receive_pool(); // created now, so that the first message does not pay for it
  if (const int result = endpoint->open(); result != IBMSG_OK) {
    endpoint->detach_socket();
    socket->status = IBMSG_ERROR;
    socket->ibmsg_private_error = result;
    return result;
  }
  socket->status = IBMSG_CONNECTED; // listening
  socket->ibmsg_private = endpoint.get();
  ListenEndpoint* key = endpoint.get();
  m_endpoints.emplace(key, std::move(endpoint));
  return IBMSG_OK;
}

int Loop::dispatch(int timeout_ms) {
  if (m_dispatching) {
    NETIO3_LOG_WARNING("ibmsg: ibmsg_dispatch_event_loop called from inside a callback");
    return IBMSG_INVALID_ARGUMENT;
  }
  collect();
  if (m_endpoints.empty()) {
    return IBMSG_OK; // nothing could ever happen: do not block
  }
  m_dispatching = true;
  m_event_seen = false;
  m_send_failed = false;
  if (m_backpressure) {
    m_backpressure = false;
    timeout_ms = timeout_ms < 0 ? 1 : std::min(timeout_ms, 1);
  }
  int result{IBMSG_OK};
  try {
    if (timeout_ms < 0) {
      m_event_loop->run(); // until note_event stops it
    } else {
      m_event_loop->run_for(std::chrono::milliseconds{std::max(timeout_ms, 1)});
    }
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("ibmsg: the event loop failed: {}", error.what());
    result = IBMSG_EPOLL_WAIT_FAILED;
  }
  m_dispatching = false;
  collect();
  if (result == IBMSG_OK && m_send_failed) {
    result = IBMSG_SEND_FAILED;
  }
  return result;
}

int Loop::set_max_message_size(std::size_t size) {
  if (size < min_message_size_limit || size > max_message_size_limit) {
    return IBMSG_INVALID_ARGUMENT;
  }
  collect();
  const bool pool_in_use = m_receive_pool && m_receive_pool->slots_in_use() > 0;
  if (!m_endpoints.empty() || !m_retired.empty() || !m_orphan_slabs.empty() || pool_in_use) {
    return IBMSG_INVALID_ARGUMENT; // sockets or buffers exist that were sized with the old limit
  }
  m_receive_pool.reset();
  m_max_message_size = size;
  return IBMSG_OK;
}

void Loop::note_event() noexcept {
  m_event_seen = true;
  if (m_dispatching) {
    try {
      m_event_loop->stop(); // run() returns after the callback now running
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("ibmsg: stopping the event loop failed: {}", error.what());
    }
  }
}

void Loop::note_send_failure() noexcept {
  m_send_failed = true;
}

void Loop::retire(SocketState* endpoint) {
  auto node = m_endpoints.extract(endpoint);
  if (!node.empty()) {
    m_retired.push_back(std::move(node.mapped()));
  }
}

void Loop::collect() noexcept {
  if (!m_dispatching) {
    m_retired.clear(); // outside every callback: destroying a backend is allowed here
  }
}

void Loop::adopt_slab(std::unique_ptr<SendSlab> slab) {
  m_orphan_slabs.push_back(std::move(slab));
}

void Loop::slab_slot_released(SendSlab* slab) noexcept {
  if (slab->slots_in_use() > 0) {
    return;
  }
  const auto entry =
      std::find_if(m_orphan_slabs.begin(), m_orphan_slabs.end(),
                   [slab](const std::unique_ptr<SendSlab>& candidate) { return candidate.get() == slab; });
  if (entry != m_orphan_slabs.end()) {
    m_orphan_slabs.erase(entry);
  }
}

void Loop::track_heap_buffer(BufferRecord* record) {
  m_heap_buffers.insert(record);
}

void Loop::untrack_heap_buffer(BufferRecord* record) noexcept {
  m_heap_buffers.erase(record);
}

} // namespace netio3::ibmsg
