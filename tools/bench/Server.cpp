#include "Server.hpp"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <iostream>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "AllocationCounter.hpp"
#include "Results.hpp"

namespace netio3::bench {

namespace {

/// How long the reply connection to a client may take to connect: the client waits for it (its
/// ready message) a little longer, so that an unreachable client listener is reported within
/// seconds at both ends.
constexpr std::chrono::milliseconds kReplyConnectTimeout{5000};

/// The stop signal of the running server, fired by SIGINT/SIGTERM (EventSignalHandle::fire is one
/// eventfd write, safe in a signal handler).
std::atomic<const EventSignalHandle*> g_stop_handle{nullptr};

extern "C" void handle_stop_signal(int /*signal*/) {
  if (const EventSignalHandle* handle = g_stop_handle.load(); handle != nullptr) {
    try {
      handle->fire();
    } catch (...) { // nothing sensible to do inside a signal handler
    }
  }
}

} // namespace

Server::Server(ServerOptions options) : m_options{std::move(options)} {}

Server::~Server() {
  g_stop_handle.store(nullptr);
  // The backend goes before the loop it runs on; handles before the loop too.
  m_backend.reset();
  m_retry_timer.reset();
  m_stop_signal.reset();
}

int Server::run() {
  m_loop = std::make_shared<EpollEventLoop>();
  NetworkConfig config = make_config(m_options.backend);
  config.connect_timeout = kReplyConnectTimeout; // the server's only connects are reply connections
  config.on_data_from_cb = [this](const EndPointAddress& remote, std::span<const std::uint8_t> data) {
    on_data(remote, data);
  };
  config.on_connection_established_cb = [this](const EndPointAddress& address) { on_established(address); };
  config.on_connection_closed_cb = [this](const EndPointAddress& address, const std::vector<std::uint64_t>&) {
    on_closed(address);
  };
  config.on_connection_refused_cb = [this](const EndPointAddress& address) { on_refused(address); };
  config.on_send_completed_cb = [](const EndPointAddress&, std::uint64_t) {};
  m_backend = NetworkBackend::create(m_options.backend.backend, config, m_loop);

  m_stop_signal = m_loop->create_signal([this] { m_loop->stop(); });
  m_retry_timer = m_loop->create_timer([this] { flush_pending_replies(); });
  g_stop_handle.store(&m_stop_signal);
  struct sigaction action {};
  action.sa_handler = handle_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  ConnectionParametersRecv receive;
  receive.buf_size = std::max<std::size_t>(m_options.max_message, 4096);
  receive.num_buf = m_options.recv_buffers;
  const EndPointAddress listening =
      m_backend->open_listen_endpoint(EndPointAddress(m_options.host, m_options.port), receive);
  std::cout << "netio3-bench server: listening on " << listening << std::endl;
  if (!m_options.quiet) {
    std::cerr << fmt::format(
        "netio3-bench server: backend {}{}, {} threads, largest message {}\n", backend_name(m_options.backend.backend),
        m_options.backend.backend == NetworkType::LIBFABRIC ? "/" + m_options.backend.provider : std::string(),
        threads_name(m_options.backend.threads), format_size(receive.buf_size));
  }
  m_loop->run();
  g_stop_handle.store(nullptr);
  return m_exit_code;
}

void Server::on_data(const EndPointAddress& remote, std::span<const std::uint8_t> message) {
  const std::uint8_t* cursor = message.data();
  std::size_t left = message.size();
  while (left >= sizeof(WireHeader)) {
    const WireHeader header = read_header(cursor);
    if (header.magic != kWireMagic) {
      ++m_run.protocol_errors;
      return;
    }
    if (header.kind == MessageKind::Data) [[likely]] {
      const std::size_t size = m_run.hello.message_size;
      if (!m_run.active || size > left || size < sizeof(WireHeader) ||
          header.connection >= m_run.next_sequence.size()) {
        ++m_run.protocol_errors;
        return;
      }
      count_data(header);
      cursor += size;
      left -= size;
      continue;
    }
    const std::size_t used = handle_control(remote, header, std::span<const std::uint8_t>(cursor, left));
    if (used == 0) {
      return;
    }
    cursor += used;
    left -= used;
  }
  if (left != 0) {
    ++m_run.protocol_errors;
  }
}

void Server::count_data(const WireHeader& header) {
  std::uint64_t& next = m_run.next_sequence[header.connection];
  if (header.sequence != next) {
    ++m_run.sequence_errors;
  }
  if (next == 0) [[unlikely]] {
    ++m_run.connections_seen; // warm-up lasts at least until every connection has delivered
  }
  next = header.sequence + 1;
  if (!m_run.started) [[unlikely]] {
    m_run.started = true;
    m_run.first_data = Clock::now();
  }
  ++m_run.received;
  if (!m_run.warmed && m_run.connections_seen == m_run.hello.connections) [[unlikely]] {
    // Duration mode looks at the clock only every few messages (about 64 KiB) to stay off the hot path.
    const bool warm = m_run.warm_count != 0 ? m_run.received >= m_run.warm_count
                                            : (m_run.received % m_run.warm_check_interval == 0 &&
                                               Clock::now() - m_run.first_data >= m_run.warm_time);
    if (warm) {
      m_run.warmed = true;
      m_run.allocations_at_warm = allocation_count();
      m_run.received_at_warm = m_run.received;
    }
  }
}

std::size_t Server::handle_control(const EndPointAddress& remote, const WireHeader& header,
                                   std::span<const std::uint8_t> rest) {
  switch (header.kind) {
  case MessageKind::Hello:
    handle_hello(remote, rest.first(std::min(rest.size(), kHelloMessageSize)));
    return std::min(rest.size(), kHelloMessageSize);
  case MessageKind::End:
    handle_end(rest.first(std::min(rest.size(), kEndMessageSize)));
    return std::min(rest.size(), kEndMessageSize);
  case MessageKind::Ping: {
    const std::size_t size = m_run.hello.message_size;
    if (!m_run.active || size > rest.size() || header.connection >= m_run.next_sequence.size()) {
      ++m_run.protocol_errors;
      return 0;
    }
    count_data(header);
    send_reply(rest.first(size)); // echoed unchanged: the client measures the round trip
    return size;
  }
  case MessageKind::Data:
  case MessageKind::Ready:
  case MessageKind::Result: break;
  }
  ++m_run.protocol_errors;
  return 0;
}

void Server::handle_hello(const EndPointAddress& remote, std::span<const std::uint8_t> message) {
  HelloBody hello;
  if (!read_body(message, hello) || hello.connections == 0 || hello.message_size < kMinMessageSize) {
    ++m_run.protocol_errors;
    return;
  }
  if (!m_run.active || hello.run_id != m_run.hello.run_id) {
    m_run = RunState{};
    m_run.active = true;
    m_run.hello = hello;
    m_run.next_sequence.assign(hello.connections, 0);
    m_run.warm_count =
        hello.expected_messages != 0
            ? std::max<std::uint64_t>(
                  1, static_cast<std::uint64_t>(static_cast<double>(hello.expected_messages) * hello.warmup_fraction))
            : 0;
    m_run.warm_check_interval = std::clamp<std::uint64_t>((std::uint64_t{64} << 10U) / hello.message_size, 1, 1024);
    m_run.warm_time = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(hello.duration_s * hello.warmup_fraction));
  }
  ++m_run.hellos;
  if (m_run.hellos == hello.connections) {
    ensure_reply_endpoint(remote, hello.reply_port, hello.mode);
    std::uint8_t ready[kReadyMessageSize];
    write_message(ready, WireHeader{kWireMagic, MessageKind::Ready, 0, 0, 0}, ReadyBody{hello.run_id, 0});
    send_reply(ready);
  }
}

