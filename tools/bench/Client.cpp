#include "Client.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cstring>
#include <iostream>
#include <limits>
#include <netdb.h>
#include <netinet/in.h>
#include <stdexcept>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "AllocationCounter.hpp"

namespace netio3::bench {

namespace {

/// Messages sent to one connection before moving to the next: keeps writes batched per connection
/// even with a thousand connections.
constexpr std::uint64_t kBurstPerConnection = 256;
/// Bytes accepted per pump call before returning to the loop (so that it can write and read).
constexpr std::uint64_t kBytesPerPump = std::uint64_t{4} << 20U;
/// Messages per pump call at most.
constexpr std::uint64_t kMessagesPerPump = 16384;
/// Round-trip samples kept at most in duration mode (8 bytes each).
constexpr std::size_t kMaxRoundTripSamples = std::size_t{4} << 20U;
/// How long set-up steps (connect, hello, result) may take before the client gives up.
constexpr std::chrono::milliseconds kControlTimeout{60000};
constexpr std::uint64_t kFailedPongs = std::numeric_limits<std::uint64_t>::max();

std::span<const std::uint8_t> header_bytes(const WireHeader& header) {
  return {reinterpret_cast<const std::uint8_t*>(&header), sizeof(header)};
}

/// How long the server may take to be ready after the hellos: it opens its reply connection
/// (NetworkConfig::connect_timeout of the server, kServerReplyConnectTimeout) and sends the ready.
constexpr std::chrono::milliseconds kReadyTimeout{15000};

/// What getaddrinfo says about the server's host: which families it has, and whether every
/// address is a loopback one.
struct ServerHostFamilies {
  bool ipv4{false};
  bool ipv6{false};
  bool loopback_only{true};
};

ServerHostFamilies server_host_families(const std::string& host) {
  ServerHostFamilies families;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* results = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &results) != 0) {
    // Opening the data connection reports the resolution error; listen where IPv4 replies arrive.
    return ServerHostFamilies{true, false, false};
  }
  for (const addrinfo* entry = results; entry != nullptr; entry = entry->ai_next) {
    if (entry->ai_family == AF_INET) {
      families.ipv4 = true;
      const auto* ipv4 = reinterpret_cast<const sockaddr_in*>(entry->ai_addr);
      families.loopback_only = families.loopback_only && (ntohl(ipv4->sin_addr.s_addr) >> 24U) == 127U;
    } else if (entry->ai_family == AF_INET6) {
      const auto* ipv6 = reinterpret_cast<const sockaddr_in6*>(entry->ai_addr);
      if (IN6_IS_ADDR_V4MAPPED(&ipv6->sin6_addr)) {
        families.ipv4 = true;
        families.loopback_only = families.loopback_only && ipv6->sin6_addr.s6_addr[12] == 127U;
      } else {
        families.ipv6 = true;
        families.loopback_only = families.loopback_only && IN6_IS_ADDR_LOOPBACK(&ipv6->sin6_addr);
      }
    }
  }
  freeaddrinfo(results);
  return families;
}

/// Where the reply listener must listen. The server opens its reply connection to the address it
/// sees this client's data connection come from, which is of the family of the server address the
/// connection went to (a name may give both: either may be the one that connects). A loopback
/// server gets loopback listeners only (127.0.0.1 and/or ::1: nothing is opened to the network);
/// any other gets the wildcard: "::" (on Linux it takes IPv4 too unless net.ipv6.bindv6only is 1)
/// plus "0.0.0.0" for IPv4, which may then be refused as already covered.
struct ReplyHost {
  std::string host;
  bool required; ///< false: "0.0.0.0" after "::", covered by it on a dual-stack system
};

std::vector<ReplyHost> reply_listen_hosts(const ServerHostFamilies& families) {
  std::vector<ReplyHost> hosts;
  if (families.loopback_only) {
    if (families.ipv4) {
      hosts.push_back({"127.0.0.1", true});
    }
    if (families.ipv6) {
      hosts.push_back({"::1", true});
    }
    return hosts;
  }
  if (families.ipv6) {
    hosts.push_back({"::", true});
  }
  if (families.ipv4) {
    hosts.push_back({"0.0.0.0", !families.ipv6});
  }
  return hosts;
}

} // namespace

Client::Client(ClientOptions options) : m_options{std::move(options)} {
  for (const std::size_t size : m_options.sizes) {
    m_max_size = std::max(m_max_size, size);
  }
  // Buffered mode packs into buffers of buffer_size (or one message per buffer when larger).
  m_pool_buffer_size = std::max(m_options.buffer_size, m_max_size);
  m_pool_buffers =
      m_options.buffers != 0
          ? m_options.buffers
          : std::clamp<std::size_t>(std::size_t{2048} / std::max<std::size_t>(m_options.connections, 1), 4, 64);
  m_payload.assign(m_max_size, 0);
  for (std::size_t i = 0; i < m_payload.size(); ++i) {
    m_payload[i] = static_cast<std::uint8_t>(i * 131U + 7U);
  }
}

Client::~Client() {
  stop();
}

