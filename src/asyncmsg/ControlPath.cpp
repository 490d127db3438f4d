// BackendAsyncmsg, control path: listen, accept, connect, handshake, close, timeouts.
//
// Public calls do what can be done in the caller's thread (resolve, socket, bind, connect, map
// changes) and post the rest (loop registration, tear-down, callbacks) to the loop, so that every
// registration change and every callback happens on the loop thread, never inside the call.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fcntl.h>
#include <future>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

#include "asyncmsg/BackendAsyncmsg.hpp"
#include "core/Resolve.hpp"
#include "core/SocketOptions.hpp"

namespace netio3::asyncmsg {

namespace {

using detail::errno_text;

/// Errors of a non-blocking connect that mean "nobody there" rather than a local failure.
bool is_unreachable_error(int error) {
  return error == ECONNREFUSED || error == ENETUNREACH || error == EHOSTUNREACH || error == ETIMEDOUT ||
         error == ECONNRESET || error == EADDRNOTAVAIL || error == ENETDOWN || error == EHOSTDOWN;
}

/// Sends a handshake message on a fresh socket. Its send buffer is empty, so the few bytes go out
/// at once; anything else is a failure.
bool send_small(int fd, const std::uint8_t* data, std::size_t size) {
  ssize_t sent = -1;
  do {
    sent = ::send(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (sent < 0 && errno == EINTR);
  return sent == static_cast<ssize_t>(size);
}

const std::vector<std::uint64_t> no_keys{};

} // namespace

// --- send endpoints -----------------------------------------------------------------------------

void BackendAsyncmsg::open_send_endpoint(const EndPointAddress& address, const ConnectionParameters& params) {
  if (address.port() == 0) {
    throw InvalidEndpointAddress("asyncmsg: cannot open a send endpoint to " + address.to_string() +
                                 ": port 0 is not a destination");
  }
  std::vector<detail::ResolvedAddress> candidates = detail::resolve_all(address, false);
  if (params.use_shared_send_buffers && !m_shared_send_pool) {
    throw FailedOpenSendEndpoint("asyncmsg: send endpoint to " + address.to_string() +
                                 " asks for the shared send pool, but NetworkConfig::use_shared_send_buffers is off");
  }
  if (!params.use_shared_send_buffers && params.num_buf > 0 &&
      (params.buf_size == 0 || params.buf_size > max_frame_payload)) {
    throw FailedOpenSendEndpoint("asyncmsg: send endpoint to " + address.to_string() + ": buf_size " +
                                 std::to_string(params.buf_size) +
                                 " is invalid for a buffered endpoint (must be 1 .. 4 GiB - 1)");
  }

  const std::unique_lock map_lock{m_map_mutex};
  if (m_send_endpoints.contains(address)) {
    throw SendEndpointAlreadyExists("asyncmsg: a send endpoint to " + address.to_string() + " is already open");
  }
  std::shared_ptr<SendConnection> connection;
  try {
    connection = std::make_shared<SendConnection>(address, -1, m_thread_safe, m_config.max_unsent_bytes);
  } catch (...) {
    throw FailedOpenSendEndpoint("asyncmsg: cannot allocate the send endpoint to " + address.to_string());
  }
  if (params.use_shared_send_buffers) {
    connection->pool = m_shared_send_pool.get();
  } else if (params.num_buf > 0) {
    try {
      connection->own_pool = std::make_unique<BufferPool>(params.num_buf, params.buf_size, m_thread_safe);
    } catch (const std::bad_alloc&) {
      throw FailedOpenSendEndpoint("asyncmsg: cannot allocate the send pool of " + std::to_string(params.num_buf) +
                                   " x " + std::to_string(params.buf_size) + " bytes for " + address.to_string());
    }
    connection->pool = connection->own_pool.get();
  }
  connection->untried = std::move(candidates);
  bool local_failure = false;
  if (!connect_next_address(*connection, local_failure) && local_failure) {
    // Every address failed here, not for lack of a listener: the caller learns it from the call.
    throw FailedOpenSendEndpoint("asyncmsg: cannot connect to " + address.to_string() + ": " +
                                 connection->failed_attempts);
  }
  forget_lookup_locked();
  m_send_endpoints.emplace(address, connection);
  post([this, connection] { start_send_connection(connection); });
}

bool BackendAsyncmsg::connect_next_address(SendConnection& connection, bool& local_failure) {
  local_failure = false;
  const auto note = [&](const std::string& where, const std::string& what) {
    if (!connection.failed_attempts.empty()) {
      connection.failed_attempts += "; ";
    }
    connection.failed_attempts += where + ": " + what;
  };
  while (!connection.untried.empty()) {
    const detail::ResolvedAddress resolved = connection.untried.front();
    connection.untried.erase(connection.untried.begin());
    const std::string where = detail::numeric_host(resolved);
    OwnedFd fd{::socket(resolved.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
    if (fd.get() < 0) {
      // EAFNOSUPPORT: this kernel has no IPv6 (or no IPv4); another address may still work.
      note(where, "cannot create a socket: " + errno_text(errno));
      local_failure = errno != EAFNOSUPPORT;
      continue;
    }
    detail::configure_connection_socket(fd.get(), m_config.peer_timeout, connection.address, "asyncmsg");
    // Bind to a port of our own before connecting: a plain connect may reuse a source port for
    // another destination, so that two connections from this host reach a listener on 0.0.0.0 (via
    // different local addresses) with the same peer address and port, and callbacks, which name
    // connections by that address, could not tell them apart.
    sockaddr_storage local{};
    local.ss_family = static_cast<sa_family_t>(resolved.family);
    const socklen_t local_length = resolved.family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&local), local_length) != 0) {
      note(where, "cannot bind a local port: " + errno_text(errno));
      local_failure = true;
      continue;
    }
    if (::connect(fd.get(), resolved.get(), resolved.length) != 0 && errno != EINPROGRESS) {
      const int error = errno;
      note(where, "connect failed: " + errno_text(error));
      local_failure = !is_unreachable_error(error);
      connection.immediate_error = error;
      continue;
    }
    local_failure = false;
    connection.immediate_error = 0;
    connection.trying = where;
    ++connection.attempt;
    const std::lock_guard lock{connection.mutex}; // senders read the fd under the mutex
    connection.fd.reset(fd.release());
    return true;
  }
  if (connection.immediate_error == 0) {
    local_failure = true; // nothing was even tried (no socket of any address family)
  }
  return false;
}

void BackendAsyncmsg::connect_attempt_failed(SendConnection& connection, const std::string& why) {
  if (!connection.failed_attempts.empty()) {
    connection.failed_attempts += "; ";
  }
  connection.failed_attempts += connection.trying + ": " + why;
  const std::string failed_address = connection.trying;
  if (connection.registered) {
    unregister_fd(connection.fd.get());
    connection.registered = false;
  }
  connection.write_interest = false;
  connection.hello_sent = 0;
  bool local_failure = false;
  if (connection.user_closed.load() || !connect_next_address(connection, local_failure)) {
    NETIO3_LOG_INFO("asyncmsg: connect to {} failed: {}", connection.address.to_string(), connection.failed_attempts);
    close_send_connection(connection, CloseReason::failed);
    return;
  }
  NETIO3_LOG_DEBUG("asyncmsg: connect to {} at {} failed ({}); trying {}", connection.address.to_string(),
                   failed_address, why, connection.trying);
  start_send_connection(connection.shared_from_this());
}

void BackendAsyncmsg::start_send_connection(const std::shared_ptr<SendConnection>& connection) {
  if (connection->state == ConnectionState::closed || connection->user_closed.load()) {
    return; // closed before it started; the close task reports it
  }
  if (connection->immediate_error != 0) {
    NETIO3_LOG_INFO("asyncmsg: connect to {} failed: {}", connection->address.to_string(), connection->failed_attempts);
    close_send_connection(*connection, CloseReason::failed);
    return;
  }
  try {
    register_fd(EventContext{connection->fd.get(), [this, connection](int) { on_send_readable(*connection); },
                             [this, connection](int) { on_send_writable(*connection); }});
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("asyncmsg: cannot watch the connection to {}: {}", connection->address.to_string(), error.what());
    close_send_connection(*connection, CloseReason::failed);
    return;
  }
  connection->registered = true;
  m_evloop->set_write_interest(connection->fd.get(), true); // writable = connected (or failed)
  connection->write_interest = true;
  add_deadline(
      Deadline{std::chrono::steady_clock::now() + m_config.connect_timeout, connection, {}, connection->attempt});
}

void BackendAsyncmsg::on_send_writable(SendConnection& connection) {
  if (m_shutting_down.load(std::memory_order_relaxed)) {
    return;
  }
  const DispatchScope scope{*this};
  switch (connection.state) {
  case ConnectionState::connecting: on_connected(connection); break;
  case ConnectionState::established: service(connection); break;
  case ConnectionState::handshake:
  case ConnectionState::closed: break;
  }
}

void BackendAsyncmsg::on_send_readable(SendConnection& connection) {
  if (m_shutting_down.load(std::memory_order_relaxed)) {
    return;
  }
  const DispatchScope scope{*this};
  switch (connection.state) {
  case ConnectionState::connecting: on_connected(connection); break; // error or hang-up while connecting
  case ConnectionState::handshake: read_reply(connection); break;
  case ConnectionState::established: {
    // The receiver never sends after its Reply: this is the end of the connection (or a violation).
    std::array<std::uint8_t, 64> scratch{};
    ssize_t received = -1;
    do {
      received = ::recv(connection.fd.get(), scratch.data(), scratch.size(), MSG_DONTWAIT);
    } while (received < 0 && errno == EINTR);
    if (received < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    }
    if (received == 0) {
      NETIO3_LOG_INFO("asyncmsg: the receiver {} closed the connection", connection.address.to_string());
    } else if (received < 0) {
      NETIO3_LOG_INFO("asyncmsg: the connection to {} was lost: {}", connection.address.to_string(), errno_text(errno));
    } else {
      NETIO3_LOG_WARNING("asyncmsg: the receiver {} sent data after the handshake (protocol violation); closing",
                         connection.address.to_string());
    }
    close_send_connection(connection, CloseReason::lost);
    break;
  }
  case ConnectionState::closed: break;
  }
}

void BackendAsyncmsg::on_connected(SendConnection& connection) {
  const int fd = connection.fd.get();
  if (const int error = detail::socket_error(fd); error != 0) {
    connect_attempt_failed(connection, errno_text(error));
    return;
  }
  static const auto hello = encode_hello();
  ssize_t sent = -1;
  do {
    sent = ::send(fd, hello.data() + connection.hello_sent, hello.size() - connection.hello_sent,
                  MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN) {
      return; // not connected yet: wait for writable
    }
    NETIO3_LOG_INFO("asyncmsg: sending the handshake to {} failed: {}", connection.address.to_string(),
                    errno_text(errno));
    close_send_connection(connection, CloseReason::failed);
    return;
  }
  connection.hello_sent += static_cast<std::size_t>(sent);
  if (connection.hello_sent < hello.size()) {
    return;
  }
  {
    const std::lock_guard lock{connection.mutex};
    connection.state = ConnectionState::handshake;
  }
  m_evloop->set_write_interest(fd, false); // now wait for the Reply
  connection.write_interest = false;
}

void BackendAsyncmsg::read_reply(SendConnection& connection) {
  ssize_t received = -1;
  do {
    received = ::recv(connection.fd.get(), connection.reply.data() + connection.reply_received,
                      connection.reply.size() - connection.reply_received, MSG_DONTWAIT);
  } while (received < 0 && errno == EINTR);
  if (received < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    return;
  }
  if (received <= 0) {
    NETIO3_LOG_INFO("asyncmsg: the connection to {} ended during the handshake: {}", connection.address.to_string(),
                    received == 0 ? std::string{"closed by the receiver (rejected or not a netio3 listener)"}
                                  : errno_text(errno));
    close_send_connection(connection, CloseReason::failed);
    return;
  }
  connection.reply_received += static_cast<std::size_t>(received);
  if (connection.reply_received < connection.reply.size()) {
    return;
  }
  Reply reply;
  if (const HandshakeError error = decode_reply(connection.reply, reply); error != HandshakeError::none) {
    NETIO3_LOG_WARNING("asyncmsg: bad handshake reply from {}: {}; closing", connection.address.to_string(),
                       to_string(error));
    close_send_connection(connection, CloseReason::failed);
    return;
  }
  if (reply.status != ReplyStatus::accepted) {
    NETIO3_LOG_INFO("asyncmsg: connection to {} {}", connection.address.to_string(), to_string(reply.status));
    close_send_connection(connection, CloseReason::failed);
    return;
  }
  {
    const std::lock_guard lock{connection.mutex};
    if (connection.user_closed.load()) {
      return; // the close task reports it
    }
    connection.peer_limit = reply.max_message_size;
    connection.state = ConnectionState::established;
    m_send_wait.notify(); // senders waiting for the connection
  }
  NETIO3_LOG_DEBUG("asyncmsg: connected to {} (largest message {} bytes)", connection.address.to_string(),
                   reply.max_message_size);
  invoke("on_connection_established", m_config.on_connection_established_cb, connection.address);
}

void BackendAsyncmsg::close_send_endpoint(const EndPointAddress& address) {
  std::shared_ptr<SendConnection> connection;
  {
    const std::unique_lock map_lock{m_map_mutex};
    const auto found = m_send_endpoints.find(address);
    if (found == m_send_endpoints.end()) {
      throw UnknownSendEndpoint("asyncmsg: close_send_endpoint: no send endpoint to " + address.to_string());
    }
    connection = std::move(found->second);
    forget_lookup_locked();
    m_send_endpoints.erase(found);
  }
  {
    const std::lock_guard lock{connection->mutex};
    connection->user_closed.store(true);
    m_send_wait.notify(); // waiting senders return CLOSED at once, not when the loop closes it
  }
  post([this, connection] { close_send_connection(*connection, CloseReason::user); });
}

void BackendAsyncmsg::close_send_connection(SendConnection& connection, CloseReason reason) {
  std::vector<std::uint64_t> pending_keys;
  bool was_established = false;
  bool closed_by_user = false;
  {
    const std::lock_guard lock{connection.mutex};
    if (connection.state == ConnectionState::closed) {
      return;
    }
    was_established = connection.state == ConnectionState::established;
    closed_by_user = connection.user_closed.load() || reason == CloseReason::user;
    connection.state = ConnectionState::closed;
    pending_keys = std::move(connection.undelivered_keys);
    // Directly written messages not reported yet come next (nothing queued is older).
    for (auto* list : {&m_direct_running, &m_direct_completions}) {
      for (DirectCompletion& entry : *list) {
        if (entry.connection == &connection) {
          pending_keys.push_back(entry.key);
          entry.connection = nullptr;
        }
      }
    }
    const auto reclaim = [&](const Completion& completion) {
      if (completion.kind == Completion::Kind::buffer) {
        connection.pool->release(completion.value); // in-flight buffers go back to the pool
      } else {
        pending_keys.push_back(completion.value);
      }
    };
    connection.outgoing().drain(reclaim); // the older batch first: keys in send order
    connection.queue().drain(reclaim);
    connection.outgoing_unsent.store(0, std::memory_order_relaxed);
    m_send_wait.notify(); // waiting senders return CLOSED
  }
  if (connection.registered) {
    unregister_fd(connection.fd.get());
    connection.registered = false;
  }
  connection.fd.reset();
  if (!closed_by_user) {
    // Gone for good: the address may be opened again from the callback.
    const std::unique_lock map_lock{m_map_mutex};
    const auto found = m_send_endpoints.find(connection.address);
    if (found != m_send_endpoints.end() && found->second.get() == &connection) {
      forget_lookup_locked();
      m_send_endpoints.erase(found);
    }
  }
  if (closed_by_user || was_established) {
    invoke("on_connection_closed", m_config.on_connection_closed_cb, connection.address, pending_keys);
  } else {
    invoke("on_connection_refused", m_config.on_connection_refused_cb, connection.address);
  }
}

// --- listen endpoints ---------------------------------------------------------------------------

EndPointAddress BackendAsyncmsg::open_listen_endpoint(const EndPointAddress& address,
                                                      const ConnectionParametersRecv& params) {
  std::uint64_t limit = params.buf_size;
  if (params.use_shared_receive_buffers) {
    if (!m_config.use_shared_receive_buffers) {
      throw FailedOpenListenEndpoint("asyncmsg: listen endpoint " + address.to_string() +
                                     " asks for the shared receive pool, but "
                                     "NetworkConfig::use_shared_receive_buffers is off");
    }
    limit = m_config.shared_receive_buf_size;
  }
  limit = std::min<std::uint64_t>(limit, max_frame_payload);
  const detail::ResolvedAddress resolved = detail::resolve(address, true);

  const std::unique_lock map_lock{m_map_mutex};
  if (address.port() != 0 && m_listeners.contains(address)) {
    throw ListenEndpointAlreadyExists("asyncmsg: already listening on " + address.to_string());
  }
  OwnedFd fd{::socket(resolved.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  if (fd.get() < 0) {
    throw FailedOpenListenEndpoint("asyncmsg: cannot create a socket to listen on " + address.to_string() + ": " +
                                   errno_text(errno));
  }
  const int one = 1;
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
    NETIO3_LOG_WARNING("asyncmsg: SO_REUSEADDR on {} failed: {}", address.to_string(), errno_text(errno));
  }
  if (::bind(fd.get(), resolved.get(), resolved.length) != 0) {
    throw FailedOpenListenEndpoint("asyncmsg: cannot bind to " + address.to_string() + ": " + errno_text(errno));
  }
  if (::listen(fd.get(), SOMAXCONN) != 0) {
    throw FailedOpenListenEndpoint("asyncmsg: cannot listen on " + address.to_string() + ": " + errno_text(errno));
  }
  sockaddr_storage bound{};
  socklen_t bound_length = sizeof(bound);
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &bound_length) != 0) {
    throw FailedOpenListenEndpoint("asyncmsg: cannot read the port listened on for " + address.to_string() + ": " +
                                   errno_text(errno));
  }
  const std::uint16_t port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  EndPointAddress actual{address.address(), port}; // not const: returned by move
  if (m_listeners.contains(actual)) {
    throw ListenEndpointAlreadyExists("asyncmsg: already listening on " + actual.to_string());
  }
  auto listener = std::make_shared<Listener>(actual, -1, limit);
  listener->fd.reset(fd.release()); // every throw above closed the socket through `fd`
  m_listeners.emplace(actual, listener);
  post([this, listener] { start_listener(listener); });
  return actual;
}

void BackendAsyncmsg::start_listener(const std::shared_ptr<Listener>& listener) {
  if (listener->closing.load()) {
    return; // the close task cleans up
  }
  try {
    register_fd(EventContext{listener->fd.get(), [this, listener](int) { on_listener_readable(*listener); }, {}});
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("asyncmsg: cannot watch the listen endpoint {}: {}", listener->address.to_string(), error.what());
    return;
  }
  listener->registered = true;
}

void BackendAsyncmsg::close_listen_endpoint(const EndPointAddress& address) {
  std::shared_ptr<Listener> listener;
  {
    const std::unique_lock map_lock{m_map_mutex};
    const auto found = m_listeners.find(address);
    if (found == m_listeners.end()) {
      throw UnknownListenEndpoint("asyncmsg: close_listen_endpoint: nothing listens on " + address.to_string() +
                                  " (use the address open_listen_endpoint returned)");
    }
    listener = std::move(found->second);
    m_listeners.erase(found);
  }
  listener->closing.store(true);
  post([this, listener] { close_listener(*listener); });
}

void BackendAsyncmsg::close_accepted_connection(const EndPointAddress& remote) {
  // Accepted connections belong to the loop thread: search and close there (directly when this is
  // the loop thread or the loop is not running; otherwise the loop does it and this call waits).
  const auto close_on_loop = [this, remote]() -> bool {
    std::vector<std::shared_ptr<Listener>> listeners;
    {
      const std::shared_lock map_lock{m_map_mutex};
      for (const auto& [address, listener] : m_listeners) {
        listeners.push_back(listener);
      }
    }
    for (const auto& listener : listeners) {
      for (const auto& [raw, connection] : listener->connections) {
        if (connection->peer != remote || connection->state == ConnectionState::closed) {
          continue;
        }
        const bool was_established = connection->state == ConnectionState::established;
        close_recv_connection(*connection, false); // erases it from the map: stop iterating now
        if (was_established) {
          // The callback never runs inside the call that caused it.
          post([this, remote] { invoke("on_connection_closed", m_config.on_connection_closed_cb, remote, no_keys); });
        }
        return true;
      }
    }
    return false;
  };
  bool found = false;
  if (m_evloop->in_loop_thread() || !m_evloop->is_running()) {
    found = close_on_loop();
  } else {
    // Whoever claims the task runs it: normally the loop; this thread if the loop stopped before
    // it got to the task (a stopped loop runs nothing, and waiting for it would never end).
    struct Handover {
      std::atomic<bool> claimed{false};
      std::promise<bool> outcome;
    };
    const auto handover = std::make_shared<Handover>();
    const auto run = [close_on_loop, handover] {
      if (handover->claimed.exchange(true)) {
        return;
      }
      try {
        handover->outcome.set_value(close_on_loop());
      } catch (...) {
        handover->outcome.set_exception(std::current_exception());
      }
    };
    auto result = handover->outcome.get_future();
    post(run);
    while (result.wait_for(std::chrono::milliseconds{10}) != std::future_status::ready) {
      if (!m_evloop->is_running()) {
        run();
      }
    }
    found = result.get();
  }
  if (!found) {
    throw UnknownListenEndpoint(
        "asyncmsg: close_accepted_connection: no listen endpoint has an accepted connection from " +
        remote.to_string());
  }
}

void BackendAsyncmsg::close_listener(Listener& listener) {
  if (listener.registered) {
    unregister_fd(listener.fd.get());
    listener.registered = false;
  }
  listener.fd.reset();
  auto connections = std::move(listener.connections);
  listener.connections.clear();
  for (auto& [raw, connection] : connections) {
    close_recv_connection(*connection, true);
  }
}

void BackendAsyncmsg::on_listener_readable(Listener& listener) {
  if (m_shutting_down.load(std::memory_order_relaxed) || listener.closing.load(std::memory_order_relaxed)) {
    return;
  }
  const DispatchScope scope{*this};
  // A bounded number per wake-up, so that a connection flood does not starve the data path.
  constexpr int max_accepts_per_event = 64;
  for (int count = 0; count < max_accepts_per_event; ++count) {
    sockaddr_storage peer_storage{};
    socklen_t peer_length = sizeof(peer_storage);
    const int fd = ::accept4(listener.fd.get(), reinterpret_cast<sockaddr*>(&peer_storage), &peer_length,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) {
        continue;
      }
      const int error = errno;
      if ((error == EMFILE || error == ENFILE) && m_spare_fd.get() >= 0) {
        // Out of descriptors: turn the waiting connection away instead of leaving the listener
        // readable (which would make the loop spin).
        m_spare_fd.reset();
        const int turned_away = ::accept4(listener.fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (turned_away >= 0) {
          ::close(turned_away);
        }
        m_spare_fd.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        NETIO3_LOG_WARNING("asyncmsg: listener {} turned a connection away: {}", listener.address.to_string(),
                           errno_text(error));
        continue;
      }
      if (error != EAGAIN && error != EWOULDBLOCK) {
        NETIO3_LOG_WARNING("asyncmsg: accepting on {} failed: {}", listener.address.to_string(), errno_text(error));
      }
      return;
    }
    EndPointAddress peer;
    try {
      peer = detail::to_endpoint_address(reinterpret_cast<const sockaddr*>(&peer_storage));
    } catch (const std::exception& error) {
      NETIO3_LOG_WARNING("asyncmsg: rejecting a connection on {}: {}", listener.address.to_string(), error.what());
      ::close(fd);
      continue;
    }
    accept_one(listener, fd, peer);
  }
}

void BackendAsyncmsg::accept_one(Listener& listener, int fd, const EndPointAddress& peer) {
  if (m_config.max_connections_per_listener != 0 &&
      listener.connections.size() >= m_config.max_connections_per_listener) {
    NETIO3_LOG_WARNING("asyncmsg: listener {} rejects the connection from {}: it has reached its limit of {} "
                       "connections",
                       listener.address.to_string(), peer.to_string(), m_config.max_connections_per_listener);
    const auto reply = encode_reply(ReplyStatus::too_many_connections, 0);
    (void)send_small(fd, reply.data(), reply.size());
    ::close(fd);
    return;
  }
  detail::configure_connection_socket(fd, m_config.peer_timeout, peer, "asyncmsg");
  std::shared_ptr<RecvConnection> connection;
  try {
    connection = std::make_shared<RecvConnection>(peer, fd, &listener);
  } catch (...) {
    ::close(fd);
    NETIO3_LOG_ERROR("asyncmsg: listener {}: cannot allocate the connection from {}", listener.address.to_string(),
                     peer.to_string());
    return;
  }
  try {
    register_fd(EventContext{fd, [this, connection](int) { on_recv_readable(*connection); }, {}});
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("asyncmsg: listener {}: cannot watch the connection from {}: {}", listener.address.to_string(),
                     peer.to_string(), error.what());
    return; // the connection object closes the socket
  }
  listener.connections.emplace(connection.get(), connection);
  add_deadline(Deadline{std::chrono::steady_clock::now() + m_config.connect_timeout, {}, connection});
}

// --- accepted connections -----------------------------------------------------------------------

void BackendAsyncmsg::on_recv_readable(RecvConnection& connection) {
  if (m_shutting_down.load(std::memory_order_relaxed)) {
    return;
  }
  if (connection.state == ConnectionState::established) {
    on_data_readable(connection); // opens its own dispatch scopes
  } else if (connection.state == ConnectionState::handshake) {
    const DispatchScope scope{*this};
    read_hello(connection);
  }
}

void BackendAsyncmsg::read_hello(RecvConnection& connection) {
  const int fd = connection.fd.get();
  ssize_t received = -1;
  do {
    // Exactly the Hello: frames that a misbehaving peer sends early stay in the socket.
    received = ::recv(fd, connection.hello.data() + connection.hello_received,
                      connection.hello.size() - connection.hello_received, MSG_DONTWAIT);
  } while (received < 0 && errno == EINTR);
  if (received < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    return;
  }
  if (received <= 0) {
    NETIO3_LOG_DEBUG("asyncmsg: the connection from {} ended before its handshake: {}", connection.peer.to_string(),
                     received == 0 ? std::string{"closed by the peer"} : errno_text(errno));
    close_recv_connection(connection, false);
    return;
  }
  connection.hello_received += static_cast<std::size_t>(received);
  if (connection.hello_received < connection.hello.size()) {
    return;
  }
  Listener& listener = *connection.listener;
  Hello hello;
  const HandshakeError error = decode_hello(connection.hello, hello);
  if (error != HandshakeError::none) {
    NETIO3_LOG_WARNING("asyncmsg: listener {} closes the connection from {}: bad handshake: {}",
                       listener.address.to_string(), connection.peer.to_string(), to_string(error));
    if (error == HandshakeError::unsupported_version) {
      const auto reply = encode_reply(ReplyStatus::unsupported_version, 0);
      (void)send_small(fd, reply.data(), reply.size());
    }
    close_recv_connection(connection, false);
    return;
  }
  bool accepted = true;
  if (m_config.on_connection_request_cb) {
    try {
      accepted = m_config.on_connection_request_cb(connection.peer);
    } catch (const std::exception& exception) {
      NETIO3_LOG_ERROR("asyncmsg: the on_connection_request callback threw: {}; rejecting {}", exception.what(),
                       connection.peer.to_string());
      accepted = false;
    } catch (...) {
      NETIO3_LOG_ERROR("asyncmsg: the on_connection_request callback threw; rejecting {}", connection.peer.to_string());
      accepted = false;
    }
  }
  if (connection.state != ConnectionState::handshake || listener.closing.load()) {
    accepted = false; // closed from inside the callback
  }
  if (!accepted) {
    NETIO3_LOG_INFO("asyncmsg: listener {} rejected the connection from {}", listener.address.to_string(),
                    connection.peer.to_string());
    if (connection.state == ConnectionState::handshake) {
      const auto reply = encode_reply(ReplyStatus::rejected, 0);
      (void)send_small(fd, reply.data(), reply.size());
      close_recv_connection(connection, false);
    }
    return;
  }
  try {
    connection.decoder.emplace(listener.max_message_size);
  } catch (const std::bad_alloc&) {
    NETIO3_LOG_ERROR("asyncmsg: listener {}: no memory for the receive buffer of {}; closing",
                     listener.address.to_string(), connection.peer.to_string());
    close_recv_connection(connection, false);
    return;
  }
  const auto reply = encode_reply(ReplyStatus::accepted, listener.max_message_size);
  if (!send_small(fd, reply.data(), reply.size())) {
    NETIO3_LOG_INFO("asyncmsg: listener {}: answering the handshake of {} failed: {}", listener.address.to_string(),
                    connection.peer.to_string(), errno_text(errno));
    close_recv_connection(connection, false);
    return;
  }
  connection.state = ConnectionState::established;
  NETIO3_LOG_DEBUG("asyncmsg: listener {} accepted the connection from {}", listener.address.to_string(),
                   connection.peer.to_string());
  invoke("on_connection_established", m_config.on_connection_established_cb, connection.peer);
}

void BackendAsyncmsg::close_recv_connection(RecvConnection& connection, bool report) {
  if (connection.state == ConnectionState::closed) {
    return;
  }
  const bool was_established = connection.state == ConnectionState::established;
  connection.state = ConnectionState::closed;
  const auto keep_alive = connection.shared_from_this(); // the listener's map may hold the last reference
  unregister_fd(connection.fd.get());
  connection.fd.reset();
  connection.listener->connections.erase(&connection);
  if (report && was_established) {
    invoke("on_connection_closed", m_config.on_connection_closed_cb, connection.peer, no_keys);
  }
}

// --- handshake deadlines ------------------------------------------------------------------------

// True when `deadline` would do nothing at expiry: its connection is gone, was given up, or
// finished its handshake. Such an entry still holds a weak reference, and with it the memory of a
// connection made by make_shared.
bool BackendAsyncmsg::deadline_settled(const Deadline& deadline) {
  if (const auto connection = deadline.send.lock(); connection) {
    return deadline.attempt != connection->attempt ||
           (connection->state != ConnectionState::connecting && connection->state != ConnectionState::handshake);
  }
  if (const auto accepted = deadline.recv.lock(); accepted) {
    return accepted->state != ConnectionState::handshake;
  }
  return true;
}

void BackendAsyncmsg::add_deadline(Deadline deadline) {
  // Every deadline is connect_timeout from its start, so the queue is in order: settled entries at
  // its front go now rather than connect_timeout later. Without this, a process that opens and
  // closes connections quickly kept each closed connection's memory for connect_timeout (asyncmsg
  // churn: RSS grew by ~1.1 KiB per cycle for 10 s of cycles, docs/libfabric-backend.md).
  while (!m_deadlines.empty() && deadline_settled(m_deadlines.front())) {
    m_deadlines.pop_front();
  }
  m_deadlines.push_back(std::move(deadline));
  if (m_deadlines.size() == 1) {
    const auto delay = m_deadlines.front().when - std::chrono::steady_clock::now();
    m_deadline_timer.start_once(std::max<std::chrono::nanoseconds>(delay, std::chrono::milliseconds{1}));
  }
}

void BackendAsyncmsg::on_deadline_timer() {
  if (m_shutting_down.load(std::memory_order_relaxed)) {
    return;
  }
  const DispatchScope scope{*this};
  const auto now = std::chrono::steady_clock::now();
  while (!m_deadlines.empty() && m_deadlines.front().when <= now) {
    const Deadline expired = std::move(m_deadlines.front());
    m_deadlines.pop_front();
    if (const auto connection = expired.send.lock(); connection) {
      if (expired.attempt != connection->attempt) {
        continue; // set for an address given up already
      }
      if (connection->state == ConnectionState::connecting) {
        connect_attempt_failed(*connection,
                               "no answer within " + std::to_string(m_config.connect_timeout.count()) + " ms");
      } else if (connection->state == ConnectionState::handshake) {
        NETIO3_LOG_INFO("asyncmsg: connecting to {} timed out after {} ms", connection->address.to_string(),
                        m_config.connect_timeout.count());
        close_send_connection(*connection, CloseReason::failed);
      }
    } else if (const auto accepted = expired.recv.lock(); accepted) {
      if (accepted->state == ConnectionState::handshake) {
        NETIO3_LOG_WARNING("asyncmsg: listener {} closes the connection from {}: no handshake within {} ms",
                           accepted->listener->address.to_string(), accepted->peer.to_string(),
                           m_config.connect_timeout.count());
        close_recv_connection(*accepted, false);
      }
    }
  }
  if (!m_deadlines.empty()) {
    const auto delay = m_deadlines.front().when - std::chrono::steady_clock::now();
    m_deadline_timer.start_once(std::max<std::chrono::nanoseconds>(delay, std::chrono::milliseconds{1}));
  }
}

} // namespace netio3::asyncmsg
