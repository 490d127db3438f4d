// Control path of the libfabric backend: domains and their event queues, listen endpoints
// (passive endpoints), send endpoints (fi_connect), accepting and rejecting connection requests,
// connection events, closing and tear-down.

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

namespace netio3::libfabric {
namespace {

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
    connection.send_contexts[i].kind = OperationContext::Kind::send;
    connection.send_contexts[i].index = static_cast<std::uint32_t>(i);
  }
  connection.free_send_slots = IndexStack{count};
}

/// Sets up `count` receive contexts (the buffers are set by the caller).
void setup_receive_contexts(Connection& connection, std::size_t count) {
  connection.receive_contexts.assign(count, OperationContext{});
  for (std::size_t i = 0; i < count; ++i) {
    connection.receive_contexts[i].kind = OperationContext::Kind::receive;
    connection.receive_contexts[i].index = static_cast<std::uint32_t>(i);
  }
}

bool is_tcp_provider(const fi_info& info) {
  return info.fabric_attr->prov_name != nullptr && std::string_view{info.fabric_attr->prov_name} == "tcp";
}

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
      throw std::runtime_error(std::string{"cannot create a socket to reserve a source port: "} + std::strerror(errno));
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
      throw std::runtime_error(std::string{"cannot reserve a source port: "} + std::strerror(error));
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

// --- domains ----------------------------------------------------------------------------------

std::shared_ptr<DomainContext> BackendLibfabric::acquire_domain(const fi_info& info) {
  const std::string key = domain_key(info);
  if (const auto found = m_domains.find(key); found != m_domains.end()) {
    ++found->second->users;
    return found->second;
  }
  auto domain = std::make_shared<DomainContext>();
  domain->key = key;
  domain->info.reset(fi_dupinfo(&info));
  if (!domain->info) {
    throw std::runtime_error("fi_dupinfo failed: out of memory");
  }
  check(fi_fabric(domain->info->fabric_attr, domain->fabric.out(), nullptr), "fi_fabric");
  check(fi_domain(domain->fabric.get(), domain->info.get(), domain->domain.out(), nullptr), "fi_domain");

  fi_eq_attr attributes{};
  attributes.size = 1024;
  attributes.wait_obj = FI_WAIT_FD;
  if (fi_eq_open(domain->fabric.get(), &attributes, domain->eq.out(), nullptr) != 0) {
    // No fd to wait on: the progress timer polls this event queue.
    attributes.wait_obj = FI_WAIT_NONE;
    check(fi_eq_open(domain->fabric.get(), &attributes, domain->eq.out(), nullptr), "fi_eq_open");
  } else if (fi_control(domain->eq.fid_ptr(), FI_GETWAIT, &domain->eq_fd) != 0) {
    domain->eq_fd = -1;
  }
  // The tcp provider says FI_PROGRESS_AUTO but progresses only inside its queue reads (fi_tcp(7)).
  domain->manual_progress = info.domain_attr->data_progress == FI_PROGRESS_MANUAL ||
                            info.domain_attr->control_progress == FI_PROGRESS_MANUAL || is_tcp_provider(info);
  domain->users = 1;
  watch_domain_fd(domain);
  m_domains.emplace(key, domain);
  NETIO3_LOG_DEBUG("libfabric: opened domain {} (event queue fd {}, {} progress)", key, domain->eq_fd,
                   domain->manual_progress ? "manual" : "automatic");
  return domain;
}

void BackendLibfabric::release_domain(const std::shared_ptr<DomainContext>& domain) {
  if (domain && domain->users > 0) {
    --domain->users;
  }
}

void BackendLibfabric::discard_pending_events(DomainContext& domain) {
  if (!domain.eq) {
    return;
  }
  stash_events(domain);
  for (const DomainContext::StashedEvent& stashed : domain.stashed_events) {
    if (stashed.error || stashed.event != FI_CONNREQ) {
      continue;
    }
    // A request nobody will answer: reject it while its listener exists, and free its fi_info (the
    // provider frees neither when the queue closes).
    const auto* entry = reinterpret_cast<const fi_eq_cm_entry*>(stashed.bytes.data());
    const InfoPtr info{entry->info};
    const auto owner = m_fid_owners.find(entry->fid);
    if (info && owner != m_fid_owners.end() && owner->second.listener && owner->second.listener->pep) {
      fi_reject(owner->second.listener->pep.get(), info->handle, nullptr, 0);
    }
  }
  domain.stashed_events.clear();
}