std::vector<EndPointAddress> Client::data_addresses() const {
  std::vector<EndPointAddress> addresses;
  if (m_options.connections == 1) {
    addresses.emplace_back(m_options.server_host, m_options.server_port);
    return addresses;
  }
  // One send endpoint per address: connection i goes to the i-th address from the given one (on
  // loopback, 127.0.0.1, 127.0.0.2, ...; the server listens on 0.0.0.0 or :: to accept them all).
  in_addr base{};
  in6_addr base6{};
  const bool ipv4 = inet_pton(AF_INET, m_options.server_host.c_str(), &base) == 1;
  if (!ipv4 && inet_pton(AF_INET6, m_options.server_host.c_str(), &base6) != 1) {
    throw std::runtime_error("--connections " + std::to_string(m_options.connections) +
                             " needs an IP address literal of the server (connection i goes to that address + i), "
                             "not '" +
                             m_options.server_host + "'");
  }
  for (std::size_t i = 0; i < m_options.connections; ++i) {
    char text[INET6_ADDRSTRLEN];
    if (ipv4) {
      in_addr address{};
      address.s_addr = htonl(ntohl(base.s_addr) + static_cast<std::uint32_t>(i));
      inet_ntop(AF_INET, &address, text, sizeof(text));
    } else {
      // The last 32 bits count up (fd00::1, fd00::2, ...): each must be an address of the server.
      in6_addr address = base6;
      std::uint32_t low = 0;
      std::memcpy(&low, &address.s6_addr[12], sizeof(low));
      low = htonl(ntohl(low) + static_cast<std::uint32_t>(i));
      std::memcpy(&address.s6_addr[12], &low, sizeof(low));
      inet_ntop(AF_INET6, &address, text, sizeof(text));
    }
    addresses.emplace_back(text, m_options.server_port);
  }
  return addresses;
}

void Client::start() {
  m_loop = std::make_shared<EpollEventLoop>();
  NetworkConfig config = make_config(m_options.backend);
  config.max_unsent_bytes = m_options.max_unsent_bytes;
  config.on_data_cb = [this](std::span<const std::uint8_t> data) { on_data(data); };
  config.on_connection_established_cb = [this](const EndPointAddress& address) { on_established(address); };
  config.on_connection_closed_cb = [this](const EndPointAddress& address, const std::vector<std::uint64_t>&) {
    on_closed(address);
  };
  config.on_connection_refused_cb = [this](const EndPointAddress& address) { on_refused(address); };
  config.on_send_completed_cb = [this](const EndPointAddress&, std::uint64_t) {
    // Only the loop thread writes the counter: a plain load and store, no locked instruction.
    m_completions.store(m_completions.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  };
  if (m_options.backend.threads == ThreadSafetyModel::UNSAFE) {
    // The loop-thread sender resumes when an endpoint that refused it (a send, or get_buffer) has
    // room or a buffer again: no timer, no polling. Each refusal arms the notice of its endpoint,
    // so a pump that moved nothing has armed one for every connection it tried.
    config.on_send_space_cb = [this](const EndPointAddress&) {
      if (m_waiting_for_space) {
        m_waiting_for_space = false;
        on_pump_signal();
      }
    };
  }
  m_backend = NetworkBackend::create(m_options.backend.backend, config, m_loop);

  m_task_signal = m_loop->create_signal([this] {
    std::vector<std::function<void()>> tasks;
    {
      const std::lock_guard lock(m_mutex);
      tasks.swap(m_tasks);
    }
    for (auto& task : tasks) {
      task();
    }
  });
  m_pump_signal = m_loop->create_signal([this] { on_pump_signal(); });
  m_progress_enabled = !m_options.quiet && isatty(STDERR_FILENO) == 1;
  if (m_progress_enabled) {
    m_progress_timer = m_loop->create_timer([this] { on_progress_timer(); });
  }

  // The reply listener: where the server sends ready, pongs and results.
  ConnectionParametersRecv receive;
  receive.buf_size = std::max({m_max_size, m_pool_buffer_size, std::size_t{64} << 10U});
  receive.num_buf = 16;
  open_reply_listeners(receive);

  ConnectionParameters parameters;
  if (m_options.mode == SendMode::Buffered) {
    parameters.buf_size = m_pool_buffer_size;
    parameters.num_buf = m_pool_buffers;
  } else if (m_options.mode == SendMode::ZeroCopy) {
    parameters.mr_start = m_payload.data();
    parameters.mr_size = m_payload.size();
  }
  const std::vector<EndPointAddress> addresses = data_addresses();
  m_connections.reserve(addresses.size());
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    Connection connection{addresses[i]};
    connection.index = static_cast<std::uint32_t>(i);
    m_connections.push_back(connection);
    m_connection_index.emplace(addresses[i], i);
  }

  m_loop_thread = std::thread([this] { m_loop->run(); });
  // In UNSAFE mode the endpoints are opened on the loop thread like every later call.
  run_in_sender_context([&] {
    for (const Connection& connection : m_connections) {
      m_backend->open_send_endpoint(connection.address, parameters);
    }
  });
  wait_for("the data connections to be established", kControlTimeout,
           [this] { return m_established == m_connections.size(); });
}

