// Listen endpoints of the libfabric backend (passive endpoints) and the connections they accept:
// connection requests, accepting or rejecting them, each receiver's receive memory, and a new
// connection that replaces a stale one from the same address.

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

// --- connection requests ----------------------------------------------------------------------

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
    check(fi_ep_bind(connection->ep.get(), domain.eq.fid_ptr(), 0), "fi_ep_bind (event queue)");
    join_completion_queue(*connection, window + slots);
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
  } catch (...) {
    teardown_connection(*connection, nullptr);
    wake_loop();
    throw;
  }
  connection->listener = listener.get();
  listener->accepted.insert(connection.get());
  m_fid_owners[connection->ep.fid_ptr()] = FidOwner{nullptr, connection};
  m_connections.emplace(connection.get(), connection);
  m_setup_in_progress = true;
  ensure_progress_timer();
  return connection;
}

} // namespace netio3::libfabric
