// Control path of the libfabric backend, send side and connection life: send endpoints
// (fi_connect, source ports, connect deadlines), an established connection's set-up, closing and
// tear-down. Domains and their event queues: Domain.cpp; listen endpoints and accepted
// connections: Listener.cpp.

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <netinet/in.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_errno.h>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

#include "core/Logging.hpp"
#include "core/Resolve.hpp"
#include "libfabric/BackendLibfabric.hpp"
#include "libfabric/ConnectionSetup.hpp"

namespace netio3::libfabric {

/// The queue depth to use for a provider attribute (0 means "provider default": assume 256).
std::size_t queue_depth(std::size_t provider_size) {
  const std::size_t size = provider_size == 0 ? 256 : provider_size;
  return std::clamp<std::size_t>(size, 1, max_queue_depth);
}

/// How many receives to keep posted on a receive queue of the provider's `provider_size`: half of
/// it. A receive reposted from a completion can find the provider's entry of that completion not
/// yet recycled; the sockets provider then allocates an entry outside its pool and never frees it.
std::size_t posted_receive_limit(std::size_t provider_size) {
  return std::max<std::size_t>(1, queue_depth(provider_size) / 2);
}

/// Sets up the send slots of a connection: `count` slots with registered room for the wire header
/// and inline header data.
void setup_send_slots(Connection& connection, DomainContext& domain, std::size_t count) {
  connection.send_header_memory = HostMemory{count * slot_header_room};
  connection.send_header_registration = Registration{domain.domain.get(), connection.send_header_memory.data(),
                                                     connection.send_header_memory.size(), FI_SEND, domain.take_key()};
  connection.send_slots.assign(count, SendSlot{});
  connection.send_contexts.assign(count, OperationContext{});
  for (std::size_t i = 0; i < count; ++i) {
    connection.send_contexts[i].connection = &connection;
    connection.send_contexts[i].kind = OperationContext::Kind::send;
    connection.send_contexts[i].index = static_cast<std::uint32_t>(i);
  }
  connection.free_send_slots = IndexStack{count};
}

/// Sets up `count` receive contexts (the buffers are set by the caller).
void setup_receive_contexts(Connection& connection, std::size_t count) {
  connection.receive_contexts.assign(count, OperationContext{});
  for (std::size_t i = 0; i < count; ++i) {
    connection.receive_contexts[i].connection = &connection;
    connection.receive_contexts[i].kind = OperationContext::Kind::receive;
    connection.receive_contexts[i].index = static_cast<std::uint32_t>(i);
  }
}

namespace {

/// A local TCP port that no other socket of this host is bound to, held by a socket of its own
/// (SO_REUSEADDR, bound to the wildcard address, never listening) until the provider's socket is
/// bound to it as well. Why: the `tcp` provider binds an active endpoint with a port-0 source
/// address with IP_BIND_ADDRESS_NO_PORT (libfabric 1.17, prov/tcp/src/tcpx_ep.c), so the port is
/// picked at connect time, where the kernel may give connections to different destinations (e.g.
/// 127.0.0.2 and 127.0.0.3 into one listener on 0.0.0.0) the same source port: the receiver would
/// see two peers with one address. bind() to port 0 picks a port no socket is bound to, and
/// connect() never picks a port that a socket was bound to explicitly.
class ReservedPort {
public:
  explicit ReservedPort(int family) {
    m_fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (m_fd < 0) {
      throw std::runtime_error(std::string{"cannot create a socket to reserve a source port: "} +
                               detail::errno_text(errno));
    }
    const int one = 1;
    sockaddr_storage local{};
    local.ss_family = static_cast<sa_family_t>(family);
    socklen_t length = family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (::setsockopt(m_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        ::bind(m_fd, reinterpret_cast<const sockaddr*>(&local), length) != 0 ||
        ::getsockname(m_fd, reinterpret_cast<sockaddr*>(&local), &length) != 0) {
      const int error = errno;
      ::close(m_fd);
      throw std::runtime_error(std::string{"cannot reserve a source port: "} + detail::errno_text(error));
    }
    m_port = family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(&local)->sin6_port
                                : reinterpret_cast<const sockaddr_in*>(&local)->sin_port;
  }
  ReservedPort(const ReservedPort&) = delete;
  ReservedPort& operator=(const ReservedPort&) = delete;
  ReservedPort(ReservedPort&&) = delete;
  ReservedPort& operator=(ReservedPort&&) = delete;
  ~ReservedPort() { ::close(m_fd); }

  /// The port in network byte order.
  [[nodiscard]] std::uint16_t network_port() const noexcept { return m_port; }

private:
  int m_fd{-1};
  std::uint16_t m_port{0};
};

/// Gives `info` (an active endpoint's) the source address its provider chose, or the wildcard
/// address of the destination's family, with `port` (network byte order): the provider binds the
/// endpoint's socket to it in fi_endpoint.
void set_source_port(fi_info& info, std::uint16_t port) {
  const auto* destination = static_cast<const sockaddr*>(info.dest_addr);
  if (destination == nullptr || (destination->sa_family != AF_INET && destination->sa_family != AF_INET6)) {
    throw std::runtime_error("the provider gave no IPv4/IPv6 destination address to choose a source port for");
  }
  const int family = destination->sa_family;
  const std::size_t length = family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  auto* source = static_cast<sockaddr_storage*>(std::calloc(1, sizeof(sockaddr_storage))); // freed by fi_freeinfo
  if (source == nullptr) {
    throw std::runtime_error("out of memory for the source address");
  }
  const auto* chosen = static_cast<const sockaddr*>(info.src_addr);
  if (chosen != nullptr && chosen->sa_family == family && info.src_addrlen >= length) {
    std::memcpy(source, chosen, length);
  } else {
    source->ss_family = static_cast<sa_family_t>(family);
  }
  if (family == AF_INET6) {
    reinterpret_cast<sockaddr_in6*>(source)->sin6_port = port;
  } else {
    reinterpret_cast<sockaddr_in*>(source)->sin_port = port;
  }
  std::free(info.src_addr); // NOLINT(cppcoreguidelines-no-malloc): libfabric's allocation
  info.src_addr = source;
  info.src_addrlen = length;
}

} // namespace

// --- send endpoints ---------------------------------------------------------------------------

void BackendLibfabric::open_send_endpoint(const EndPointAddress& address,
                                          const ConnectionParameters& connection_params) {
  const std::string where = "send endpoint to " + address.to_string();
  if (connection_params.num_buf > 0 && connection_params.buf_size == 0 && !connection_params.use_shared_send_buffers) {
    throw FailedOpenSendEndpoint("cannot open " + where + ": num_buf is " + std::to_string(connection_params.num_buf) +
                                 " but buf_size is 0");
  }
  if (connection_params.mr_size > 0 && connection_params.mr_start == nullptr) {
    throw FailedOpenSendEndpoint("cannot open " + where + ": mr_size is " + std::to_string(connection_params.mr_size) +
                                 " but mr_start is null");
  }
  std::vector<detail::ResolvedAddress> candidates = detail::resolve_all(address, false);
  {
    const Lock lock{m_mutex};
    if (m_senders.contains(address)) {
      throw SendEndpointAlreadyExists("a send endpoint to " + address.to_string() + " is already open");
    }
  }
  // Outside the lock: fi_getinfo can take long (the first call of a process reads the provider
  // list), and the loop needs the lock meanwhile.
  std::string failures;
  InfoPtr info = next_fabric_info(address, candidates, failures);

  const Lock lock{m_mutex};
  if (m_senders.contains(address)) {
    throw SendEndpointAlreadyExists("a send endpoint to " + address.to_string() + " is already open");
  }
  if (connection_params.use_shared_send_buffers && !m_shared_send_pool) {
    throw FailedOpenSendEndpoint("cannot open " + where +
                                 ": it asks for the shared send pool, but the backend has none "
                                 "(NetworkConfig::use_shared_send_buffers is false)");
  }
  std::shared_ptr<Connection> connection;
  bool refused_at_once = false;
  while (info) {
    const std::string trying = detail::numeric_host(candidates.front());
    candidates.erase(candidates.begin());
    try {
      connection = start_connection(address, connection_params, std::move(info), refused_at_once);
      connection->trying = trying;
      break;
    } catch (const std::exception& error) {
      failures += (failures.empty() ? "" : "; ") + trying + ": " + error.what();
    }
    info = next_fabric_info(address, candidates, failures);
  }
  if (!connection) {
    throw FailedOpenSendEndpoint("cannot open " + where + " with provider " + m_provider + ": " + failures);
  }
  connection->untried_addresses = std::move(candidates);
  connection->params = connection_params;
  connection->failed_attempts = std::move(failures);
  m_senders.emplace(address, connection);
  if (refused_at_once) {
    connect_attempt_failed(connection, "fi_connect: connection refused");
  }
  NETIO3_LOG_DEBUG("libfabric: connecting to {} at {} ({})", address.to_string(), connection->trying, m_provider);
}

InfoPtr BackendLibfabric::next_fabric_info(const EndPointAddress& address,
                                           std::vector<detail::ResolvedAddress>& candidates,
                                           std::string& failures) const {
  while (!candidates.empty()) {
    try {
      return get_fabric_info(m_provider, address, candidates.front(), InfoRole::active);
    } catch (const std::exception& error) {
      failures += (failures.empty() ? "" : "; ") + detail::numeric_host(candidates.front()) + ": " + error.what();
      candidates.erase(candidates.begin());
    }
  }
  return nullptr;
}

std::shared_ptr<Connection> BackendLibfabric::start_connection(const EndPointAddress& address,
                                                               const ConnectionParameters& params, InfoPtr info,
                                                               bool& refused_at_once) {
  auto connection = std::make_shared<Connection>(Connection::Role::sender, address);
  refused_at_once = false;
  try {
    connection->domain = acquire_domain(*info);
    DomainContext& domain = *connection->domain;
    connection->iov_limit = std::clamp<std::size_t>(info->tx_attr->iov_limit, 1, max_iov_entries);

    const std::size_t slots = queue_depth(info->tx_attr->size);
    setup_send_slots(*connection, domain, slots);

    // Control receives: one per credit the receiver may grant (it never grants more).
    const std::size_t controls = posted_receive_limit(info->rx_attr->size);
    connection->receive_buffer_size = control_buffer_size;
    connection->receive_memory = HostMemory{controls * control_buffer_size};
    connection->receive_registration = Registration{domain.domain.get(), connection->receive_memory.data(),
                                                    connection->receive_memory.size(), FI_RECV, domain.take_key()};
    connection->receive_desc = connection->receive_registration.desc();
    connection->receive_buffers.resize(controls);
    for (std::size_t i = 0; i < controls; ++i) {
      connection->receive_buffers[i] = connection->receive_memory.data() + i * control_buffer_size;
    }
    setup_receive_contexts(*connection, controls);

    if (params.use_shared_send_buffers) {
      connection->uses_shared_send_pool = true;
      if (!domain.shared_send.valid()) {
        domain.shared_send = Registration{domain.domain.get(), m_shared_send_pool->memory().data(),
                                          m_shared_send_pool->memory().size(), FI_SEND, domain.take_key()};
      }
    } else if (params.num_buf > 0) {
      connection->own_pool = std::make_unique<SendBufferPool>(params.num_buf, params.buf_size, wire_header_size);
      connection->own_pool_registration =
          Registration{domain.domain.get(), connection->own_pool->memory().data(),
                       connection->own_pool->memory().size(), FI_SEND, domain.take_key()};
    }
    if (params.mr_start != nullptr && params.mr_size > 0) {
      connection->zero_copy_start = params.mr_start;
      connection->zero_copy_size = params.mr_size;
      connection->zero_copy_registration =
          Registration{domain.domain.get(), params.mr_start, params.mr_size, FI_SEND, domain.take_key()};
    }

    if (m_provider == "tcp") {
      // A source port of its own, reserved until the provider's socket is bound to it (in
      // fi_endpoint): see ReservedPort.
      const auto* destination = static_cast<const sockaddr*>(info->dest_addr);
      const ReservedPort reserved{destination != nullptr ? destination->sa_family : AF_INET};
      set_source_port(*info, reserved.network_port());
      check(fi_endpoint(domain.domain.get(), info.get(), connection->ep.out(), nullptr), "fi_endpoint");
    } else {
      check(fi_endpoint(domain.domain.get(), info.get(), connection->ep.out(), nullptr), "fi_endpoint");
    }
    check(fi_ep_bind(connection->ep.get(), domain.eq.fid_ptr(), 0), "fi_ep_bind (event queue)");
    join_completion_queue(*connection, slots + controls);
    check(fi_enable(connection->ep.get()), "fi_enable");
    for (std::size_t i = 0; i < controls; ++i) {
      check(fi_recv(connection->ep.get(), connection->receive_buffers[i], control_buffer_size, connection->receive_desc,
                    0, &connection->receive_contexts[i]),
            "fi_recv (credit buffers)");
    }
    std::array<std::uint8_t, connect_request_size> request{};
    encode(ConnectRequest{static_cast<std::uint32_t>(controls), advertised_peer_timeout_ms()}, request);
    const int rc = fi_connect(connection->ep.get(), info->dest_addr, request.data(), request.size());
    if (rc == -FI_ECONNREFUSED) {
      refused_at_once = true;
    } else {
      check(rc, "fi_connect");
    }
  } catch (...) {
    teardown_connection(*connection, nullptr);
    wake_loop(); // an unused domain is closed by the loop
    throw;
  }
  connection->info = std::move(info);
  connection->connect_deadline = std::chrono::steady_clock::now() + m_config.connect_timeout;
  m_fid_owners[connection->ep.fid_ptr()] = FidOwner{nullptr, connection};
  m_connections.emplace(connection.get(), connection);
  m_setup_in_progress = true;
  ensure_progress_timer();
  return connection;
}

void BackendLibfabric::connect_attempt_failed(const std::shared_ptr<Connection>& connection, const std::string& why) {
  std::string failures = connection->failed_attempts;
  failures += (failures.empty() ? "" : "; ") + connection->trying + ": " + why;
  const auto current = m_senders.find(connection->address);
  if (connection->role != Connection::Role::sender || connection->established_reported ||
      connection->state == Connection::State::closing || current == m_senders.end() || current->second != connection ||
      connection->untried_addresses.empty()) {
    begin_close(connection, CloseNotice::refused, "connect failed: " + failures);
    return;
  }
  // The next addresses, each in a new Connection (a libfabric endpoint connects once). fi_getinfo
  // runs under the lock here: only when an address failed, which is rare and slow anyway.
  std::vector<detail::ResolvedAddress> candidates = std::move(connection->untried_addresses);
  InfoPtr info = next_fabric_info(connection->address, candidates, failures);
  while (info) {
    const std::string trying = detail::numeric_host(candidates.front());
    candidates.erase(candidates.begin());
    try {
      bool refused_at_once = false;
      std::shared_ptr<Connection> next =
          start_connection(connection->address, connection->params, std::move(info), refused_at_once);
      next->trying = trying;
      next->params = connection->params;
      next->untried_addresses = std::move(candidates);
      next->failed_attempts = failures;
      std::string reason = why;
      reason += "; trying ";
      reason += trying;
      begin_close(connection, CloseNotice::none, reason);
      current->second = next;
      NETIO3_LOG_DEBUG("libfabric: connecting to {} at {} (after {})", connection->address.to_string(), trying,
                       failures);
      if (refused_at_once) {
        connect_attempt_failed(next, "fi_connect: connection refused"); // at most once per address
      }
      return;
    } catch (const std::exception& error) {
      failures += "; " + trying + ": " + error.what();
    }
    info = next_fabric_info(connection->address, candidates, failures);
  }
  begin_close(connection, CloseNotice::refused, "connect failed: " + failures);
}

void BackendLibfabric::close_send_endpoint(const EndPointAddress& address) {
  const Lock lock{m_mutex};
  const auto found = m_senders.find(address);
  if (found == m_senders.end()) {
    throw UnknownSendEndpoint("no send endpoint to " + address.to_string());
  }
  std::shared_ptr<Connection> connection = found->second;
  m_senders.erase(found);
  // A connection that failed already keeps the notice it was given (closed or refused, once).
  begin_close(connection, CloseNotice::closed, "closed by the application");
}

// --- closing ----------------------------------------------------------------------------------

CloseNotice BackendLibfabric::loss_notice(const Connection& connection) noexcept {
  if (connection.established_reported) {
    return CloseNotice::closed;
  }
  // Never announced: a send endpoint reports a failed connect, an accepted connection nothing.
  return connection.role == Connection::Role::sender ? CloseNotice::refused : CloseNotice::none;
}

void BackendLibfabric::begin_close(const std::shared_ptr<Connection>& connection, CloseNotice notice,
                                   std::string_view reason) {
  if (connection->state == Connection::State::closing) {
    return; // the first reason wins
  }
  NETIO3_LOG_DEBUG("libfabric: connection {} ends: {}", connection->address.to_string(), reason);
  connection->state = Connection::State::closing;
  connection->close_notice = notice;
  m_send_wait.notify(); // waiting senders return CLOSED at once (the lock is held)
  if (!connection->teardown_queued) {
    connection->teardown_queued = true;
    m_teardown_queue.push_back(connection);
  }
  wake_loop();
}

void BackendLibfabric::teardown_connection(Connection& connection, std::vector<std::uint64_t>* pending_keys) {
  if (connection.ep) {
    if (connection.domain && connection.domain->eq) {
      // Entries still queued for this endpoint are dropped before it closes: read later, they
      // could be taken for those of a new endpoint that the provider allocates at the same address.
      DomainContext& domain = *connection.domain;
      stash_events(domain);
      const fid* closing = connection.ep.fid_ptr();
      std::erase_if(domain.stashed_events, [closing](const DomainContext::StashedEvent& stashed) {
        return stashed.error ? stashed.source == closing
                             : reinterpret_cast<const fi_eq_cm_entry*>(stashed.bytes.data())->fid == closing;
      });
      if (!domain.stashed_events.empty()) {
        wake_loop(); // the loop handles the others
      }
    }
    m_fid_owners.erase(connection.ep.fid_ptr());
    // No fi_shutdown: closing a connected endpoint disconnects it (tcp: the socket closes; verbs:
    // destroying the connected rdma_cm id sends a disconnect request), and with the sockets
    // provider an fi_shutdown makes the next connection from this domain to the same listener fail
    // with "Connection refused" (seen in 20 of 20 runs of the reopen conformance test).
    connection.ep.reset();
  }
  leave_completion_queue(connection);
  connection.info.reset();
  if (pending_keys != nullptr) {
    for (std::size_t i = 0; i < connection.unacked_count; ++i) {
      const UnackedMessage& message = connection.unacked[(connection.unacked_first + i) % connection.unacked.size()];
      if (message.has_key) {
        pending_keys->push_back(message.key);
      }
    }
  }
  connection.unacked_count = 0;
  if (connection.uses_shared_send_pool && m_shared_send_pool) {
    m_shared_send_pool->reclaim(&connection);
    m_send_wait.notify(); // the reclaimed buffers may end other endpoints' wait_for_buffer
  }
  if (m_shared_receive_pool) {
    for (const std::uint32_t index : connection.shared_receive_indices) {
      m_shared_receive_pool->give_back(index);
    }
  }
  connection.shared_receive_indices.clear();
  // Registrations before the memory they cover.
  connection.send_header_registration.reset();
  connection.receive_registration.reset();
  connection.own_pool_registration.reset();
  connection.zero_copy_registration.reset();
  connection.ring_registration.reset();
  connection.own_pool.reset();
  connection.ring.reset();
  connection.ring_memory = HostMemory{};
  connection.send_header_memory = HostMemory{};
  connection.receive_memory = HostMemory{};
  connection.receive_buffers.clear();
  if (connection.domain) {
    release_domain(connection.domain);
    connection.domain.reset();
  }
}

void BackendLibfabric::check_connect_deadlines() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::shared_ptr<Connection>> expired; // a retry adds connections: not while iterating
  for (auto& [pointer, connection] : m_connections) {
    if (connection->role == Connection::Role::sender && connection->state == Connection::State::connecting &&
        now > connection->connect_deadline) {
      expired.push_back(connection);
    }
  }
  for (const auto& connection : expired) {
    connect_attempt_failed(connection, "the connection was not established within " +
                                           std::to_string(m_config.connect_timeout.count()) + " ms");
  }
}

void BackendLibfabric::mark_established(Connection& connection) {
  connection.state = Connection::State::established;
  if (!connection.established_reported && connection.role == Connection::Role::receiver) {
    close_stale_connections_from(connection);
  }
  if (!connection.established_reported) {
    // A connection closed earlier (maybe to the same address, which was opened again at once) is
    // torn down and its notice queued first: the closed callback of the old one must come before
    // the established callback of the new one.
    process_teardowns();
    connection.established_reported = true;
    m_notices.push_back(Notice{Notice::Kind::established, connection.address, {}});
    m_send_wait.notify(); // senders waiting for the connection
  }
  if (connection.silence_limit_ticks != 0) {
    ensure_keepalive_timer(); // peer_timeout is watched while a watched connection is established
  }
}

void BackendLibfabric::handle_connected(Connection& connection, std::span<const std::uint8_t> data, Lock& lock) {
  (void)lock;
  connection.provider_connected = true;
  if (connection.state == Connection::State::closing) {
    return;
  }
  const auto shared = m_connections.find(&connection);
  if (shared == m_connections.end()) {
    return;
  }
  if (connection.role == Connection::Role::sender) {
    const std::optional<AcceptResponse> response = decode_accept_response(data);
    if (!response) {
      begin_close(shared->second, CloseNotice::refused,
                  "the peer is not a netio3 libfabric listen endpoint of protocol version " +
                      std::to_string(protocol_version) + " (" + std::to_string(data.size()) + " bytes of accept data)");
      return;
    }
    if (response->initial_credits > connection.receive_buffers.size()) {
      begin_close(shared->second, CloseNotice::refused,
                  "the peer granted " + std::to_string(response->initial_credits) + " credits, more than the " +
                      std::to_string(connection.receive_buffers.size()) + " this side can take back");
      return;
    }
    connection.peer_max_message = response->max_message_size;
    connection.window = response->initial_credits;
    connection.credits_granted_total = connection.window;
    connection.messages_sent_total = 0;
    connection.unacked.assign(connection.window, UnackedMessage{});
    connection.unacked_first = 0;
    connection.unacked_count = 0;
    connection.silence_limit_ticks = silence_limit_for(m_config.peer_timeout);
    connection.silent_ticks = 0;
    connection.sent_since_tick = false;
    mark_established(connection);
    NETIO3_LOG_DEBUG("libfabric: connected to {} (window {}, messages up to {} bytes)", connection.address.to_string(),
                     connection.window, connection.peer_max_message);
  } else {
    if (connection.state == Connection::State::accepting) {
      mark_established(connection);
    }
    return_credits(connection); // credits that waited for the connection to be complete here
  }
}

} // namespace netio3::libfabric