void BackendLibfabric::stash_events(DomainContext& domain) {
  alignas(fi_eq_cm_entry) std::array<std::uint8_t, sizeof(fi_eq_cm_entry) + 256> buffer{};
  for (;;) {
    std::uint32_t event = 0;
    const ssize_t rc = fi_eq_read(domain.eq.get(), &event, buffer.data(), buffer.size(), 0);
    if (rc == -FI_EAVAIL) {
      fi_eq_err_entry error{};
      if (fi_eq_readerr(domain.eq.get(), &error, 0) < 0) {
        return;
      }
      domain.stashed_events.push_back(
          DomainContext::StashedEvent{true, 0, error.fid, eq_error_text(domain, error), {}});
      continue;
    }
    if (rc < 0) {
      return;
    }
    if (static_cast<std::size_t>(rc) >= sizeof(fi_eq_cm_entry)) {
      domain.stashed_events.push_back(DomainContext::StashedEvent{
          false, event, nullptr, {}, std::vector<std::uint8_t>(buffer.begin(), buffer.begin() + rc)});
    }
  }
}

void BackendLibfabric::destroy_domain(DomainContext& domain, bool on_loop) {
  if (domain.eq_fd_registered && on_loop) {
    m_evloop->remove_fd(domain.eq_fd);
  }
  domain.eq_fd_registered = false;
  discard_pending_events(domain);
  domain.shared_send.reset();
  domain.shared_receive.reset();
  domain.eq.reset();
  domain.domain.reset();
  domain.fabric.reset();
  domain.retired_infos.clear();
  NETIO3_LOG_DEBUG("libfabric: closed domain {}", domain.key);
}

void BackendLibfabric::open_completion_queue(Connection& connection, std::size_t size) {
  fi_cq_attr attributes{};
  attributes.size = size;
  attributes.format = FI_CQ_FORMAT_MSG;
  attributes.wait_obj = FI_WAIT_FD;
  attributes.wait_cond = FI_CQ_COND_NONE;
  fid_domain* domain = connection.domain->domain.get();
  if (fi_cq_open(domain, &attributes, connection.cq.out(), nullptr) != 0) {
    // No fd to wait on: the progress timer polls this completion queue.
    attributes.wait_obj = FI_WAIT_NONE;
    check(fi_cq_open(domain, &attributes, connection.cq.out(), nullptr), "fi_cq_open");
    connection.cq_fd = -1;
  } else if (fi_control(connection.cq.fid_ptr(), FI_GETWAIT, &connection.cq_fd) != 0) {
    connection.cq_fd = -1;
  }
}

void BackendLibfabric::watch_domain_fd(const std::shared_ptr<DomainContext>& domain) {
  if (domain->eq_fd < 0 || domain->eq_fd_registered || !domain->eq) {
    return;
  }
  if (!m_evloop->in_loop_thread()) {
    // Registered by the loop thread itself, so that a tear-down on the loop can never overtake a
    // registration still queued in the loop (and find the fd closed when it is applied).
    m_pending_domain_fds.push_back(domain);
    wake_loop();
    return;
  }
  std::weak_ptr<DomainContext> weak = domain;
  m_evloop->register_fd(EventContext{domain->eq_fd, [this, weak](int) { on_eq_ready(weak); }, {}});
  domain->eq_fd_registered = true;
}

void BackendLibfabric::register_connection_fd(const std::shared_ptr<Connection>& connection) {
  if (connection->cq_fd < 0 || connection->cq_fd_registered || !connection->cq ||
      connection->state == Connection::State::closing) {
    return;
  }
  if (!m_evloop->in_loop_thread()) {
    m_pending_connection_fds.push_back(connection); // see watch_domain_fd
    wake_loop();
    return;
  }
  std::weak_ptr<Connection> weak = connection;
  m_evloop->register_fd(EventContext{connection->cq_fd, [this, weak](int) { on_cq_ready(weak); }, {}});
  connection->cq_fd_registered = true;
  // Completions may have arrived before the fd was watched, and some providers signal only new ones.
  progress_connection_later(connection);
}

