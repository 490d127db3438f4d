#include "frontend/LineConnection.hpp"

#include <cerrno>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/Logging.hpp"
#include "core/Resolve.hpp"
#include "core/SocketOptions.hpp"
#include "netio3/Exceptions.hpp"

namespace netio3::detail {

namespace {

constexpr std::size_t read_chunk{16384};

/// Errors of send/recv that mean "try again later".
bool would_block(int error) noexcept {
  return error == EAGAIN || error == EWOULDBLOCK || error == EINTR;
}

} // namespace

LineConnection::LineConnection(std::shared_ptr<BaseEventLoop> loop, int fd, EndPointAddress peer, LineHandlers handlers,
                               Limits limits)
  : m_loop{std::move(loop)}, m_fd{fd}, m_peer{std::move(peer)}, m_handlers{std::move(handlers)}, m_limits{limits},
    m_connected{true} {
  configure_connection_socket(m_fd, m_limits.peer_timeout, m_peer, "netio3 control connection");
  register_on_loop();
}

LineConnection::LineConnection(std::shared_ptr<BaseEventLoop> loop, const EndPointAddress& peer, LineHandlers handlers,
                               Limits limits, std::chrono::milliseconds connect_timeout)
  : m_loop{std::move(loop)}, m_peer{peer}, m_handlers{std::move(handlers)}, m_limits{limits},
    m_candidates{resolve_all(peer, false)}, m_connect_timeout{connect_timeout} {
  m_connect_timer = m_loop->create_timer([this] { on_connect_timer(); });
  start_attempt();
}

void LineConnection::start_attempt() {
  // Every address of the peer in order (as getaddrinfo gives them) until one connects.
  while (m_next_candidate < m_candidates.size()) {
    const ResolvedAddress& candidate = m_candidates[m_next_candidate++];
    const int fd = ::socket(candidate.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      m_attempts += numeric_host(candidate) + ": socket() failed: " + errno_text(errno) + "; ";
      continue;
    }
    configure_connection_socket(fd, m_limits.peer_timeout, m_peer, "netio3 control connection");
    if (::connect(fd, candidate.get(), candidate.length) != 0 && errno != EINPROGRESS) {
      m_attempts += numeric_host(candidate) + ": " + errno_text(errno) + "; ";
      ::close(fd);
      continue;
    }
    m_fd = fd;
    m_watched = true;
    register_on_loop();
    m_write_interest = true;
    m_loop->set_write_interest(m_fd, true); // writable = connected (or failed)
    m_connect_timer.start_once(m_connect_timeout.count() > 0 ? std::chrono::nanoseconds{m_connect_timeout}
                                                             : std::chrono::nanoseconds{1});
    return;
  }
  // None left: reported from the loop (never inside the call that made the connection).
  m_pending_failure =
      "cannot connect to " + m_peer.to_string() + " (" + m_attempts.substr(0, m_attempts.size() - 2) + ")";
  m_connect_timer.start_once(std::chrono::nanoseconds{1});
}

void LineConnection::attempt_failed(const std::string& why) {
  m_attempts += numeric_host(m_candidates[m_next_candidate - 1]) + ": " + why + "; ";
  if (m_fd >= 0) {
    try {
      m_loop->remove_fd(m_fd, /*close_fd=*/true, /*wait=*/true);
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("control connection to {}: removing a failed attempt from the loop: {}", m_peer.to_string(),
                       error.what());
      ::close(m_fd);
    }
    m_fd = -1;
  }
  m_write_interest = false;
  start_attempt();
}

void LineConnection::on_connect_timer() {
  if (m_finishing) {
    fail("finished");
    return;
  }
  if (m_connected || m_closed) {
    return;
  }
  if (m_fd < 0) {
    fail(m_pending_failure); // every address failed at once
    return;
  }
  attempt_failed("no answer within " + std::to_string(m_connect_timeout.count()) + " ms");
}

LineConnection::~LineConnection() {
  m_connect_timer.reset();
  close();
}

void LineConnection::register_on_loop() {
  EventContext context;
  context.fd = m_fd;
  context.cb = [this](int) { on_readable(); };
  context.on_writable_cb = [this](int) { on_writable(); };
  m_loop->register_fd(context);
}

void LineConnection::close() noexcept {
  // Removal first (it waits for a callback running on the loop thread), then the flag that such a
  // callback reads.
  if (m_fd >= 0 && !m_watched) {
    ::close(m_fd);
    m_fd = -1;
  }
  if (m_fd >= 0) {
    try {
      m_loop->remove_fd(m_fd, /*close_fd=*/true, /*wait=*/true);
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("control connection with {}: removing it from the loop failed: {}", m_peer.to_string(),
                       error.what());
      ::close(m_fd);
    }
    m_fd = -1;
  }
  m_closed = true;
}

void LineConnection::finish(std::string_view line, std::chrono::milliseconds linger) {
  if (m_closed || m_finishing) {
    return;
  }
  send(line);
  m_finishing = true;
  if (!m_connect_timer.valid()) {
    m_connect_timer = m_loop->create_timer([this] { on_connect_timer(); });
  }
  m_connect_timer.start_once(linger.count() > 0 ? std::chrono::nanoseconds{linger} : std::chrono::nanoseconds{1});
  (void)write_now(); // shuts the write side down once everything is out
}

void LineConnection::stop_watching() noexcept {
  m_connect_timer.reset();
  if (m_fd >= 0 && m_watched) {
    try {
      m_loop->remove_fd(m_fd, /*close_fd=*/false, /*wait=*/true);
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("control connection with {}: removing it from the loop failed: {}", m_peer.to_string(),
                       error.what());
    }
    m_watched = false;
  }
}

void LineConnection::fail(const std::string& reason) {
  if (m_closed) {
    return;
  }
  close();
  if (m_handlers.closed) {
    m_handlers.closed(reason);
  }
}

void LineConnection::send(std::string_view line) {
  if (m_closed) {
    return;
  }
  m_output.append(line);
  m_output.push_back('\n');
  if (m_output.size() - m_output_sent > m_limits.max_output) {
    // Reported from the loop (the owner is inside this call): on_writable sees the failure.
    m_pending_failure = "the peer does not read: " + std::to_string(m_output.size() - m_output_sent) +
                        " bytes wait to be written, more than the limit of " + std::to_string(m_limits.max_output);
    m_output.clear();
    m_output_sent = 0;
    if (m_watched) {
      m_loop->set_write_interest(m_fd, true);
      m_write_interest = true;
    }
    return;
  }
  if (m_connected) {
    (void)write_now();
  }
}

bool LineConnection::write_now() noexcept {
  while (m_fd >= 0 && m_output_sent < m_output.size()) {
    const ssize_t sent =
        ::send(m_fd, m_output.data() + m_output_sent, m_output.size() - m_output_sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent > 0) {
      m_output_sent += static_cast<std::size_t>(sent);
      continue;
    }
    if (sent < 0 && would_block(errno)) {
      if (!m_write_interest && m_watched) {
        m_write_interest = true;
        m_loop->set_write_interest(m_fd, true);
      }
      return false;
    }
    // A broken connection: the readable callback sees it (the loop reports errors as readable).
    return false;
  }
  m_output.clear();
  m_output_sent = 0;
  if (m_finishing && !m_write_shut && m_fd >= 0) {
    m_write_shut = true;
    (void)::shutdown(m_fd, SHUT_WR); // the peer reads the last line, then EOF
  }
  if (m_write_interest && m_connected && m_fd >= 0 && m_watched) {
    m_write_interest = false;
    m_loop->set_write_interest(m_fd, false);
  }
  return true;
}

bool LineConnection::report_pending_failure() {
  if (m_closed) {
    return true;
  }
  if (m_pending_failure.empty()) {
    return false;
  }
  fail(m_pending_failure);
  return true;
}

void LineConnection::on_writable() {
  if (report_pending_failure()) {
    return;
  }
  if (!m_connected) {
    finish_connect();
    return;
  }
  (void)write_now();
}

void LineConnection::finish_connect() {
  if (const int error = socket_error(m_fd); error != 0) {
    attempt_failed(errno_text(error));
    return;
  }
  m_connected = true;
  m_connect_timer.stop();
  if (m_handlers.connected) {
    m_handlers.connected();
  }
  if (!m_closed) {
    (void)write_now();
  }
}

void LineConnection::on_readable() {
  if (report_pending_failure()) {
    return;
  }
  if (!m_connected) {
    finish_connect(); // an error or hang-up before the connect completed
    if (!m_connected) {
      return;
    }
  }
  char chunk[read_chunk];
  for (;;) {
    const ssize_t received = ::recv(m_fd, chunk, sizeof(chunk), MSG_DONTWAIT);
    if (received == 0) {
      fail(m_finishing ? "finished" : "the peer closed the connection");
      return;
    }
    if (received < 0) {
      if (would_block(errno)) {
        return;
      }
      fail(m_finishing ? "finished" : "receive failed: " + errno_text(errno));
      return;
    }
    if (m_finishing) {
      continue; // the peer's last requests: dropped unread
    }
    std::size_t start = 0;
    const std::string_view data{chunk, static_cast<std::size_t>(received)};
    for (std::size_t newline = data.find('\n'); newline != std::string_view::npos; newline = data.find('\n', start)) {
      std::string_view line = data.substr(start, newline - start);
      if (!m_input.empty()) {
        m_input.append(line);
        line = m_input;
      }
      if (line.size() > m_limits.max_line) {
        fail("a line of " + std::to_string(line.size()) + " bytes, longer than the limit of " +
             std::to_string(m_limits.max_line));
        return;
      }
      if (m_handlers.line) {
        m_handlers.line(line);
      }
      if (m_closed) {
        return;
      }
      m_input.clear();
      start = newline + 1;
    }
    m_input.append(data.substr(start));
    if (m_input.size() > m_limits.max_line) {
      fail("more than " + std::to_string(m_limits.max_line) + " bytes without a newline");
      return;
    }
  }
}

EndPointAddress LineConnection::local_address() const {
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  if (m_fd < 0 || ::getsockname(m_fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) {
    throw NetioException("control connection with " + m_peer.to_string() +
                         ": cannot read its local address: " + errno_text(errno));
  }
  return to_endpoint_address(reinterpret_cast<const sockaddr*>(&storage));
}

// --- listener -----------------------------------------------------------------------------------

LineListener::LineListener(std::shared_ptr<BaseEventLoop> loop, const EndPointAddress& local,
                           std::function<void(int fd, const EndPointAddress& peer)> on_accept)
  : m_loop{std::move(loop)}, m_on_accept{std::move(on_accept)} {
  const ResolvedAddress resolved = resolve(local, true);
  m_fd = ::socket(resolved.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (m_fd < 0) {
    throw FailedOpenListenEndpoint("listen on " + local.to_string() + ": socket() failed: " + errno_text(errno));
  }
  const int yes = 1;
  (void)::setsockopt(m_fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  if (::bind(m_fd, resolved.get(), resolved.length) != 0 || ::listen(m_fd, SOMAXCONN) != 0) {
    const int error = errno;
    ::close(m_fd);
    throw FailedOpenListenEndpoint("listen on " + local.to_string() + " failed: " + errno_text(error));
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  (void)::getsockname(m_fd, reinterpret_cast<sockaddr*>(&bound), &length);
  m_address = EndPointAddress{local.address(), to_endpoint_address(reinterpret_cast<const sockaddr*>(&bound)).port()};
  EventContext context;
  context.fd = m_fd;
  context.cb = [this](int) { on_readable(); };
  try {
    m_loop->register_fd(context);
  } catch (...) {
    ::close(m_fd);
    throw;
  }
}

LineListener::~LineListener() {
  try {
    m_loop->remove_fd(m_fd, /*close_fd=*/true, /*wait=*/true);
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("control listener {}: removing it from the loop failed: {}", m_address.to_string(), error.what());
    ::close(m_fd);
  }
}

void LineListener::on_readable() {
  for (;;) {
    sockaddr_storage peer{};
    socklen_t length = sizeof(peer);
    const int fd = ::accept4(m_fd, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (!would_block(errno) && errno != ECONNABORTED) {
        NETIO3_LOG_ERROR("control listener {}: accept failed: {}", m_address.to_string(), errno_text(errno));
      }
      return;
    }
    try {
      m_on_accept(fd, to_endpoint_address(reinterpret_cast<const sockaddr*>(&peer)));
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("control listener {}: dropping a new connection: {}", m_address.to_string(), error.what());
      ::close(fd);
    }
  }
}

} // namespace netio3::detail