void Client::open_reply_listeners(const ConnectionParametersRecv& receive) {
  const std::vector<ReplyHost> hosts = reply_listen_hosts(server_host_families(m_options.server_host));
  // The first listener picks a free port; the others take the same one (the hello carries one
  // port). That port may be taken in the other family: then all start again on a new port.
  constexpr int kAttempts = 20;
  std::string last_error;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    std::vector<EndPointAddress> opened;
    bool complete = true;
    for (const ReplyHost& host : hosts) {
      const std::uint16_t port = opened.empty() ? 0 : opened.front().port();
      try {
        opened.push_back(m_backend->open_listen_endpoint(EndPointAddress(host.host, port), receive));
      } catch (const std::exception& error) {
        if (host.required || opened.empty()) {
          last_error = fmt::format("cannot listen on {} for the server's replies: {}",
                                   EndPointAddress(host.host, port).to_string(), error.what());
          complete = false;
          break;
        }
      }
    }
    if (complete) {
      m_reply_listens = std::move(opened);
      return;
    }
    for (const EndPointAddress& listening : opened) {
      m_backend->close_listen_endpoint(listening);
    }
  }
  throw std::runtime_error(last_error);
}

std::string Client::reply_listeners_text() const {
  std::string text;
  for (const EndPointAddress& listening : m_reply_listens) {
    text += (text.empty() ? "" : " and ") + listening.to_string();
  }
  return text;
}

void Client::stop() noexcept {
  if (m_loop_thread.joinable()) {
    m_loop->stop();
    m_loop_thread.join();
  }
  // The loop is not running: closing from this thread is allowed in either model.
  m_backend.reset();
  m_progress_timer.reset();
  m_pump_signal.reset();
  m_task_signal.reset();
}

void Client::run_in_sender_context(const std::function<void()>& task) {
  if (m_options.backend.threads == ThreadSafetyModel::SAFE) {
    task();
    return;
  }
  bool done = false;
  std::exception_ptr error;
  {
    const std::lock_guard lock(m_mutex);
    m_tasks.emplace_back([&] {
      try {
        task();
      } catch (...) {
        error = std::current_exception();
      }
      const std::lock_guard inner(m_mutex);
      done = true;
      m_changed.notify_all();
    });
  }
  m_task_signal.fire();
  std::unique_lock lock(m_mutex);
  if (!m_changed.wait_for(lock, kControlTimeout, [&] { return done; })) {
    throw std::runtime_error("the event loop did not run a task within " +
                             std::to_string(kControlTimeout.count() / 1000) + " s");
  }
  lock.unlock();
  if (error) {
    std::rethrow_exception(error);
  }
}

void Client::wait_for(const char* what, std::chrono::milliseconds timeout, const std::function<bool()>& done) {
  std::unique_lock lock(m_mutex);
  const bool ok = m_changed.wait_for(lock, timeout, [&] { return done() || !m_failure.empty(); });
  if (!m_failure.empty()) {
    throw std::runtime_error(m_failure);
  }
  if (!ok) {
    throw std::runtime_error(fmt::format("timed out after {} s waiting for {}", timeout.count() / 1000, what));
  }
}

std::vector<RunResult> Client::run_all() {
  start();
  std::vector<RunResult> results;
  std::uint32_t run_id = 0;
  for (const std::size_t size : m_options.sizes) {
    {
      const std::lock_guard lock(m_mutex);
      m_run_id_started = run_id + 1;
    }
    results.push_back(run_one(size, ++run_id));
    if (!results.back().error.empty()) {
      break; // a failed or timed-out run leaves the connections in an unknown state
    }
  }
  stop();
  return results;
}

void Client::prepare_run(std::size_t size, std::uint32_t run_id) {
  m_run_id = run_id;
  m_size = size;
  m_buffer_limit = std::max(m_options.buffer_size, size);
  m_duration_mode = !m_options.messages.has_value();
  const std::uint64_t total = m_options.messages.value_or(0);
  const bool latency = m_options.test == TestKind::Latency;
  for (Connection& connection : m_connections) {
    connection.next_sequence = 0;
    connection.buffer = nullptr;
    if (latency) {
      connection.phase = Phase::Done;
      connection.quota = 0;
    } else {
      connection.phase = Phase::Sending;
      connection.quota = total / m_connections.size() + (connection.index < total % m_connections.size() ? 1 : 0);
      if (!m_duration_mode && connection.quota == 0) {
        connection.phase = Phase::Flushing;
      }
    }
  }
  m_cursor = 0;
  m_sending_connections = static_cast<std::size_t>(std::count_if(
      m_connections.begin(), m_connections.end(), [](const Connection& c) { return c.phase == Phase::Sending; }));
  m_done_connections = 0;
  m_started = false;
  m_data_finished = false;
  m_warmed = false;
  m_connections_started = latency ? m_connections.size() : 0;
  m_warm_count = m_duration_mode ? 0
                                 : std::max<std::uint64_t>(1, static_cast<std::uint64_t>(static_cast<double>(total) *
                                                                                         m_options.warmup_fraction));
  m_sent.store(0);
  m_no_resources = 0;
  m_completions.store(0);
  m_waiting_for_space = false;
  m_pings_sent = 0;
  m_pings_wanted = latency ? total : 0;
  m_pings_warmup = m_warm_count;
  m_round_trips_ns.clear();
  m_round_trip_capacity = latency ? (m_duration_mode ? kMaxRoundTripSamples : static_cast<std::size_t>(total)) : 0;
  m_round_trips_ns.reserve(m_round_trip_capacity);
  m_pongs.store(0);
  const std::lock_guard lock(m_mutex);
  m_receiver_figures.reset();
  m_sending_finished = false;
}