void Server::handle_end(std::span<const std::uint8_t> message) {
  EndBody end;
  if (!read_body(message, end) || !m_run.active || end.run_id != m_run.hello.run_id) {
    ++m_run.protocol_errors;
    return;
  }
  ++m_run.ends;
  m_run.expected += end.sent_messages;
  if (m_run.ends == m_run.hello.connections) {
    finish_run();
  }
}

void Server::finish_run() {
  const auto finished = Clock::now();
  const std::uint64_t allocations_at_end = allocation_count();
  ReceiverFigures figures;
  figures.messages = m_run.received;
  figures.bytes = m_run.received * m_run.hello.message_size;
  figures.expected = m_run.expected;
  figures.seconds = m_run.started ? std::chrono::duration<double>(finished - m_run.first_data).count() : 0.0;
  figures.sequence_errors = m_run.sequence_errors;
  figures.protocol_errors = m_run.protocol_errors;
  if (m_run.warmed && m_run.received > m_run.received_at_warm) {
    figures.allocations_per_message = static_cast<double>(allocations_at_end - m_run.allocations_at_warm) /
                                      static_cast<double>(m_run.received - m_run.received_at_warm);
  }
  m_run.active = false;

  const std::string text = to_json(figures).dump();
  std::vector<std::uint8_t> message(sizeof(WireHeader) + text.size());
  const WireHeader header{kWireMagic, MessageKind::Result, 0, 0, m_run.hello.run_id};
  std::memcpy(message.data(), &header, sizeof(header));
  std::memcpy(message.data() + sizeof(header), text.data(), text.size());
  send_reply(message);
}

