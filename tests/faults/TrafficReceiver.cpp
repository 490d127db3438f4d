#include "TrafficReceiver.hpp"

#include <chrono>

namespace netio3::faults {

TrafficReceiver::TrafficReceiver(ReceiverOptions options)
  : m_options{std::move(options)}, m_loop{std::make_shared<EpollEventLoop>()} {
  NetworkConfig config;
  config.mode = NetworkMode::TCP;
  config.thread_safety = m_options.thread_safety;
  config.provider = m_options.provider;
  config.peer_timeout = m_options.peer_timeout;
  config.connect_timeout = m_options.connect_timeout;
  config.max_connections_per_listener = m_options.max_connections;
  config.on_data_from_cb = [this](const EndPointAddress& remote, std::span<const std::uint8_t> data) {
    on_data(remote, data);
  };
  config.on_connection_established_cb = [this](const EndPointAddress& remote) {
    const std::lock_guard lock(m_mutex);
    ++m_counts.established;
    if (!m_connections.emplace(remote, Connection{}).second) {
      ++m_counts.protocol_errors; // established twice without a close in between
    }
  };
  config.on_connection_closed_cb = [this](const EndPointAddress& remote, const std::vector<std::uint64_t>& keys) {
    const std::lock_guard lock(m_mutex);
    ++m_counts.closed;
    if (!keys.empty()) {
      ++m_counts.protocol_errors; // a receiving connection has no send keys
    }
    const auto found = m_connections.find(remote);
    if (found == m_connections.end()) {
      ++m_counts.protocol_errors; // closed without being established, or twice
      return;
    }
    if (found->second.has_stream) {
      m_closed_streams.insert(found->second.stream);
      ++m_counts.closed_with_data;
    }
    m_connections.erase(found);
  };
  config.on_connection_request_cb = [this](const EndPointAddress& remote) {
    const bool accept = !m_options.admission || m_options.admission(remote);
    const std::lock_guard lock(m_mutex);
    ++m_counts.requests;
    m_counts.rejected += accept ? 0U : 1U;
    m_requested.push_back(remote);
    return accept;
  };
  config.on_connection_refused_cb = [this](const EndPointAddress&) {
    const std::lock_guard lock(m_mutex);
    ++m_counts.protocol_errors; // a receiver opens no send endpoints
  };
  config.on_send_completed_cb = [this](const EndPointAddress&, std::uint64_t) {
    const std::lock_guard lock(m_mutex);
    ++m_counts.protocol_errors;
  };
  m_backend = NetworkBackend::create(m_options.type, config, m_loop);
  ConnectionParametersRecv params;
  params.buf_size = m_options.max_message;
  params.num_buf = m_options.num_buf;
  m_address = m_backend->open_listen_endpoint(m_options.listen, params);
  m_thread = std::thread([this] { m_loop->run(); });
}

TrafficReceiver::~TrafficReceiver() {
  release_stall();
  stop();
  m_backend.reset();
}

void TrafficReceiver::stop() {
  if (m_stopped.exchange(true)) {
    return;
  }
  release_stall();
  // A stop() that reaches the loop before run() started is not remembered: repeat until it ends.
  std::atomic<bool> done{false};
  std::thread stopper([this, &done] {
    while (!done.load()) {
      m_loop->stop();
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
  });
  m_thread.join();
  done.store(true);
  stopper.join();
}

void TrafficReceiver::on_data(const EndPointAddress& remote, std::span<const std::uint8_t> data) {
  std::uint64_t count = 0;
  {
    const std::lock_guard lock(m_mutex);
    RecordHeader header;
    const auto verdict = m_verifier.check(data, header);
    auto found = m_connections.find(remote);
    if (found == m_connections.end()) {
      ++m_counts.protocol_errors; // data before on_connection_established_cb or after the close
    } else if (verdict != Verdict::corrupted && !found->second.has_stream) {
      found->second.has_stream = true;
      found->second.stream = header.stream;
    }
    count = ++m_messages;
  }
  if (m_options.stall_after != 0 && count == m_options.stall_after) {
    std::unique_lock lock(m_stall_mutex);
    m_stall_cv.wait(lock, [this] { return m_stall_released; });
  }
}

ReceiverSnapshot TrafficReceiver::snapshot() const {
  const std::lock_guard lock(m_mutex);
  ReceiverSnapshot result = m_counts;
  result.totals = m_verifier.totals();
  result.first_error = m_verifier.first_error();
  result.open_connections = m_connections.size();
  return result;
}

StreamState TrafficReceiver::stream(std::uint16_t stream) const {
  const std::lock_guard lock(m_mutex);
  return m_verifier.stream(stream);
}

bool TrafficReceiver::stream_connection_closed(std::uint16_t stream) const {
  const std::lock_guard lock(m_mutex);
  return m_closed_streams.count(stream) != 0;
}

std::vector<EndPointAddress> TrafficReceiver::requested_remotes() const {
  const std::lock_guard lock(m_mutex);
  return m_requested;
}

std::set<EndPointAddress> TrafficReceiver::open_remotes() const {
  const std::lock_guard lock(m_mutex);
  std::set<EndPointAddress> result;
  for (const auto& [remote, connection] : m_connections) {
    result.insert(remote);
  }
  return result;
}

void TrafficReceiver::release_stall() {
  {
    const std::lock_guard lock(m_stall_mutex);
    m_stall_released = true;
  }
  m_stall_cv.notify_all();
}

void TrafficReceiver::close_listener() {
  m_backend->close_listen_endpoint(m_address);
}

} // namespace netio3::faults