RunResult Client::run_one(std::size_t size, std::uint32_t run_id) {
  RunResult result;
  result.size = size;
  result.test = m_options.test;
  result.mode = m_options.mode;
  result.connections = m_connections.size();
  try {
    if (size < kMinMessageSize) {
      throw std::runtime_error(fmt::format("message size {} is below the minimum of {} bytes", size, kMinMessageSize));
    }
    // Run state belongs to the sender context: the loop thread in UNSAFE mode.
    {
      const std::lock_guard lock(m_mutex);
      m_awaiting_ready_run = run_id;
    }
    run_in_sender_context([this, size, run_id] {
      prepare_run(size, run_id);
      send_hellos();
    });
    const std::string ready_wait =
        fmt::format("the server to be ready: its reply connection to this client's listener {} (the server connects "
                    "to the address it sees this client's data connection come from; is it reachable from there?)",
                    reply_listeners_text());
    wait_for(ready_wait.c_str(), kReadyTimeout, [this, run_id] { return m_ready_run == run_id; });
    {
      const std::lock_guard lock(m_mutex);
      m_awaiting_ready_run = 0;
    }
    if (m_progress_enabled) {
      m_progress_start_ns.store(Clock::now().time_since_epoch().count());
      m_progress_size.store(size);
      m_progress_active.store(true);
      m_progress_timer.start(std::chrono::milliseconds{250});
    }
    if (m_options.test == TestKind::Throughput) {
      run_throughput();
    } else {
      run_latency();
    }
    if (m_progress_enabled) {
      m_progress_active.store(false);
      m_progress_timer.stop();
      std::cerr << "\r\033[K" << std::flush;
    }
    wait_for("the receiver's result", kControlTimeout, [this, run_id] { return m_result_run == run_id; });
    finish_result(result);
  } catch (const std::exception& error) {
    if (m_progress_enabled) {
      m_progress_active.store(false);
      m_progress_timer.stop();
      std::cerr << "\r\033[K" << std::flush;
    }
    result.error = error.what();
    finish_result(result);
  }
  return result;
}

void Client::finish_result(RunResult& result) {
  const std::lock_guard lock(m_mutex);
  result.sender.messages = m_sent.load();
  result.sender.bytes = result.sender.messages * m_size;
  result.sender.seconds = m_started ? std::chrono::duration<double>(m_last_send - m_first_send).count() : 0.0;
  result.sender.no_resources = m_no_resources;
  result.sender.completions = m_completions.load();
  if (m_warmed && result.sender.messages > m_sent_at_warm && m_data_finished) {
    result.sender.allocations_per_message = static_cast<double>(m_allocations_at_end - m_allocations_at_warm) /
                                            static_cast<double>(result.sender.messages - m_sent_at_warm);
  }
  if (m_receiver_figures) {
    result.receiver = *m_receiver_figures;
  }
  if (m_options.test == TestKind::Latency) {
    result.latency = summarize_round_trips(m_round_trips_ns);
  }
}

void Client::send_hellos() {
  HelloBody hello;
  hello.run_id = m_run_id;
  hello.connections = static_cast<std::uint32_t>(m_connections.size());
  hello.message_size = m_size;
  hello.expected_messages = m_options.messages.value_or(0);
  hello.duration_s = m_options.duration_s;
  hello.warmup_fraction = m_options.warmup_fraction;
  hello.reply_port = m_reply_listens.front().port();
  hello.test = m_options.test;
  hello.mode = m_options.mode;
  std::uint8_t message[kHelloMessageSize];
  for (Connection& connection : m_connections) {
    write_message(message, WireHeader{kWireMagic, MessageKind::Hello, 0, connection.index, 0}, hello);
    // Control messages are few: retry on backpressure with a pause instead of a queue.
    NetioStatus status = send_control(connection, message);
    for (int attempt = 0; status == NetioStatus::NO_RESOURCES && attempt < 10000; ++attempt) {
      std::this_thread::sleep_for(std::chrono::microseconds{100});
      status = send_control(connection, message);
    }
    if (status != NetioStatus::OK) {
      throw std::runtime_error(fmt::format("sending the hello on connection {} to {} failed: {}", connection.index,
                                           connection.address.to_string(), to_string(status)));
    }
  }
}