void BackendLibfabric::apply_pending_registrations() {
  std::vector<std::weak_ptr<DomainContext>> domains;
  domains.swap(m_pending_domain_fds);
  for (const auto& weak : domains) {
    if (const auto domain = weak.lock()) {
      watch_domain_fd(domain);
    }
  }
  std::vector<std::weak_ptr<Connection>> connections;
  connections.swap(m_pending_connection_fds);
  for (const auto& weak : connections) {
    if (const auto connection = weak.lock()) {
      register_connection_fd(connection);
    }
  }
}

// --- listen endpoints -------------------------------------------------------------------------

EndPointAddress BackendLibfabric::open_listen_endpoint(const EndPointAddress& address,
                                                       const ConnectionParametersRecv& connection_params) {
  const std::string where = "listen endpoint " + address.to_string();
  if (connection_params.use_shared_receive_buffers) {
    if (!m_shared_receive_pool) {
      throw FailedOpenListenEndpoint("cannot open " + where +
                                     ": it asks for the shared receive pool, but the backend has none "
                                     "(NetworkConfig::use_shared_receive_buffers is false)");
    }
  } else if (connection_params.buf_size == 0 || connection_params.num_buf == 0) {
    throw FailedOpenListenEndpoint("cannot open " + where + ": buf_size (" +
                                   std::to_string(connection_params.buf_size) + ") and num_buf (" +
                                   std::to_string(connection_params.num_buf) + ") must both be positive");
  }
  const detail::ResolvedAddress resolved = detail::resolve(address, true);
  {
    const Lock lock{m_mutex};
    if (address.port() != 0 && m_listeners.contains(address)) {
      throw ListenEndpointAlreadyExists("already listening on " + address.to_string());
    }
  }
  InfoPtr info;
  try {
    info = get_fabric_info(m_provider, address, resolved, InfoRole::passive);
  } catch (const std::exception& error) {
    throw FailedOpenListenEndpoint("cannot open " + where + ": " + error.what());
  }
  const std::size_t max_message =
      connection_params.use_shared_receive_buffers ? m_config.shared_receive_buf_size : connection_params.buf_size;
  if (info->ep_attr->max_msg_size != 0 && info->ep_attr->max_msg_size < max_message + wire_header_size) {
    throw FailedOpenListenEndpoint("cannot open " + where + ": messages of " + std::to_string(max_message) +
                                   " bytes exceed the provider's limit of " +
                                   std::to_string(info->ep_attr->max_msg_size));
  }

  const Lock lock{m_mutex};
  if (address.port() != 0 && m_listeners.contains(address)) {
    throw ListenEndpointAlreadyExists("already listening on " + address.to_string());
  }
  auto listener = std::make_shared<Listener>();
  listener->params = connection_params;
  EndPointAddress actual;
  try {
    listener->domain = acquire_domain(*info);
    check(fi_passive_ep(listener->domain->fabric.get(), info.get(), listener->pep.out(), nullptr), "fi_passive_ep");
    check(fi_pep_bind(listener->pep.get(), listener->domain->eq.fid_ptr(), 0), "fi_pep_bind");
    check(fi_listen(listener->pep.get()), "fi_listen");
    sockaddr_storage name{};
    std::size_t name_size = sizeof(name);
    check(fi_getname(listener->pep.fid_ptr(), &name, &name_size), "fi_getname");
    actual = EndPointAddress{address.address(), detail::to_endpoint_address(reinterpret_cast<sockaddr*>(&name)).port()};
    listener->bound_name = name;
  } catch (const std::exception& error) {
    listener->pep.reset();
    release_domain(listener->domain);
    wake_loop(); // an unused domain is closed by the loop
    throw FailedOpenListenEndpoint("cannot open " + where + " with provider " + m_provider + ": " + error.what());
  }
  if (m_listeners.contains(actual)) {
    listener->pep.reset();
    release_domain(listener->domain);
    throw ListenEndpointAlreadyExists("already listening on " + actual.to_string());
  }
  listener->address = actual;
  listener->info = std::move(info);
  m_fid_owners[listener->pep.fid_ptr()] = FidOwner{listener, nullptr};
  m_listeners.emplace(actual, listener);
  ensure_unclaimed_socket_timer();
  NETIO3_LOG_DEBUG("libfabric: listening on {} ({})", actual.to_string(), m_provider);
  return actual;
}

