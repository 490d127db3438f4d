#include "frontend/SendEngine.hpp"

#include <algorithm>
#include <mutex>

#include "core/Logging.hpp"

namespace netio3::detail {

namespace {

using Clock = std::chrono::steady_clock;

/// How soon a channel whose buffers or sends the backend refused is tried again (the backend
/// reports no completion for buffered sends, so the engine must look again by itself; user sends
/// and ZERO_COPY completions try as well, so this only matters when those stop).
constexpr std::chrono::microseconds retry_interval{100};

std::span<std::uint8_t> writable(std::span<const std::uint8_t> data) noexcept {
  // The backend's zero-copy send takes a mutable span but never writes through it.
  return {const_cast<std::uint8_t*>(data.data()), data.size()}; // NOLINT(cppcoreguidelines-pro-type-const-cast)
}

} // namespace

SendEngine::SendEngine(SendEngineConfig config, std::shared_ptr<BaseEventLoop> loop, SendEngineEvents events)
  : m_config{std::move(config)}, m_loop{std::move(loop)}, m_events{std::move(events)}, m_mutex{
                                                                                           m_config.thread_safety ==
                                                                                           ThreadSafetyModel::SAFE} {
  if (!m_loop) {
    throw std::invalid_argument(m_config.owner + ": the event loop must not be null");
  }
  validate_config();
  m_buffered = m_config.method == SendMethod::BUFFERED;
  NetworkConfig network;
  network.mode = m_config.backend_mode;
  network.thread_safety = m_config.thread_safety;
  network.provider = m_config.provider;
  network.max_unsent_bytes = m_config.max_unsent_bytes;
  network.connect_timeout = m_config.connect_timeout;
  network.peer_timeout = m_config.peer_timeout;
  network.on_connection_established_cb = [this](const EndPointAddress& address) { on_established(address); };
  network.on_connection_closed_cb = [this](const EndPointAddress& address, const std::vector<std::uint64_t>& keys) {
    on_closed(address, keys);
  };
  network.on_connection_refused_cb = [this](const EndPointAddress& address) { on_refused(address); };
  network.on_send_completed_cb = [this](const EndPointAddress& address, std::uint64_t key) {
    on_send_completed(address, key);
  };
  m_timer = m_loop->create_timer([this] { on_timer(); });
  m_signal = m_loop->create_signal([this] { on_signal(); });
  m_backend = NetworkBackend::create(m_config.backend_type, network, m_loop);
}

SendEngine::~SendEngine() {
  shut_down();
  // Timer and signal first (each reset waits for a running callback), then the backend, whose
  // destruction invokes no callback: afterwards nothing of ours runs on the loop.
  m_timer.reset();
  m_signal.reset();
  m_backend.reset();
}

void SendEngine::validate_config() const {
  const std::string& owner = m_config.owner;
  if (m_config.method != SendMethod::ZERO_COPY) {
    if (m_config.nbuffers == 0) {
      throw UnsupportedConfiguration(owner + ": nbuffers must be at least 1 for " +
                                     std::string{to_string(m_config.method)} + " sends");
    }
    if (m_config.buffersize <= BufferFormatter::max_overhead) {
      throw UnsupportedConfiguration(owner + ": buffersize " + std::to_string(m_config.buffersize) +
                                     " leaves no room for a message (each takes up to " +
                                     std::to_string(BufferFormatter::max_overhead) + " bytes besides its payload)");
    }
  }
  if (m_config.flush_interval.count() < 0) {
    throw UnsupportedConfiguration(owner + ": flush_interval must not be negative (got " +
                                   std::to_string(m_config.flush_interval.count()) + " us)");
  }
  if (m_config.method == SendMethod::ZERO_COPY && m_config.backend_type == NetworkType::LIBFABRIC &&
      (m_config.mr_start == nullptr || m_config.mr_size == 0)) {
    throw UnsupportedConfiguration(owner + ": ZERO_COPY over libfabric needs the registered region "
                                           "(mr_start and mr_size) in which every payload lies");
  }
}

// --- set-up -------------------------------------------------------------------------------------

void SendEngine::open(const EndPointAddress& address, std::size_t receive_limit, void* user) {
  {
    const std::lock_guard lock{m_mutex};
    if (m_channels.contains(address)) {
      throw SendEndpointAlreadyExists(m_config.owner + ": a connection to " + address.to_string() + " is open");
    }
    auto channel = std::make_unique<Channel>(
        address, m_config.method == SendMethod::ZERO_COPY ? std::size_t{1} : m_config.nbuffers,
        m_config.method == SendMethod::ZERO_COPY ? std::max<std::size_t>(m_config.zero_copy_queue, 1) : 1);
    channel->receive_limit = receive_limit;
    channel->user = user;
    m_channels.emplace(address, std::move(channel));
    m_last_found = nullptr;
  }
  ConnectionParameters params;
  if (m_config.method != SendMethod::ZERO_COPY) {
    params.buf_size = m_config.buffersize;
    params.num_buf = m_config.nbuffers;
  }
  params.mr_start = m_config.mr_start;
  params.mr_size = m_config.mr_size;
  try {
    m_backend->open_send_endpoint(address, params);
  } catch (...) {
    const std::lock_guard lock{m_mutex};
    (void)erase_channel(address);
    throw;
  }
}

void SendEngine::close(const EndPointAddress& address) {
  {
    const std::lock_guard lock{m_mutex};
    const auto found = m_channels.find(address);
    if (found == m_channels.end()) {
      throw UnknownSendEndpoint(m_config.owner + ": no connection to " + address.to_string());
    }
    // Out of the map at once, so that the address may be connected again when this returns (as
    // the backend allows); the backend reports this connection's close before anything of a new
    // one, and that report finds it here.
    Channel& channel = *found->second;
    m_flush_list.remove(channel);
    m_retry_list.remove(channel);
    if (m_events.erasing) {
      m_events.erasing(channel);
    }
    m_closing[address] = std::move(found->second);
    m_channels.erase(found);
    m_last_found = nullptr;
  }
  m_backend->close_send_endpoint(address);
}

void SendEngine::shut_down() noexcept {
  const std::lock_guard lock{m_mutex};
  m_shut_down = true;
}

// --- backend events (loop thread) ---------------------------------------------------------------

void SendEngine::on_established(const EndPointAddress& address) {
  {
    const std::lock_guard lock{m_mutex};
    if (m_shut_down) {
      return;
    }
  }
  if (m_events.established) {
    m_events.established(address);
  }
}

void SendEngine::on_closed(const EndPointAddress& address, const std::vector<std::uint64_t>& backend_keys) {
  std::vector<std::uint64_t> keys;
  {
    const std::lock_guard lock{m_mutex};
    if (m_shut_down) {
      return;
    }
    keys = erase_channel(address);
  }
  if (keys.empty()) {
    keys = backend_keys;
  } else {
    keys.insert(keys.begin(), backend_keys.begin(), backend_keys.end());
  }
  if (m_events.closed) {
    m_events.closed(address, keys);
  }
}

void SendEngine::on_refused(const EndPointAddress& address) {
  {
    const std::lock_guard lock{m_mutex};
    if (m_shut_down) {
      return;
    }
    (void)erase_channel(address);
  }
  if (m_events.refused) {
    m_events.refused(address);
  }
}

void SendEngine::on_send_completed(const EndPointAddress& address, std::uint64_t key) {
  {
    const std::lock_guard lock{m_mutex};
    if (m_shut_down) {
      return;
    }
    if (Channel* channel = find(address); channel != nullptr && !channel->queued.empty()) {
      (void)drain_zero_copy(*channel); // the completion made room in the backend
    }
  }
  if (m_events.send_completed) {
    m_events.send_completed(address, key);
  }
}

std::vector<std::uint64_t> SendEngine::erase_channel(const EndPointAddress& address) {
  std::vector<std::uint64_t> keys;
  if (const auto closing = m_closing.find(address); closing != m_closing.end()) {
    // Closed by close(): already out of every list and map.
    closing->second->queued.drain_into([&keys](const QueuedZeroCopy& send) { keys.push_back(send.key); });
    m_closing.erase(closing);
    return keys;
  }
  const auto found = m_channels.find(address);
  if (found == m_channels.end()) {
    return keys;
  }
  Channel& channel = *found->second;
  m_flush_list.remove(channel);
  m_retry_list.remove(channel);
  channel.queued.drain_into([&keys](const QueuedZeroCopy& send) { keys.push_back(send.key); });
  if (m_events.erasing) {
    m_events.erasing(channel);
  }
  m_channels.erase(found);
  m_last_found = nullptr;
  return keys;
}

// --- data path (lock held) ----------------------------------------------------------------------

Channel* SendEngine::find(const EndPointAddress& address) noexcept {
  if (m_last_found != nullptr && m_last_found->address == address) {
    return m_last_found;
  }
  const auto found = m_channels.find(address);
  if (found == m_channels.end()) {
    return nullptr;
  }
  m_last_found = found->second.get();
  return m_last_found;
}

NetioStatus SendEngine::reserve_new_buffer(Channel& channel, std::uint64_t tag, std::size_t payload_size,
                                           std::uint8_t status) {
  if (channel.broken) {
    return NetioStatus::FAILED;
  }
  if (channel.current != nullptr) {
    if (channel.formatter.fits(tag, payload_size, status)) {
      return NetioStatus::OK;
    }
    seal(channel);
  }
  if (!channel.ready.empty() && drain(channel) == NetioStatus::FAILED) {
    return NetioStatus::FAILED;
  }
  if (channel.ready.full()) {
    return NetioStatus::NO_RESOURCES;
  }
  NetworkBuffer* buffer = nullptr;
  try {
    buffer = m_backend->get_buffer(channel.address);
  } catch (const std::exception& error) {
    // The backend dropped the endpoint (its close is being reported).
    NETIO3_LOG_DEBUG("{}: no buffer for {}: {}", m_config.owner, channel.address.to_string(), error.what());
    return NetioStatus::FAILED;
  }
  if (buffer == nullptr) {
    return NetioStatus::NO_RESOURCES;
  }
  channel.current = buffer;
  channel.formatter.reset(buffer->data().first(std::min(buffer->size(), m_config.buffersize)));
  return NetioStatus::OK;
}

void SendEngine::append(Channel& channel, std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t status) {
  const bool first = channel.formatter.empty();
  const bool appended = channel.formatter.append(tag, data, status);
  (void)appended; // reserve() made room
  if (m_config.method == SendMethod::COPY ||
      channel.formatter.capacity() - channel.formatter.size() < BufferFormatter::header_size) {
    // COPY sends each message at once; a buffer that cannot take even an empty message is full.
    send_full(channel);
    return;
  }
  if (first && m_config.flush_interval.count() > 0) {
    schedule_flush(channel);
  }
}

void SendEngine::send_full(Channel& channel) {
  seal(channel);
  (void)drain(channel);
}

NetioStatus SendEngine::flush(Channel& channel) {
  if (channel.broken) {
    return NetioStatus::FAILED;
  }
  if (channel.current != nullptr && !channel.formatter.empty()) {
    seal(channel);
  }
  return channel.ready.empty() ? NetioStatus::OK : drain(channel);
}

void SendEngine::flush_all() {
  for (auto& [address, channel] : m_channels) {
    (void)flush(*channel);
  }
}

NetioStatus SendEngine::send_zero_copy(Channel& channel, std::uint64_t tag, std::span<const std::uint8_t> data,
                                       std::uint8_t status, std::uint64_t key) {
  QueuedZeroCopy send{data.data(), data.size(), key, BufferFormatter::lone_message_header(tag, data.size(), status)};
  NetioStatus result = NetioStatus::NO_RESOURCES;
  if (channel.queued.empty() && !channel.broken) {
    try {
      result = m_backend->send_data(channel.address, writable(data), send.header.span(), key);
    } catch (const std::exception& error) {
      NETIO3_LOG_DEBUG("{}: send to {} failed: {}", m_config.owner, channel.address.to_string(), error.what());
      result = NetioStatus::FAILED;
    }
  }
  if (result == NetioStatus::OK || m_config.zero_copy_queue == 0 || channel.queued.full() ||
      (result != NetioStatus::NO_RESOURCES && result != NetioStatus::FAILED)) {
    return result;
  }
  // Queued: sent when the backend has room; if the channel breaks, the key comes back with its close.
  channel.queued.push(send);
  if (result == NetioStatus::FAILED && !channel.broken) {
    break_channel(channel, result, "a zero-copy send");
  } else {
    schedule_retry(channel);
  }
  return NetioStatus::OK;
}

void SendEngine::seal(Channel& channel) noexcept {
  channel.current->set_pos(channel.formatter.size());
  channel.ready.push(channel.current);
  channel.current = nullptr;
  m_flush_list.remove(channel);
}

NetioStatus SendEngine::drain(Channel& channel) {
  while (!channel.ready.empty()) {
    NetioStatus result = NetioStatus::FAILED;
    try {
      result = m_backend->send_buffer(channel.address, channel.ready.front());
    } catch (const std::exception& error) {
      NETIO3_LOG_DEBUG("{}: send to {} failed: {}", m_config.owner, channel.address.to_string(), error.what());
    }
    if (result == NetioStatus::OK) {
      channel.ready.pop();
      continue;
    }
    if (result == NetioStatus::NO_RESOURCES) {
      schedule_retry(channel);
      return result;
    }
    break_channel(channel, result, "a buffer");
    return NetioStatus::FAILED;
  }
  if (channel.queued.empty()) {
    m_retry_list.remove(channel);
  }
  return NetioStatus::OK;
}

NetioStatus SendEngine::drain_zero_copy(Channel& channel) {
  while (!channel.queued.empty() && !channel.broken) {
    QueuedZeroCopy& send = channel.queued.front();
    NetioStatus result = NetioStatus::FAILED;
    try {
      result = m_backend->send_data(channel.address, writable({send.data, send.size}), send.header.span(), send.key);
    } catch (const std::exception& error) {
      NETIO3_LOG_DEBUG("{}: send to {} failed: {}", m_config.owner, channel.address.to_string(), error.what());
    }
    if (result == NetioStatus::OK) {
      channel.queued.pop();
      continue;
    }
    if (result == NetioStatus::NO_RESOURCES) {
      schedule_retry(channel);
      return result;
    }
    break_channel(channel, result, "a queued zero-copy send");
    return NetioStatus::FAILED;
  }
  if (channel.ready.empty()) {
    m_retry_list.remove(channel);
  }
  return NetioStatus::OK;
}

void SendEngine::break_channel(Channel& channel, NetioStatus status, const char* what) {
  NETIO3_LOG_ERROR("{}: the backend refused {} for {} with {}; closing that connection", m_config.owner, what,
                   channel.address.to_string(), to_string(status));
  channel.broken = true;
  m_flush_list.remove(channel);
  m_retry_list.remove(channel);
  try {
    m_to_close.push_back(channel.address);
    m_signal.fire();
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("{}: cannot hand the close of {} to the loop: {}", m_config.owner, channel.address.to_string(),
                     error.what());
  }
}

// --- timer --------------------------------------------------------------------------------------

void SendEngine::schedule_flush(Channel& channel) {
  const Clock::time_point deadline = Clock::now() + m_config.flush_interval;
  m_flush_list.push_back(channel, deadline);
  arm_timer(m_flush_list.front()->flush_link.deadline);
}

void SendEngine::schedule_retry(Channel& channel) {
  if (channel.retry_link.linked) {
    return;
  }
  m_retry_list.push_back(channel, Clock::now() + retry_interval);
  arm_timer(m_retry_list.front()->retry_link.deadline);
}

void SendEngine::arm_timer(Clock::time_point deadline) {
  if (m_shut_down || deadline >= m_timer_deadline) {
    return; // armed for an earlier deadline already; it re-arms for the rest when it fires
  }
  m_timer_deadline = deadline;
  try {
    m_timer.start_once(std::max(deadline - Clock::now(), Clock::duration{1}));
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("{}: cannot arm the flush timer: {}", m_config.owner, error.what());
  }
}

void SendEngine::on_timer() {
  const std::lock_guard lock{m_mutex};
  m_timer_deadline = Clock::time_point::max();
  if (m_shut_down) {
    return;
  }
  const Clock::time_point now = Clock::now();
  for (Channel* channel = m_flush_list.front(); channel != nullptr && channel->flush_link.deadline <= now;
       channel = m_flush_list.front()) {
    m_flush_list.remove(*channel);
    (void)flush(*channel);
  }
  // A channel that is retried again goes to the back of the list with a later deadline.
  for (Channel* channel = m_retry_list.front(); channel != nullptr && channel->retry_link.deadline <= now;
       channel = m_retry_list.front()) {
    m_retry_list.remove(*channel);
    if (!channel->ready.empty()) {
      (void)drain(*channel);
    }
    if (!channel->queued.empty()) {
      (void)drain_zero_copy(*channel);
    }
  }
  Clock::time_point next = Clock::time_point::max();
  if (!m_flush_list.empty()) {
    next = m_flush_list.front()->flush_link.deadline;
  }
  if (!m_retry_list.empty()) {
    next = std::min(next, m_retry_list.front()->retry_link.deadline);
  }
  if (next != Clock::time_point::max()) {
    arm_timer(next);
  }
}

void SendEngine::on_signal() {
  std::vector<EndPointAddress> to_close;
  {
    const std::lock_guard lock{m_mutex};
    if (m_shut_down) {
      return;
    }
    to_close.swap(m_to_close);
  }
  for (const EndPointAddress& address : to_close) {
    try {
      close(address);
    } catch (const std::exception& error) {
      NETIO3_LOG_DEBUG("{}: closing {}: {}", m_config.owner, address.to_string(), error.what());
    }
  }
}

} // namespace netio3::detail