void Client::run_throughput() {
  m_deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(m_options.duration_s));
  const auto wait_limit = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::duration<double>(m_duration_mode ? m_options.duration_s : 0.0)) +
                          std::chrono::milliseconds{600000};
  if (m_options.backend.threads == ThreadSafetyModel::UNSAFE) {
    m_pump_signal.fire();
    wait_for("the sender to finish", wait_limit, [this] { return m_sending_finished; });
    return;
  }
  // SAFE: this application thread sends while the loop thread runs the I/O. When nothing moved,
  // it blocks in the backend until the connection that refused last has room or a free buffer
  // (with several connections only briefly: another one may have room first).
  const auto give_up = Clock::now() + wait_limit;
  const std::chrono::milliseconds wait_step{m_connections.size() > 1 ? 1 : 100};
  while (m_done_connections < m_connections.size()) {
    if (m_failed.load(std::memory_order_relaxed)) {
      wait_for("the sender to finish", std::chrono::milliseconds{0}, [] { return true; });
    }
    m_refused = nullptr;
    if (!pump()) {
      if (Clock::now() > give_up) {
        throw std::runtime_error("the sender made no progress before the time limit");
      }
      if (m_refused == nullptr) {
        std::this_thread::yield(); // nothing was refused, yet nothing moved: look again
      } else {
        wait_after_refusal(*m_refused, m_refused_size, m_refused_buffer, wait_step);
      }
    }
  }
}

void Client::wait_after_refusal(const Connection& connection, std::size_t size, bool no_buffer,
                                std::chrono::milliseconds timeout) {
  // CLOSED or TIMED_OUT: the next attempt reports the failed send or tries again.
  if (no_buffer) {
    static_cast<void>(m_backend->wait_for_buffer(connection.address, timeout));
  } else {
    static_cast<void>(m_backend->wait_for_send_space(connection.address, size, timeout));
  }
}

void Client::note_sent(std::uint64_t count) {
  const std::uint64_t sent = m_sent.load(std::memory_order_relaxed) + count;
  m_sent.store(sent, std::memory_order_relaxed);
  if (!m_warmed && m_warm_count != 0 && sent >= m_warm_count && m_connections_started == m_connections.size()) {
    m_warmed = true;
    m_allocations_at_warm = allocation_count();
    m_sent_at_warm = sent;
  }
}

void Client::note_data_finished() {
  m_data_finished = true;
  m_last_send = Clock::now();
  m_allocations_at_end = allocation_count();
}

NetioStatus Client::send_data_message(Connection& connection, MessageKind kind) {
  const WireHeader header{kWireMagic, kind, 0, connection.index, connection.next_sequence};
  const std::size_t payload = m_size - sizeof(WireHeader);
  NetioStatus status = NetioStatus::OK;
  switch (m_options.mode) {
  case SendMode::Copy:
    status = m_backend->send_data_copy(connection.address, std::span<const std::uint8_t>(m_payload.data(), payload),
                                       header_bytes(header), connection.next_sequence);
    break;
  case SendMode::ZeroCopy:
    status = m_backend->send_data(connection.address, std::span<std::uint8_t>(m_payload.data(), payload),
                                  header_bytes(header), connection.next_sequence);
    break;
  case SendMode::Buffered: {
    if (connection.buffer != nullptr && connection.buffer->pos() + m_size > m_buffer_limit) {
      status = m_backend->send_buffer(connection.address, connection.buffer);
      if (status != NetioStatus::OK) {
        return status; // the full buffer stays with us; retried next time
      }
      connection.buffer = nullptr;
    }
    if (connection.buffer == nullptr) {
      connection.buffer = m_backend->get_buffer(connection.address);
      if (connection.buffer == nullptr) {
        m_no_buffer = true; // for the wait: a free buffer, not room
        return NetioStatus::NO_RESOURCES;
      }
      connection.buffer->set_pos(0);
    }
    std::uint8_t* out = connection.buffer->data().data() + connection.buffer->pos();
    std::memcpy(out, &header, sizeof(header));
    std::memcpy(out + sizeof(header), m_payload.data(), payload);
    connection.buffer->set_pos(connection.buffer->pos() + m_size);
    // A ping travels alone in its buffer, at once.
    if (kind == MessageKind::Ping) {
      status = m_backend->send_buffer(connection.address, connection.buffer);
      if (status != NetioStatus::OK) {
        connection.buffer->set_pos(connection.buffer->pos() - m_size);
        return status;
      }
      connection.buffer = nullptr;
    }
    break;
  }
  }
  if (status == NetioStatus::OK) {
    ++connection.next_sequence;
  }
  return status;
}

NetioStatus Client::flush_buffer(Connection& connection) {
  if (connection.buffer == nullptr || connection.buffer->pos() == 0) {
    return NetioStatus::OK;
  }
  const NetioStatus status = m_backend->send_buffer(connection.address, connection.buffer);
  if (status == NetioStatus::OK) {
    connection.buffer = nullptr;
  }
  return status;
}