void BackendLibfabric::close_listen_endpoint(const EndPointAddress& address) {
  const Lock lock{m_mutex};
  const auto found = m_listeners.find(address);
  if (found == m_listeners.end()) {
    throw UnknownListenEndpoint("no listen endpoint on " + address.to_string());
  }
  std::shared_ptr<Listener> listener = found->second;
  m_listeners.erase(found);
  listener->closing = true;
  for (Connection* accepted : listener->accepted) {
    accepted->listener = nullptr; // the listener may be gone before the connection's tear-down
    if (const auto owner = m_connections.find(accepted); owner != m_connections.end()) {
      begin_close(owner->second, accepted->established_reported ? CloseNotice::closed : CloseNotice::none,
                  "its listen endpoint was closed");
    }
  }
  listener->accepted.clear();
  if (listener->in_request_callback) {
    // The loop is asking on_connection_request_cb about a request to this listener and will use the
    // passive endpoint afterwards; it closes it then.
    m_listener_teardown_queue.push_back(std::move(listener));
  } else {
    close_listener_now(*listener); // the port is free again when this call returns
  }
  wake_loop();
}

void BackendLibfabric::close_accepted_connection(const EndPointAddress& remote) {
  const Lock lock{m_mutex};
  for (const auto& [listen_address, listener] : m_listeners) {
    for (Connection* accepted : listener->accepted) {
      if (accepted->address != remote) {
        continue;
      }
      const auto owner = m_connections.find(accepted);
      if (owner == m_connections.end()) {
        continue;
      }
      // Closing the endpoint disconnects it: the sender sees FI_SHUTDOWN and reports its closed
      // callback with its pending keys. A connection already ending keeps its first notice (once).
      // The connection stays in `accepted` until its tear-down on the loop (it still counts
      // against max_connections_per_listener until then, as after a peer's close).
      begin_close(owner->second, accepted->established_reported ? CloseNotice::closed : CloseNotice::none,
                  "closed by the application (close_accepted_connection)");
      return;
    }
  }
  throw UnknownListenEndpoint("close_accepted_connection: no listen endpoint has an accepted connection from " +
                              remote.to_string());
}

void BackendLibfabric::close_listener_now(Listener& listener) {
  if (listener.pep) {
    if (listener.domain && listener.domain->eq) {
      // Requests queued for this passive endpoint are rejected while it exists (reading them later
      // would touch a closed endpoint); other entries wait in the stash for the loop.
      DomainContext& domain = *listener.domain;
      stash_events(domain);
      for (auto it = domain.stashed_events.begin(); it != domain.stashed_events.end();) {
        const auto* entry = reinterpret_cast<const fi_eq_cm_entry*>(it->bytes.data());
        if (!it->error && it->event == FI_CONNREQ && entry->fid == listener.pep.fid_ptr()) {
          const InfoPtr info{entry->info};
          if (info) {
            fi_reject(listener.pep.get(), info->handle, nullptr, 0);
          }
          it = domain.stashed_events.erase(it);
        } else {
          ++it;
        }
      }
    }
    m_fid_owners.erase(listener.pep.fid_ptr());
    listener.pep.reset();
  }
  if (listener.domain) {
    listener.domain->retired_infos.push_back(std::move(listener.info));
  }
  listener.info.reset();
  if (listener.domain) {
    release_domain(listener.domain);
    listener.domain.reset();
  }
}

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
    open_completion_queue(*connection, slots + controls);
    check(fi_ep_bind(connection->ep.get(), domain.eq.fid_ptr(), 0), "fi_ep_bind (event queue)");
    check(fi_ep_bind(connection->ep.get(), connection->cq.fid_ptr(), FI_TRANSMIT | FI_RECV),
          "fi_ep_bind (completion queue)");
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
    teardown_connection(*connection, false, nullptr);
    wake_loop(); // an unused domain is closed by the loop
    throw;
  }
  connection->info = std::move(info);
  connection->connect_deadline = std::chrono::steady_clock::now() + m_config.connect_timeout;
  m_fid_owners[connection->ep.fid_ptr()] = FidOwner{nullptr, connection};
  m_connections.emplace(connection.get(), connection);
  register_connection_fd(connection);
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
  if (!connection->teardown_queued) {
    connection->teardown_queued = true;
    m_teardown_queue.push_back(connection);
  }
  wake_loop();
}