void Server::ensure_reply_endpoint(const EndPointAddress& remote, std::uint16_t port, SendMode mode) {
  const EndPointAddress wanted(remote.address(), port);
  const bool buffered = mode == SendMode::Buffered;
  if (m_reply && *m_reply == wanted && (m_reply_mode == SendMode::Buffered) == buffered) {
    return;
  }
  if (m_reply) {
    try {
      m_backend->close_send_endpoint(*m_reply);
    } catch (const std::exception& error) {
      std::cerr << "netio3-bench server: closing the reply connection to " << *m_reply << " failed: " << error.what()
                << '\n';
    }
    m_reply.reset();
  }
  m_pending_replies.clear();
  m_reply_held_buffer = nullptr;
  m_reply_spare_buffer = nullptr;
  m_reply_established = false;
  ConnectionParameters parameters;
  if (buffered) {
    parameters.buf_size = std::max<std::size_t>(m_options.max_message, std::size_t{64} << 10U);
    parameters.num_buf = 8;
  }
  m_reply_mode = mode;
  try {
    m_backend->open_send_endpoint(wanted, parameters);
    m_reply = wanted;
  } catch (const std::exception& error) {
    std::cerr << "netio3-bench server: cannot open the reply connection to " << wanted << ": " << error.what() << '\n';
    m_exit_code = 1;
  }
}

void Server::on_established(const EndPointAddress& address) {
  if (m_reply && address == *m_reply) {
    m_reply_established = true;
    flush_pending_replies();
    return;
  }
  ++m_open_connections;
  m_data_peers.insert(address);
  m_session_started = true;
}

void Server::on_closed(const EndPointAddress& address) {
  if (m_reply && address == *m_reply) {
    m_reply.reset();
    m_reply_established = false;
    m_reply_held_buffer = nullptr;
    m_reply_spare_buffer = nullptr;
    m_pending_replies.clear();
    return;
  }
  m_data_peers.erase(address);
  if (m_open_connections > 0) {
    --m_open_connections;
  }
  if (m_open_connections == 0 && m_session_started) {
    end_session();
  }
}