NetioStatus Client::send_control(Connection& connection, std::span<const std::uint8_t> message) {
  if (m_options.mode != SendMode::Buffered) {
    return m_backend->send_data_copy(connection.address, message, {}, std::numeric_limits<std::uint64_t>::max());
  }
  NetworkBuffer* buffer = connection.buffer; // an empty buffer left over from the data phase
  if (buffer == nullptr || buffer->pos() != 0) {
    if (buffer != nullptr) {
      return NetioStatus::NO_RESOURCES; // flush first
    }
    buffer = m_backend->get_buffer(connection.address);
    if (buffer == nullptr) {
      m_no_buffer = true; // for the wait: a free buffer, not room
      return NetioStatus::NO_RESOURCES;
    }
  }
  buffer->set_pos(0);
  if (!buffer->append(message)) {
    connection.buffer = buffer;
    return NetioStatus::MESSAGE_TOO_LARGE;
  }
  const NetioStatus status = m_backend->send_buffer(connection.address, buffer);
  connection.buffer = status == NetioStatus::OK ? nullptr : buffer;
  if (status != NetioStatus::OK) {
    buffer->set_pos(0);
  }
  return status;
}

bool Client::pump() {
  if (!m_started) {
    m_started = true;
    m_first_send = Clock::now();
  }
  if (m_duration_mode && m_sending_connections > 0 && Clock::now() >= m_deadline) {
    for (Connection& connection : m_connections) {
      if (connection.phase == Phase::Sending) {
        connection.phase = Phase::Flushing;
      }
    }
    m_sending_connections = 0;
    note_data_finished();
  }
  // Warm-up lasts at least until every connection has sent once (first bursts grow queues).
  if (m_duration_mode && !m_warmed && m_connections_started == m_connections.size() &&
      Clock::now() - m_first_send >= std::chrono::duration<double>(m_options.duration_s * m_options.warmup_fraction)) {
    m_warmed = true;
    m_allocations_at_warm = allocation_count();
    m_sent_at_warm = m_sent.load(std::memory_order_relaxed);
  }

  const std::uint64_t budget_limit = std::clamp<std::uint64_t>(kBytesPerPump / m_size, 1, kMessagesPerPump);
  std::uint64_t budget = budget_limit;
  bool progress = false;
  const std::size_t count = m_connections.size();
  for (std::size_t visited = 0; visited < count && budget > 0; ++visited) {
    Connection& connection = m_connections[m_cursor];
    m_cursor = m_cursor + 1 == count ? 0 : m_cursor + 1;
    if (connection.phase == Phase::Sending) {
      std::uint64_t burst = std::min(budget, kBurstPerConnection);
      if (!m_duration_mode) {
        burst = std::min(burst, connection.quota);
      }
      std::uint64_t sent = 0;
      for (; sent < burst; ++sent) {
        const NetioStatus status = send_data_message(connection, MessageKind::Data);
        if (status != NetioStatus::OK) [[unlikely]] {
          if (status == NetioStatus::NO_RESOURCES) {
            ++m_no_resources;
            note_refused(connection, m_size);
            break;
          }
          fail(fmt::format("sending a {}-byte message on connection {} to {} failed: {}", m_size, connection.index,
                           connection.address.to_string(), to_string(status)));
          return false;
        }
      }
      if (sent > 0) {
        if (connection.next_sequence == sent) {
          ++m_connections_started; // its first burst
        }
        progress = true;
        budget -= sent;
        note_sent(sent);
        if (!m_duration_mode) {
          connection.quota -= sent;
          if (connection.quota == 0) {
            connection.phase = Phase::Flushing;
            if (--m_sending_connections == 0) {
              note_data_finished();
            }
          }
        }
      }
    }
    if (connection.phase == Phase::Flushing) {
      const NetioStatus status = flush_buffer(connection);
      if (status == NetioStatus::OK) {
        connection.phase = Phase::Ending;
        progress = true;
      } else if (status == NetioStatus::NO_RESOURCES) {
        note_refused(connection, m_buffer_limit);
      } else if (status != NetioStatus::NO_RESOURCES) {
        fail(fmt::format("sending the last buffer on connection {} failed: {}", connection.index, to_string(status)));
        return false;
      }
    }
    if (connection.phase == Phase::Ending) {
      std::uint8_t end[kEndMessageSize];
      write_message(end, WireHeader{kWireMagic, MessageKind::End, 0, connection.index, 0},
                    EndBody{m_run_id, 0, connection.next_sequence});
      const NetioStatus status = send_control(connection, end);
      if (status == NetioStatus::OK) {
        connection.phase = Phase::Done;
        ++m_done_connections;
        progress = true;
      } else if (status == NetioStatus::NO_RESOURCES) {
        note_refused(connection, kEndMessageSize);
      } else if (status != NetioStatus::NO_RESOURCES) {
        fail(fmt::format("sending the end message on connection {} failed: {}", connection.index, to_string(status)));
        return false;
      }
    }
  }
  return progress;
}

void Client::on_pump_signal() {
  if (m_failed.load(std::memory_order_relaxed) || m_options.test != TestKind::Throughput) {
    if (m_options.test == TestKind::Latency && m_ping_pending && !m_failed.load()) {
      send_next_ping(); // a ping refused for backpressure is retried from here
    }
    return;
  }
  if (m_done_connections == m_connections.size()) {
    return;
  }
  m_refused = nullptr;
  const bool progress = pump();
  if (m_done_connections == m_connections.size()) {
    const std::lock_guard lock(m_mutex);
    m_sending_finished = true;
    m_changed.notify_all();
    return;
  }
  if (m_failed.load(std::memory_order_relaxed)) {
    return;
  }
  if (progress) {
    // Through the loop, which lets the backend write and read between two pump calls.
    m_pump_signal.fire();
  } else if (m_refused == nullptr) {
    m_pump_signal.fire(); // nothing was refused, yet nothing moved: look again
  } else {
    m_waiting_for_space = true; // on_send_space_cb resumes (every refusal of this pump armed it)
  }
}

