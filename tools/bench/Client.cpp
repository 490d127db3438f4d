// netio3-bench client: the runs (hellos, one run per size, results), latency ping-pong and the
// callbacks; set-up in ClientSetup.cpp, the throughput senders in ClientSending.cpp.

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

/// Round-trip samples kept at most in duration mode (8 bytes each).
constexpr std::size_t kMaxRoundTripSamples = std::size_t{4} << 20U;
constexpr std::uint64_t kFailedPongs = std::numeric_limits<std::uint64_t>::max();

/// How long the server may take to be ready after the hellos: it opens its reply connection
/// (NetworkConfig::connect_timeout of the server, kServerReplyConnectTimeout) and sends the ready.
constexpr std::chrono::milliseconds kReadyTimeout{15000};

/// What getaddrinfo says about the server's host: which families it has, and whether every
/// address is a loopback one.
} // namespace

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