void Server::on_refused(const EndPointAddress& address) {
  if (m_reply && address == *m_reply) {
    std::cerr << "netio3-bench server: the reply connection to " << address
              << " (the client's reply listener, at the address its data connections come from) could not connect: "
                 "refused, unreachable or no answer within "
              << kReplyConnectTimeout.count() / 1000
              << " s; closing that client's data connections (is the client's listen port reachable from here?)\n";
    m_reply.reset();
    m_reply_established = false;
    m_pending_replies.clear();
    m_exit_code = 1;
    // The client waits for the ready message of the reply connection: closing its data
    // connections tells it at once that the reply path failed.
    const std::set<EndPointAddress> peers = m_data_peers;
    for (const EndPointAddress& peer : peers) {
      if (peer.address() != address.address()) {
        continue;
      }
      try {
        m_backend->close_accepted_connection(peer);
      } catch (const std::exception& error) {
        std::cerr << "netio3-bench server: closing the data connection from " << peer << " failed: " << error.what()
                  << '\n';
      }
    }
  }
}

void Server::end_session() {
  m_session_started = false;
  m_run = RunState{}; // the next client starts its runs from scratch, whatever their ids
  if (m_reply) {
    try {
      m_backend->close_send_endpoint(*m_reply);
    } catch (const UnknownSendEndpoint&) {
      // The client closed it first; its closed callback is on its way.
    } catch (const std::exception& error) {
      std::cerr << "netio3-bench server: closing the reply connection failed: " << error.what() << '\n';
    }
    m_reply.reset();
    m_reply_established = false;
    m_reply_held_buffer = nullptr;
    m_reply_spare_buffer = nullptr;
    m_pending_replies.clear();
  }
  if (m_options.once) {
    m_loop->stop();
  }
}

void Server::send_reply(std::span<const std::uint8_t> message) {
  if (m_reply_established && m_pending_replies.empty()) [[likely]] {
    const NetioStatus status = send_reply_now(message);
    if (status == NetioStatus::OK) {
      return;
    }
    if (status != NetioStatus::NO_RESOURCES) {
      std::cerr << "netio3-bench server: a reply of " << message.size() << " bytes failed: " << status << '\n';
      return;
    }
  }
  // Not connected yet, or backpressure: keep it, in order, and retry (rare; allocates).
  m_pending_replies.emplace_back(message.begin(), message.end());
  if (m_reply_established) {
    m_retry_timer.start_once(std::chrono::microseconds{200});
  }
}

NetioStatus Server::send_reply_now(std::span<const std::uint8_t> message) {
  if (m_reply_mode == SendMode::Buffered) {
    // A held buffer already contains this message (the front of the queue, refused before).
    NetworkBuffer* buffer = m_reply_held_buffer;
    if (buffer == nullptr) {
      buffer = m_reply_spare_buffer != nullptr ? std::exchange(m_reply_spare_buffer, nullptr)
                                               : m_backend->get_buffer(*m_reply);
      if (buffer == nullptr) {
        return NetioStatus::NO_RESOURCES;
      }
      buffer->set_pos(0);
      if (!buffer->append(message)) {
        m_reply_spare_buffer = buffer; // keep it for the next reply: a buffer cannot be handed back
        return NetioStatus::MESSAGE_TOO_LARGE;
      }
    }
    const NetioStatus status = m_backend->send_buffer(*m_reply, buffer);
    m_reply_held_buffer = status == NetioStatus::OK ? nullptr : buffer;
    return status;
  }
  return m_backend->send_data_copy(*m_reply, message, {}, m_reply_key++);
}

void Server::flush_pending_replies() {
  if (!m_reply || !m_reply_established) {
    return;
  }
  std::size_t sent = 0;
  for (; sent < m_pending_replies.size(); ++sent) {
    const NetioStatus status = send_reply_now(m_pending_replies[sent]);
    if (status == NetioStatus::NO_RESOURCES) {
      m_retry_timer.start_once(std::chrono::microseconds{200});
      break;
    }
    if (status != NetioStatus::OK) {
      std::cerr << "netio3-bench server: a queued reply failed: " << status << '\n';
    }
  }
  m_pending_replies.erase(m_pending_replies.begin(), m_pending_replies.begin() + static_cast<std::ptrdiff_t>(sent));
}

} // namespace netio3::bench