void Client::run_latency() {
  m_deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(m_options.duration_s));
  m_first_send = Clock::now();
  m_started = true;
  const auto wait_limit = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::duration<double>(m_duration_mode ? m_options.duration_s : 0.0)) +
                          std::chrono::milliseconds{600000};
  if (m_options.backend.threads == ThreadSafetyModel::UNSAFE) {
    run_in_sender_context([this] { send_next_ping(); });
    wait_for("the ping-pong to finish", wait_limit, [this] { return m_sending_finished; });
    return;
  }
  // SAFE: this thread sends each ping and sleeps until the loop thread has seen its pong.
  while (true) {
    const std::uint64_t expected = m_pings_sent;
    const bool more = m_duration_mode ? (Clock::now() < m_deadline && m_round_trips_ns.size() < m_round_trip_capacity)
                                      : m_pings_sent < m_pings_wanted;
    if (!more) {
      break;
    }
    m_ping_sent_at = Clock::now();
    while (!send_next_ping()) {
      if (m_failed.load()) {
        break;
      }
      wait_after_refusal(m_connections.front(), m_size, m_ping_refused_buffer, std::chrono::milliseconds{100});
    }
    std::uint64_t pongs = m_pongs.load(std::memory_order_acquire);
    while (pongs <= expected) {
      m_pongs.wait(pongs, std::memory_order_acquire);
      pongs = m_pongs.load(std::memory_order_acquire);
    }
    if (pongs == kFailedPongs) {
      wait_for("the ping-pong", std::chrono::milliseconds{0}, [] { return true; });
    }
    const auto now = Clock::now();
    if (expected >= m_pings_warmup || (m_duration_mode && m_warmed)) {
      m_round_trips_ns.push_back(static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(now - m_ping_sent_at).count()));
    }
    if (m_duration_mode && !m_warmed &&
        now - m_first_send >= std::chrono::duration<double>(m_options.duration_s * m_options.warmup_fraction)) {
      m_warmed = true;
      m_allocations_at_warm = allocation_count();
      m_sent_at_warm = m_pings_sent;
    }
  }
  note_data_finished();
  std::uint8_t end[kEndMessageSize];
  write_message(end, WireHeader{kWireMagic, MessageKind::End, 0, 0, 0}, EndBody{m_run_id, 0, m_pings_sent});
  NetioStatus status = send_control(m_connections.front(), end);
  for (int attempt = 0; status == NetioStatus::NO_RESOURCES && attempt < 10000; ++attempt) {
    std::this_thread::sleep_for(std::chrono::microseconds{100});
    status = send_control(m_connections.front(), end);
  }
  if (status != NetioStatus::OK) {
    throw std::runtime_error(fmt::format("sending the end message failed: {}", to_string(status)));
  }
}

bool Client::send_next_ping() {
  Connection& connection = m_connections.front();
  if (m_options.backend.threads == ThreadSafetyModel::UNSAFE) {
    m_ping_sent_at = Clock::now();
  }
  m_no_buffer = false;
  const NetioStatus status = send_data_message(connection, MessageKind::Ping);
  m_ping_pending = status == NetioStatus::NO_RESOURCES;
  m_ping_refused_buffer = m_no_buffer;
  m_no_buffer = false;
  if (status == NetioStatus::OK) {
    ++m_pings_sent;
    note_sent(1);
    return true;
  }
  if (status == NetioStatus::NO_RESOURCES) {
    ++m_no_resources;
    if (m_options.backend.threads == ThreadSafetyModel::UNSAFE) {
      m_waiting_for_space = true; // on_send_space_cb resumes through on_pump_signal
    }
    return false;
  }
  fail(fmt::format("sending a {}-byte ping failed: {}", m_size, to_string(status)));
  return false;
}

void Client::on_pong(const WireHeader& header) {
  if (m_options.backend.threads == ThreadSafetyModel::SAFE) {
    // The application thread measures the time when it wakes: that is what a SAFE user sees.
    m_pongs.store(header.sequence + 1, std::memory_order_release);
    m_pongs.notify_one();
    return;
  }
  const auto now = Clock::now();
  const std::uint64_t sequence = header.sequence;
  const bool warm = m_duration_mode ? m_warmed : sequence >= m_pings_warmup;
  if (warm && m_round_trips_ns.size() < m_round_trip_capacity) {
    m_round_trips_ns.push_back(
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now - m_ping_sent_at).count()));
  }
  if (m_duration_mode && !m_warmed &&
      now - m_first_send >= std::chrono::duration<double>(m_options.duration_s * m_options.warmup_fraction)) {
    m_warmed = true;
    m_allocations_at_warm = allocation_count();
    m_sent_at_warm = m_pings_sent;
  }
  const bool more = m_duration_mode ? (now < m_deadline && m_round_trips_ns.size() < m_round_trip_capacity)
                                    : m_pings_sent < m_pings_wanted;
  if (more) {
    send_next_ping();
    return;
  }
  note_data_finished();
  std::uint8_t end[kEndMessageSize];
  write_message(end, WireHeader{kWireMagic, MessageKind::End, 0, 0, 0}, EndBody{m_run_id, 0, m_pings_sent});
  const NetioStatus status = send_control(m_connections.front(), end);
  if (status != NetioStatus::OK) {
    fail(fmt::format("sending the end message failed: {}", to_string(status)));
    return;
  }
  const std::lock_guard lock(m_mutex);
  m_sending_finished = true;
  m_changed.notify_all();
}