void BackendLibfabric::teardown_connection(Connection& connection, bool on_loop,
                                           std::vector<std::uint64_t>* pending_keys) {
  if (connection.cq_fd_registered && on_loop) {
    m_evloop->remove_fd(connection.cq_fd);
  }
  connection.cq_fd_registered = false;
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
  connection.cq.reset();
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
  }
  if (connection.silence_limit_ticks != 0) {
    ensure_keepalive_timer(); // peer_timeout is watched while a watched connection is established
  }
}

void BackendLibfabric::close_stale_connections_from(const Connection& fresh) {
  // Callbacks name an accepted connection by its remote address, so two live ones with one address
  // cannot be told apart. A new connection from an address means the old one from it is gone: a
  // TCP source port is not given to a second connection to the same listener while the first
  // lives (and send endpoints of this backend bind a port of their own: ReservedPort). The old
  // one's shutdown can still be on its way: the sockets provider names a connection by the port
  // of the sender's own endpoint, which the sender reuses as soon as the old endpoint is closed,
  // and its close can reach this side after the new request. Closing the old one here reports its
  // close before the new one's establishment, as the peer's order was.
  if (fresh.address.address().empty()) {
    return; // the provider named no peer: nothing to compare
  }
  for (auto& [pointer, other] : m_connections) {
    if (pointer != &fresh && other->role == Connection::Role::receiver && other->address == fresh.address &&
        other->state != Connection::State::closing && other->established_reported) {
      NETIO3_LOG_INFO("libfabric: a new connection from {} replaces the old one from that address, which is "
                      "closed (its peer's close had not arrived yet)",
                      fresh.address.to_string());
      begin_close(other, CloseNotice::closed, "a new connection from the same remote address replaces it");
    }
  }
}

// --- the event queue --------------------------------------------------------------------------

void BackendLibfabric::on_eq_ready(const std::weak_ptr<DomainContext>& weak_domain) {
  Lock lock{m_mutex};
  if (m_shutting_down) {
    return;
  }
  const std::shared_ptr<DomainContext> domain = weak_domain.lock();
  if (domain && domain->eq) {
    progress_event_queue(*domain, lock);
  }
  run_deferred(lock);
}

void BackendLibfabric::progress_event_queue(DomainContext& domain, Lock& lock) {
  // Entries read early come first, in their order.
  while (!domain.stashed_events.empty() && !m_shutting_down) {
    const DomainContext::StashedEvent stashed = std::move(domain.stashed_events.front());
    domain.stashed_events.pop_front();
    if (stashed.error) {
      handle_eq_failure(stashed.source, stashed.error_text);
    } else {
      const auto* entry = reinterpret_cast<const fi_eq_cm_entry*>(stashed.bytes.data());
      handle_eq_event(domain, stashed.event, *entry, stashed.bytes.size() - sizeof(fi_eq_cm_entry), lock);
    }
  }
  // Room for a connection-management entry and its parameter data.
  alignas(fi_eq_cm_entry) std::array<std::uint8_t, sizeof(fi_eq_cm_entry) + 256> buffer{};
  for (int round = 0; round < 4; ++round) {
    while (!m_shutting_down && domain.eq) {
      std::uint32_t event = 0;
      const ssize_t rc = fi_eq_read(domain.eq.get(), &event, buffer.data(), buffer.size(), 0);
      if (rc == -FI_EAGAIN) {
        break;
      }
      if (rc == -FI_EAVAIL) {
        handle_eq_error(domain);
        continue;
      }
      if (rc < 0) {
        NETIO3_LOG_ERROR("libfabric: fi_eq_read on domain {} failed: {}", domain.key, fabric_error_text(rc));
        break;
      }
      if (static_cast<std::size_t>(rc) < sizeof(fi_eq_cm_entry)) {
        NETIO3_LOG_WARNING("libfabric: ignoring event {} of {} bytes on domain {}", event, rc, domain.key);
        continue;
      }
      // The entry's parameter data follow it in the buffer (a flexible array member).
      const auto* entry = reinterpret_cast<const fi_eq_cm_entry*>(buffer.data());
      handle_eq_event(domain, event, *entry, static_cast<std::size_t>(rc) - sizeof(fi_eq_cm_entry), lock);
    }
    if (m_shutting_down || !domain.eq || domain.eq_fd < 0) {
      return;
    }
    fid* queue = domain.eq.fid_ptr();
    const int rc = fi_trywait(domain.fabric.get(), &queue, 1);
    if (rc == 0) {
      return; // the fd will signal the next event
    }
    if (rc != -FI_EAGAIN) {
      NETIO3_LOG_WARNING("libfabric: fi_trywait on the event queue of {} failed: {}", domain.key,
                         fabric_error_text(rc));
      break;
    }
  }
  ensure_progress_timer(); // could not put the queue to sleep: poll it
}

