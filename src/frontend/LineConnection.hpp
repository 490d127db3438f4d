#pragma once

// The frontend's control connections (private): a non-blocking TCP socket on the event loop that
// carries text lines both ways, and a listener that accepts them. Used only on the loop thread
// (construction and destruction may happen on any thread while the loop does not run the
// connection's callbacks: the destructor removes the fd with wait).

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "netio3/BaseEventLoop.hpp"
#include "netio3/EndPointAddress.hpp"

namespace netio3::detail {

/// What a connection reports, on the loop thread. After `closed` nothing more is reported; the
/// owner destroys the connection later (not from inside the handler).
struct LineHandlers {
  /// The outgoing connection is established (never called for accepted ones).
  std::function<void()> connected;
  /// One complete line, without its newline.
  std::function<void(std::string_view line)> line;
  /// The connection ended: EOF, an error, a timeout, an overlong line or output the peer does not
  /// read. `reason` says which, for the log.
  std::function<void(const std::string& reason)> closed;
};

class LineConnection {
public:
  /// Limits of a connection.
  struct Limits {
    std::size_t max_line{4096};                    ///< Longest line accepted from the peer.
    std::size_t max_output{std::size_t{8} << 20U}; ///< Most bytes waiting to be written.
    std::chrono::milliseconds peer_timeout{std::chrono::seconds{10}};
  };

  /// Takes an accepted, connected socket.
  LineConnection(std::shared_ptr<BaseEventLoop> loop, int fd, EndPointAddress peer, LineHandlers handlers,
                 Limits limits);
  /// Connects to `peer` (resolved by the caller's thread; the connect itself is asynchronous and
  /// ends in `connected` or `closed`, within `connect_timeout`).
  /// @throws InvalidEndpointAddress if `peer` does not resolve; NetioException if no socket
  LineConnection(std::shared_ptr<BaseEventLoop> loop, const EndPointAddress& peer, LineHandlers handlers, Limits limits,
                 std::chrono::milliseconds connect_timeout);
  ~LineConnection();
  LineConnection(const LineConnection&) = delete;
  LineConnection& operator=(const LineConnection&) = delete;
  LineConnection(LineConnection&&) = delete;
  LineConnection& operator=(LineConnection&&) = delete;

  /// Queues `line` and a newline and writes what the socket takes. A no-op once closed. Output
  /// beyond `max_output` ends the connection (reported from the loop).
  void send(std::string_view line);
  /// Ends the connection without reporting `closed`.
  void close() noexcept;
  /// Sends `line` as the last one and ends the connection gracefully: the write side is shut down
  /// once everything is written, what the peer still sends is read and dropped until it closes
  /// (or `linger` passes), then `closed` is reported. Closing at once instead, with the peer's
  /// requests unread, would make the kernel reset the connection, and the peer could lose the
  /// last line.
  void finish(std::string_view line, std::chrono::milliseconds linger = std::chrono::seconds{2});
  /// True after `finish`.
  [[nodiscard]] bool is_finishing() const noexcept { return m_finishing; }
  /// True once connected (accepted connections: from the start) and until closed.
  [[nodiscard]] bool connected() const noexcept { return m_connected && !m_closed; }
  [[nodiscard]] bool is_closed() const noexcept { return m_closed; }
  /// The peer's address.
  [[nodiscard]] const EndPointAddress& peer() const noexcept { return m_peer; }
  /// The local address of the socket (the interface that reaches the peer), once connected.
  [[nodiscard]] EndPointAddress local_address() const;
  /// Writes what is queued without waiting for the loop, as far as the socket takes it now.
  /// Returns true when nothing is left.
  bool write_now() noexcept;
  /// Takes the socket off the loop (waiting for a running callback) but keeps it open, so that
  /// an owner shutting down may still `send` and `write_now` from its own thread, then `close`.
  void stop_watching() noexcept;

private:
  void register_on_loop();
  void on_readable();
  void on_writable();
  void finish_connect();
  /// True (and reported) when the connection is closed or failed inside a call.
  bool report_pending_failure();
  void fail(const std::string& reason);

  std::shared_ptr<BaseEventLoop> m_loop;
  int m_fd{-1};
  EndPointAddress m_peer;
  LineHandlers m_handlers;
  Limits m_limits;
  bool m_connected{false};
  bool m_closed{false};
  bool m_write_interest{false};
  bool m_watched{true};
  bool m_finishing{false};
  bool m_write_shut{false};
  std::string m_input;           // the start of a line whose newline has not arrived
  std::string m_pending_failure; // found inside a call, reported from the loop
  std::string m_output;
  std::size_t m_output_sent{0};
  EventTimerHandle m_connect_timer; // outgoing: the connect deadline; after finish(): the linger
};

/// A listening TCP socket on the loop; hands each accepted socket to `on_accept`.
class LineListener {
public:
  /// @throws InvalidEndpointAddress if `local` does not resolve
  /// @throws FailedOpenListenEndpoint if socket, bind or listen fail (errno text in the message)
  LineListener(std::shared_ptr<BaseEventLoop> loop, const EndPointAddress& local,
               std::function<void(int fd, const EndPointAddress& peer)> on_accept);
  ~LineListener();
  LineListener(const LineListener&) = delete;
  LineListener& operator=(const LineListener&) = delete;
  LineListener(LineListener&&) = delete;
  LineListener& operator=(LineListener&&) = delete;

  /// The address listened on, with the real port.
  [[nodiscard]] const EndPointAddress& address() const noexcept { return m_address; }

private:
  void on_readable();

  std::shared_ptr<BaseEventLoop> m_loop;
  int m_fd{-1};
  EndPointAddress m_address;
  std::function<void(int fd, const EndPointAddress& peer)> m_on_accept;
};

} // namespace netio3::detail