void Client::on_data(std::span<const std::uint8_t> message) {
  if (message.size() < sizeof(WireHeader)) {
    fail(fmt::format("the server sent a message of {} bytes, shorter than a benchmark header", message.size()));
    return;
  }
  const WireHeader header = read_header(message.data());
  if (header.magic != kWireMagic) {
    fail("the server sent a message that is not a benchmark message (bad magic)");
    return;
  }
  switch (header.kind) {
  case MessageKind::Ping: on_pong(header); return;
  case MessageKind::Ready: {
    ReadyBody ready;
    if (read_body(message, ready)) {
      const std::lock_guard lock(m_mutex);
      m_ready_run = ready.run_id;
      m_changed.notify_all();
    }
    return;
  }
  case MessageKind::Result: {
    try {
      const auto* text = reinterpret_cast<const char*>(message.data() + sizeof(WireHeader));
      const nlohmann::json json = nlohmann::json::parse(text, text + (message.size() - sizeof(WireHeader)));
      ReceiverFigures figures = receiver_figures_from_json(json);
      const std::lock_guard lock(m_mutex);
      m_receiver_figures = figures;
      m_result_run = static_cast<std::uint32_t>(header.sequence);
      m_changed.notify_all();
    } catch (const std::exception& error) {
      fail(std::string("the server's result cannot be read: ") + error.what());
    }
    return;
  }
  case MessageKind::Hello:
  case MessageKind::Data:
  case MessageKind::End: break;
  }
  fail(fmt::format("the server sent an unexpected message kind {}", static_cast<int>(header.kind)));
}

void Client::on_established(const EndPointAddress& address) {
  if (m_connection_index.count(address) == 0) {
    return; // the server's reply connection into our listener
  }
  const std::lock_guard lock(m_mutex);
  ++m_established;
  m_changed.notify_all();
}

void Client::on_closed(const EndPointAddress& address) {
  if (m_connection_index.count(address) != 0) {
    bool awaiting_ready = false;
    {
      const std::lock_guard lock(m_mutex);
      awaiting_ready = m_awaiting_ready_run != 0 && m_ready_run != m_awaiting_ready_run;
    }
    if (awaiting_ready) {
      // The server closes the data connections when its reply connection cannot connect.
      fail(fmt::format("the server {} closed the data connection before it was ready: its reply connection could "
                       "not reach this client's listener {} (it connects to the address it sees this client's data "
                       "connection come from; the server's output says why)",
                       address.to_string(), reply_listeners_text()));
      return;
    }
    fail(fmt::format("the data connection to {} was closed by the server or lost", address.to_string()));
    return;
  }
  bool run_open = false;
  {
    const std::lock_guard lock(m_mutex);
    run_open = m_result_run != m_run_id_started;
  }
  if (run_open) {
    fail(fmt::format("the server's reply connection from {} was closed during a run", address.to_string()));
  }
}

void Client::on_refused(const EndPointAddress& address) {
  fail(fmt::format("the connection to {} was refused (is netio3-bench server running there, with the same "
                   "--backend and --provider?)",
                   address.to_string()));
}

void Client::fail(std::string reason) {
  {
    const std::lock_guard lock(m_mutex);
    if (m_failure.empty()) {
      m_failure = std::move(reason);
    }
    m_changed.notify_all();
  }
  m_failed.store(true);
  m_pongs.store(kFailedPongs, std::memory_order_release);
  m_pongs.notify_all();
}

void Client::on_progress_timer() {
  if (!m_progress_active.load()) {
    return;
  }
  const std::uint64_t sent = m_sent.load(std::memory_order_relaxed);
  const double seconds =
      std::chrono::duration<double>(Clock::now().time_since_epoch() - Clock::duration(m_progress_start_ns.load()))
          .count();
  // Formatted into a stack buffer: the progress line must not count as an allocation.
  char line[160];
  const auto written =
      fmt::format_to_n(line, sizeof(line) - 1, "\r{} B: {} {} sent, {:.2f} M/s, {:.1f} s\033[K", m_progress_size.load(),
                       sent, m_options.test == TestKind::Latency ? "pings" : "messages",
                       seconds > 0.0 ? static_cast<double>(sent) / seconds / 1e6 : 0.0, seconds);
  const auto size = std::min(written.size, sizeof(line) - 1);
  [[maybe_unused]] const ssize_t ignored = ::write(STDERR_FILENO, line, size);
}

} // namespace netio3::bench