void BackendLibfabric::handle_eq_event(DomainContext& domain, std::uint32_t event, const fi_eq_cm_entry& entry,
                                       std::size_t data_size, Lock& lock) {
  // Connection requests carry an fi_info that is ours to free, whatever happens.
  InfoPtr info{event == FI_CONNREQ ? entry.info : nullptr};
  const std::span<const std::uint8_t> data{entry.data, data_size};
  const auto owner = m_fid_owners.find(entry.fid);
  if (owner == m_fid_owners.end()) {
    NETIO3_LOG_DEBUG("libfabric: event {} for an endpoint that is gone (domain {})", event, domain.key);
    return;
  }
  const FidOwner target = owner->second; // a copy: keeps the object alive across callbacks
  switch (event) {
  case FI_CONNREQ:
    if (target.listener) {
      handle_connection_request(target.listener, std::move(info), data, lock);
    }
    break;
  case FI_CONNECTED:
    if (target.connection) {
      handle_connected(*target.connection, data, lock);
    }
    break;
  case FI_SHUTDOWN:
    if (target.connection) {
      const std::shared_ptr<Connection>& connection = target.connection;
      if (connection->state != Connection::State::closing && connection->cq) {
        // Messages that arrived before the shutdown are delivered first.
        std::size_t handled = 0;
        drain_completions(connection, lock, handled);
      }
      if (loss_notice(*connection) == CloseNotice::refused) {
        connect_attempt_failed(connection, "the peer closed the connection before it was established");
      } else {
        begin_close(connection, loss_notice(*connection), "the peer closed the connection");
      }
    }
    break;
  default: NETIO3_LOG_DEBUG("libfabric: ignoring event {} on domain {}", event, domain.key); break;
  }
}

std::string BackendLibfabric::eq_error_text(DomainContext& domain, const fi_eq_err_entry& error) {
  const char* provider_text = fi_eq_strerror(domain.eq.get(), error.prov_errno, error.err_data, nullptr, 0);
  return std::string{fi_strerror(error.err)} + " (provider: " + (provider_text != nullptr ? provider_text : "no text") +
         ")";
}

void BackendLibfabric::handle_eq_error(DomainContext& domain) {
  fi_eq_err_entry error{};
  const ssize_t rc = fi_eq_readerr(domain.eq.get(), &error, 0);
  if (rc < 0) {
    NETIO3_LOG_ERROR("libfabric: fi_eq_readerr on domain {} failed: {}", domain.key, fabric_error_text(rc));
    return;
  }
  handle_eq_failure(error.fid, eq_error_text(domain, error));
}

void BackendLibfabric::handle_eq_failure(const fid* source, const std::string& reason) {
  const auto owner = m_fid_owners.find(source);
  if (owner == m_fid_owners.end()) {
    NETIO3_LOG_DEBUG("libfabric: event queue error for an endpoint that is gone: {}", reason);
    return;
  }
  const FidOwner target = owner->second;
  if (target.connection) {
    const auto& connection = target.connection;
    if (connection->state == Connection::State::connecting) {
      connect_attempt_failed(connection, reason);
    } else {
      begin_close(connection, loss_notice(*connection), "connection error: " + reason);
    }
  } else if (target.listener) {
    NETIO3_LOG_WARNING("libfabric: listen endpoint {}: {}", target.listener->address.to_string(), reason);
  }
}

void BackendLibfabric::handle_connection_request(const std::shared_ptr<Listener>& listener, InfoPtr info,
                                                 std::span<const std::uint8_t> data, Lock& lock) {
  if (!info) {
    return;
  }
  EndPointAddress peer;
  try {
    if (info->dest_addr != nullptr) {
      peer = detail::to_endpoint_address(static_cast<const sockaddr*>(info->dest_addr));
    }
  } catch (const std::exception& error) {
    NETIO3_LOG_WARNING("libfabric: connection request with an unusable peer address: {}", error.what());
  }
  const auto reject = [&](std::string_view why) {
    NETIO3_LOG_INFO("libfabric: rejecting the connection from {} to {}: {}", peer.to_string(),
                    listener->address.to_string(), why);
    if (listener->pep) {
      const int rc = fi_reject(listener->pep.get(), info->handle, nullptr, 0);
      if (rc != 0) {
        NETIO3_LOG_WARNING("libfabric: fi_reject failed: {}", fabric_error_text(rc));
      }
    }
  };
  if (listener->closing) {
    reject("the listen endpoint is closing");
    return;
  }
  const std::optional<ConnectRequest> request = decode_connect_request(data);
  if (!request) {
    reject("the request is not from a netio3 libfabric send endpoint of protocol version " +
           std::to_string(protocol_version));
    return;
  }
  if (m_config.max_connections_per_listener != 0 &&
      listener->accepted.size() >= m_config.max_connections_per_listener) {
    reject("the listener has reached max_connections_per_listener (" +
           std::to_string(m_config.max_connections_per_listener) + ")");
    return;
  }
  if (m_config.on_connection_request_cb) {
    bool accepted = false;
    listener->in_request_callback = true;
    lock.unlock();
    try {
      accepted = m_config.on_connection_request_cb(peer);
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("libfabric backend: the application's on_connection_request_cb threw: {}", error.what());
    } catch (...) {
      NETIO3_LOG_ERROR("libfabric backend: the application's on_connection_request_cb threw an unknown exception");
    }
    lock.lock();
    listener->in_request_callback = false;
    if (m_shutting_down) {
      return;
    }
    if (!accepted) {
      reject("on_connection_request_cb said no");
      return;
    }
    if (listener->closing) {
      reject("the listen endpoint was closed meanwhile");
      return;
    }
  }
  NETIO3_LOG_DEBUG("libfabric: connection request from {} (provider queue sizes: tx {}, rx {})", peer.to_string(),
                   info->tx_attr->size, info->rx_attr->size);
  std::shared_ptr<Connection> connection;
  try {
    connection = create_receiver(listener, *info, *request);
  } catch (const std::exception& error) {
    reject(error.what());
    return;
  }
  connection->info = std::move(info); // kept while the endpoint lives
  std::array<std::uint8_t, accept_response_size> response{};
  encode(AcceptResponse{connection->peer_max_message, connection->window}, response);
  const int rc = fi_accept(connection->ep.get(), response.data(), response.size());
  if (rc != 0) {
    NETIO3_LOG_WARNING("libfabric: fi_accept of the connection from {} failed: {}", peer.to_string(),
                       fabric_error_text(rc));
    begin_close(connection, CloseNotice::none, "fi_accept failed");
    return;
  }
  NETIO3_LOG_DEBUG("libfabric: accepting {} on {} (window {}, messages up to {} bytes)", peer.to_string(),
                   listener->address.to_string(), connection->window, connection->peer_max_message);
}

std::shared_ptr<Connection> BackendLibfabric::create_receiver(const std::shared_ptr<Listener>& listener,
                                                              const fi_info& info, const ConnectRequest& request) {
  EndPointAddress peer;
  if (info.dest_addr != nullptr) {
    peer = detail::to_endpoint_address(static_cast<const sockaddr*>(info.dest_addr));
  }
  auto connection = std::make_shared<Connection>(Connection::Role::receiver, peer);
  connection->state = Connection::State::accepting;
  const ConnectionParametersRecv& params = listener->params;
  try {
    // The listener's domain, unless the request names another one (a listener on all interfaces
    // with a provider that has a domain per device). Some providers (sockets) describe the request
    // incompletely: their fabric cannot be opened from it, and the listener's domain is right.
    if (info.fabric_attr->prov_name == nullptr || domain_key(info) == listener->domain->key) {
      ++listener->domain->users;
      connection->domain = listener->domain;
    } else {
      try {
        connection->domain = acquire_domain(info);
      } catch (const std::exception& error) {
        NETIO3_LOG_DEBUG("libfabric: using the listener's domain {} for a request naming {} ({})",
                         listener->domain->key, domain_key(info), error.what());
        ++listener->domain->users;
        connection->domain = listener->domain;
      }
    }
    DomainContext& domain = *connection->domain;
    std::size_t window =
        params.use_shared_receive_buffers ? (params.num_buf == 0 ? 16 : params.num_buf) : params.num_buf;
    window = std::min(
        {window, posted_receive_limit(info.rx_attr->size), static_cast<std::size_t>(request.control_capacity)});
    const std::size_t max_message =
        params.use_shared_receive_buffers ? m_config.shared_receive_buf_size : params.buf_size;
    connection->peer_max_message = max_message; // here: the largest message this side accepts
    connection->receive_buffer_size = wire_header_size + max_message;

    if (params.use_shared_receive_buffers) {
      window = std::min(window, m_shared_receive_pool->free_count());
      if (window == 0) {
        throw std::runtime_error("the shared receive pool has no free buffer");
      }
      if (!domain.shared_receive.valid()) {
        domain.shared_receive = Registration{domain.domain.get(), m_shared_receive_pool->memory().data(),
                                             m_shared_receive_pool->memory().size(), FI_RECV, domain.take_key()};
      }
      connection->receive_desc = domain.shared_receive.desc();
      connection->receive_buffers.resize(window);
      for (std::size_t i = 0; i < window; ++i) {
        const std::uint32_t index = m_shared_receive_pool->take();
        connection->shared_receive_indices.push_back(index);
        connection->receive_buffers[i] =
            m_shared_receive_pool->memory().data() + index * m_shared_receive_pool->stride();
      }
    } else {
      const std::size_t stride = align_up(connection->receive_buffer_size, 64);
      connection->receive_memory = HostMemory{window * stride};
      connection->receive_registration = Registration{domain.domain.get(), connection->receive_memory.data(),
                                                      connection->receive_memory.size(), FI_RECV, domain.take_key()};
      connection->receive_desc = connection->receive_registration.desc();
      connection->receive_buffers.resize(window);
      for (std::size_t i = 0; i < window; ++i) {
        connection->receive_buffers[i] = connection->receive_memory.data() + i * stride;
      }
    }
    setup_receive_contexts(*connection, window);
    const std::size_t slots = std::min(receiver_send_slots, queue_depth(info.tx_attr->size));
    setup_send_slots(*connection, domain, slots);

    check(fi_endpoint(domain.domain.get(), const_cast<fi_info*>(&info), connection->ep.out(), nullptr), "fi_endpoint");
    open_completion_queue(*connection, window + slots);
    check(fi_ep_bind(connection->ep.get(), domain.eq.fid_ptr(), 0), "fi_ep_bind (event queue)");
    check(fi_ep_bind(connection->ep.get(), connection->cq.fid_ptr(), FI_TRANSMIT | FI_RECV),
          "fi_ep_bind (completion queue)");
    check(fi_enable(connection->ep.get()), "fi_enable");
    for (std::size_t i = 0; i < window; ++i) {
      check(fi_recv(connection->ep.get(), connection->receive_buffers[i], connection->receive_buffer_size,
                    connection->receive_desc, 0, &connection->receive_contexts[i]),
            "fi_recv");
    }
    connection->window = static_cast<std::uint32_t>(window);
    connection->credits_available_total = connection->window;
    connection->credits_sent_total = connection->window;
    connection->silence_limit_ticks = receiver_silence_limit(request.peer_timeout_ms);
    connection->poll_budget = std::chrono::duration_cast<std::chrono::steady_clock::duration>(m_config.receive_poll);
  } catch (...) {
    teardown_connection(*connection, false, nullptr);
    wake_loop();
    throw;
  }
  connection->listener = listener.get();
  listener->accepted.insert(connection.get());
  m_fid_owners[connection->ep.fid_ptr()] = FidOwner{nullptr, connection};
  m_connections.emplace(connection.get(), connection);
  register_connection_fd(connection);
  ensure_progress_timer();
  return connection;
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
