#include "TrafficSender.hpp"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <sys/uio.h>

#include "FaultProtocol.hpp"

namespace netio3::faults {

namespace {

using SteadyClock = std::chrono::steady_clock;

// Key layout: bits 0..39 sequence number, 40..55 zero-copy slot + 1 (0: none), 56..59 send mode.
constexpr std::uint64_t key_seq_mask = (std::uint64_t{1} << 40U) - 1U;

constexpr std::uint64_t make_key(std::uint64_t seq, std::size_t slot_plus_one, SendMode mode) noexcept {
  return (seq & key_seq_mask) | (static_cast<std::uint64_t>(slot_plus_one) << 40U) |
         (static_cast<std::uint64_t>(mode) << 56U);
}
constexpr std::uint64_t key_seq(std::uint64_t key) noexcept {
  return key & key_seq_mask;
}
constexpr std::size_t key_slot_plus_one(std::uint64_t key) noexcept {
  return static_cast<std::size_t>((key >> 40U) & 0xffffU);
}
constexpr SendMode key_mode(std::uint64_t key) noexcept {
  return static_cast<SendMode>((key >> 56U) & 0xfU);
}
constexpr bool is_zero_copy(SendMode mode) noexcept {
  return mode == SendMode::zerocopy || mode == SendMode::zerocopy_iov;
}

std::size_t round_up_power_of_two(std::size_t value) noexcept {
  std::size_t result = 1;
  while (result < value) {
    result <<= 1U;
  }
  return result;
}

} // namespace

unsigned parse_send_modes(const std::string& text) {
  unsigned modes = 0;
  std::istringstream words(text);
  std::string word;
  while (std::getline(words, word, ',')) {
    if (word == "all") {
      modes |= all_send_modes;
    } else if (word == "copy") {
      modes |= mode_bit(SendMode::copy);
    } else if (word == "copy-iov") {
      modes |= mode_bit(SendMode::copy_iov);
    } else if (word == "zerocopy") {
      modes |= mode_bit(SendMode::zerocopy);
    } else if (word == "zerocopy-iov") {
      modes |= mode_bit(SendMode::zerocopy_iov);
    } else if (word == "buffered") {
      modes |= mode_bit(SendMode::buffered);
    } else {
      throw std::invalid_argument("unknown send mode '" + word +
                                  "' (known: copy, copy-iov, zerocopy, zerocopy-iov, buffered, all)");
    }
  }
  if (modes == 0) {
    throw std::invalid_argument("no send mode given");
  }
  return modes;
}

const char* send_mode_name(SendMode mode) noexcept {
  switch (mode) {
  case SendMode::copy: return "copy";
  case SendMode::copy_iov: return "copy-iov";
  case SendMode::zerocopy: return "zerocopy";
  case SendMode::zerocopy_iov: return "zerocopy-iov";
  case SendMode::buffered: return "buffered";
  }
  return "?";
}

/// One stream: its send endpoint, its memory and its figures. Fields marked "pump" are touched only
/// in the pump context; atomics are shared with the loop thread's callbacks and with readers.
struct TrafficSender::Stream {
  Stream(std::uint16_t stream_id, EndPointAddress target_address, std::size_t backend_index,
         const StreamProfile& stream_profile, std::uint64_t message_count)
    : id{stream_id}, target{std::move(target_address)}, backend{backend_index}, profile{stream_profile},
      messages{message_count} {
    profile.max_size = std::max(profile.max_size, profile.min_size);
    ring_size = round_up_power_of_two(std::max<std::size_t>(profile.window, 2));
    ring = std::make_unique<std::atomic<std::uint64_t>[]>(ring_size);
    for (std::size_t i = 0; i < ring_size; ++i) {
      ring[i].store(0, std::memory_order_relaxed);
    }
    slot_size = std::max<std::size_t>((profile.max_size + 63U) & ~std::size_t{63}, 64);
    slot_count = std::clamp<std::size_t>(profile.zerocopy_bytes / slot_size, 2, 4096);
    slot_busy = std::make_unique<std::atomic<bool>[]>(slot_count);
    for (std::size_t i = 0; i < slot_count; ++i) {
      slot_busy[i].store(false, std::memory_order_relaxed);
    }
  }

  const std::uint16_t id;
  const EndPointAddress target;
  const std::size_t backend;
  StreamProfile profile;
  std::atomic<std::uint64_t> messages; ///< 0: unlimited (finish_stream sets it)

  // pump
  std::uint64_t next_seq{0};
  bool opened{false};
  bool ended{false};  ///< audited and reported
  bool halted{false}; ///< an unexpected status stopped it
  std::vector<std::uint8_t> scratch;
  std::unique_ptr<std::uint8_t[]> region;
  std::size_t slot_size{0};
  std::size_t slot_count{0};
  std::uint64_t zc_cursor{0};
  std::uint64_t prepared_seq{UINT64_MAX}; ///< whose payload sits in `prepared_at`
  const std::uint8_t* prepared_at{nullptr};
  std::uint32_t prepared_checksum{0};
  NetworkBuffer* held_buffer{nullptr}; ///< a buffer whose send_buffer was refused, prepared for next_seq
  double tokens{0};
  SteadyClock::time_point last_refill{};

  // shared
  std::size_t ring_size{0};
  std::unique_ptr<std::atomic<std::uint64_t>[]> ring; ///< key + 1 of the send in flight at seq % size
  std::unique_ptr<std::atomic<bool>[]> slot_busy;
  std::atomic<bool> established{false}, refused{false}, closed{false}, audited{false}, done_sending{false};
  std::atomic<std::uint64_t> sent{0}, keyed_sent{0}, completed{0}, pending_returned{0}, no_resources{0},
      local_stalls{0}, failed_sends{0}, unexpected_status{0}, key_errors{0}, unreported_zero_copy{0},
      dropped_copy_keys{0};
};

TrafficSender::TrafficSender(SenderOptions options, EventSink events, StreamEndedHook on_ended)
  : m_options{std::move(options)}, m_events{std::move(events)},
    m_on_ended{std::move(on_ended)}, m_loop{std::make_shared<EpollEventLoop>()} {
  m_options.backends = std::max<std::size_t>(m_options.backends, 1);
  m_lookup.resize(m_options.backends);
  for (std::size_t index = 0; index < m_options.backends; ++index) {
    NetworkConfig config;
    config.mode = NetworkMode::TCP;
    config.thread_safety = m_options.thread_safety;
    config.provider = m_options.provider;
    config.peer_timeout = m_options.peer_timeout;
    config.connect_timeout = m_options.connect_timeout;
    config.max_unsent_bytes = m_options.max_unsent_bytes;
    config.on_connection_established_cb = [this, index](const EndPointAddress& address) {
      on_established(index, address);
    };
    config.on_connection_closed_cb = [this, index](const EndPointAddress& address,
                                                   const std::vector<std::uint64_t>& keys) {
      on_closed(index, address, keys);
    };
    config.on_connection_refused_cb = [this, index](const EndPointAddress& address) { on_refused(index, address); };
    config.on_send_completed_cb = [this, index](const EndPointAddress& address, std::uint64_t key) {
      on_completed(index, address, key);
    };
    config.on_data_cb = [this](std::span<const std::uint8_t>) { note_error("a sender received data"); };
    m_backends.push_back(NetworkBackend::create(m_options.type, config, m_loop));
  }
}

TrafficSender::~TrafficSender() {
  stop();
  m_backends.clear();
}

void TrafficSender::start() {
  if (m_running.exchange(true)) {
    return;
  }
  if (m_options.thread_safety == ThreadSafetyModel::UNSAFE) {
    m_pump_signal = m_loop->create_signal([this] {
      m_wake_pending.store(false);
      if (m_running.load()) {
        pump_round();
      }
    });
    m_pump_timer = m_loop->create_timer([this] {
      if (m_running.load()) {
        pump_round();
      }
    });
    m_pump_timer.start(std::chrono::milliseconds{1});
  }
  m_loop_thread = std::thread([this] { m_loop->run(); });
  if (m_options.thread_safety == ThreadSafetyModel::SAFE) {
    m_pump_thread = std::thread([this] {
      while (m_running.load()) {
        if (!pump_round()) {
          std::unique_lock lock(m_wake_mutex);
          m_wake_cv.wait_for(lock, std::chrono::milliseconds{1},
                             [this] { return m_wake_pending.exchange(false) || !m_running.load(); });
        }
      }
    });
  }
}

void TrafficSender::stop() {
  if (!m_running.exchange(false)) {
    return;
  }
  m_wake_cv.notify_all();
  if (m_pump_thread.joinable()) {
    m_pump_thread.join();
  }
  // Destroying the handles waits for a running callback; afterwards the loop never pumps again.
  m_pump_timer.reset();
  m_pump_signal.reset();
  // A stop() that reaches the loop before run() started is not remembered: repeat until it ends.
  std::atomic<bool> done{false};
  std::thread stopper([this, &done] {
    while (!done.load()) {
      m_loop->stop();
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
  });
  if (m_loop_thread.joinable()) {
    m_loop_thread.join();
  }
  done.store(true);
  stopper.join();
}

void TrafficSender::add_stream(std::uint16_t stream, const EndPointAddress& target, std::uint64_t messages,
                               std::chrono::milliseconds delay, std::size_t backend) {
  add_stream(stream, target, messages, m_options.profile, delay, backend);
}

void TrafficSender::add_stream(std::uint16_t stream, const EndPointAddress& target, std::uint64_t messages,
                               const StreamProfile& profile, std::chrono::milliseconds delay, std::size_t backend) {
  if (backend == SIZE_MAX) {
    backend = stream % m_options.backends;
  }
  if (backend >= m_options.backends) {
    throw std::invalid_argument("TrafficSender::add_stream: backend index " + std::to_string(backend) +
                                " out of range");
  }
  auto owned = std::make_unique<Stream>(stream, target, backend, profile, messages);
  Stream* raw = owned.get();
  {
    const std::lock_guard lock(m_mutex);
    m_streams.push_back(std::move(owned));
  }
  post(Command{SteadyClock::now() + delay, [this, raw] { open_stream(*raw); }});
}

void TrafficSender::finish_stream(std::uint16_t stream) {
  post(Command{SteadyClock::now(), [this, stream] {
                 const std::lock_guard lock(m_mutex);
                 for (auto& candidate : m_streams) {
                   if (candidate->id == stream && candidate->messages.load() == 0) {
                     candidate->messages.store(candidate->next_seq + 1);
                   }
                 }
               }});
}

void TrafficSender::finish_all() {
  post(Command{SteadyClock::now(), [this] {
                 const std::lock_guard lock(m_mutex);
                 for (auto& candidate : m_streams) {
                   if (candidate->messages.load() == 0) {
                     candidate->messages.store(candidate->next_seq + 1);
                   }
                 }
               }});
}

void TrafficSender::close_stream(std::uint16_t stream) {
  post(Command{SteadyClock::now(), [this, stream] {
                 Stream* target = nullptr;
                 {
                   const std::lock_guard lock(m_mutex);
                   for (auto& candidate : m_streams) {
                     if (candidate->id == stream && candidate->opened && !candidate->ended) {
                       target = candidate.get();
                     }
                   }
                 }
                 if (target == nullptr) {
                   return;
                 }
                 try {
                   m_backends[target->backend]->close_send_endpoint(target->target);
                 } catch (const std::exception& error) {
                   emit("CLOSE_FAILED stream=" + std::to_string(stream) + " reason=" + error.what());
                 }
               }});
}

void TrafficSender::post(Command command) {
  {
    const std::lock_guard lock(m_mutex);
    m_commands.push_back(std::move(command));
  }
  wake();
}

void TrafficSender::wake() noexcept {
  if (m_wake_pending.exchange(true)) {
    return;
  }
  if (m_options.thread_safety == ThreadSafetyModel::SAFE) {
    m_wake_cv.notify_one();
  } else if (m_pump_signal.valid()) {
    try {
      m_pump_signal.fire();
    } catch (const std::exception&) {
      // The periodic timer pumps anyway.
    }
  }
}

TrafficSender::Stream* TrafficSender::find(std::size_t backend, const EndPointAddress& address) const {
  const std::lock_guard lock(m_mutex);
  const auto& map = m_lookup[backend];
  const auto found = map.find(address);
  return found == map.end() ? nullptr : found->second;
}

void TrafficSender::on_established(std::size_t backend, const EndPointAddress& address) {
  Stream* stream = find(backend, address);
  if (stream == nullptr) {
    note_error("on_connection_established_cb for unknown address " + address.to_string());
    return;
  }
  if (stream->closed.load() || stream->refused.load() || stream->established.exchange(true)) {
    stream->key_errors.fetch_add(1);
    note_error("stream " + std::to_string(stream->id) + ": on_connection_established_cb twice or after the end");
  }
  emit("ESTABLISHED stream=" + std::to_string(stream->id) + " target=" + address.to_string());
  wake();
}

void TrafficSender::on_refused(std::size_t backend, const EndPointAddress& address) {
  Stream* stream = find(backend, address);
  if (stream == nullptr) {
    note_error("on_connection_refused_cb for unknown address " + address.to_string());
    return;
  }
  if (stream->established.load() || stream->closed.load() || stream->refused.exchange(true)) {
    stream->key_errors.fetch_add(1);
    note_error("stream " + std::to_string(stream->id) + ": on_connection_refused_cb after establishment or twice");
  }
  wake();
}

void TrafficSender::on_closed(std::size_t backend, const EndPointAddress& address,
                              const std::vector<std::uint64_t>& keys) {
  Stream* stream = find(backend, address);
  if (stream == nullptr) {
    note_error("on_connection_closed_cb for unknown address " + address.to_string());
    return;
  }
  if (stream->closed.load() || stream->refused.load()) {
    stream->key_errors.fetch_add(1);
    note_error("stream " + std::to_string(stream->id) + ": on_connection_closed_cb after the end");
    return;
  }
  for (const auto key : keys) {
    release_key(*stream, key, true);
  }
  stream->closed.store(true);
  wake();
}

void TrafficSender::on_completed(std::size_t backend, const EndPointAddress& address, std::uint64_t key) {
  Stream* stream = find(backend, address);
  if (stream == nullptr) {
    note_error("on_send_completed_cb for unknown address " + address.to_string());
    return;
  }
  if (stream->closed.load(std::memory_order_relaxed)) {
    stream->key_errors.fetch_add(1);
    note_error("stream " + std::to_string(stream->id) + ": on_send_completed_cb after on_connection_closed_cb");
  }
  release_key(*stream, key, false);
  wake();
}

void TrafficSender::release_key(Stream& stream, std::uint64_t key, bool from_close) {
  const std::size_t index = key_seq(key) & (stream.ring_size - 1U);
  std::uint64_t expected = key + 1U;
  if (!stream.ring[index].compare_exchange_strong(expected, 0)) {
    stream.key_errors.fetch_add(1);
    note_error("stream " + std::to_string(stream.id) + ": key " + std::to_string(key) + " (seq " +
               std::to_string(key_seq(key)) + ") reported " +
               (from_close ? "in on_connection_closed_cb" : "completed") +
               " but it is not in flight (reported twice, or never sent)");
    return;
  }
  if (const auto slot = key_slot_plus_one(key); slot != 0) {
    if (slot > stream.slot_count || !stream.slot_busy[slot - 1].exchange(false)) {
      stream.key_errors.fetch_add(1);
      note_error("stream " + std::to_string(stream.id) + ": zero-copy slot of key " + std::to_string(key) +
                 " was not busy");
    }
  }
  (from_close ? stream.pending_returned : stream.completed).fetch_add(1, std::memory_order_relaxed);
}

bool TrafficSender::run_commands() {
  {
    const std::lock_guard lock(m_mutex);
    if (m_commands.empty()) {
      return false;
    }
    const auto now = SteadyClock::now();
    const auto due = std::stable_partition(m_commands.begin(), m_commands.end(),
                                           [now](const Command& command) { return command.not_before <= now; });
    std::move(m_commands.begin(), due, std::back_inserter(m_ready));
    m_commands.erase(m_commands.begin(), due);
  }
  const bool any = !m_ready.empty();
  for (auto& command : m_ready) {
    command.action();
  }
  m_ready.clear();
  return any;
}

bool TrafficSender::pump_round() {
  bool progress = run_commands();
  {
    const std::lock_guard lock(m_mutex);
    m_pump_list.clear();
    for (auto& stream : m_streams) {
      if (stream->opened && !stream->ended) {
        m_pump_list.push_back(stream.get());
      }
    }
  }
  for (Stream* stream : m_pump_list) {
    progress = pump_stream(*stream) || progress;
  }
  return progress;
}

void TrafficSender::open_stream(Stream& stream) {
  stream.scratch.resize(stream.profile.max_size);
  const bool zero_copy =
      (stream.profile.modes & (mode_bit(SendMode::zerocopy) | mode_bit(SendMode::zerocopy_iov))) != 0;
  if (zero_copy) {
    stream.region = std::make_unique<std::uint8_t[]>(stream.slot_count * stream.slot_size);
    std::memset(stream.region.get(), 0, stream.slot_count * stream.slot_size); // resident before measuring memory
  }
  ConnectionParameters params;
  if ((stream.profile.modes & mode_bit(SendMode::buffered)) != 0) {
    params.buf_size = stream.profile.max_size + record_header_size;
    params.num_buf = std::max<std::size_t>(stream.profile.buffer_count, 1);
  }
  if (zero_copy) {
    params.mr_start = stream.region.get();
    params.mr_size = stream.slot_count * stream.slot_size;
  }
  {
    const std::lock_guard lock(m_mutex);
    m_lookup[stream.backend][stream.target] = &stream;
  }
  stream.last_refill = SteadyClock::now();
  stream.opened = true;
  try {
    m_backends[stream.backend]->open_send_endpoint(stream.target, params);
  } catch (const std::exception& error) {
    emit("OPEN_FAILED stream=" + std::to_string(stream.id) + " reason=" + error.what());
    stream.refused.store(true);
  }
}

bool TrafficSender::pump_stream(Stream& stream) {
  if (stream.closed.load() || stream.refused.load()) {
    audit(stream);
    return true;
  }
  if (!stream.established.load() || stream.done_sending.load() || stream.halted) {
    return false;
  }
  std::size_t budget = stream.profile.burst;
  if (stream.profile.rate != 0) {
    const auto now = SteadyClock::now();
    const double elapsed = std::chrono::duration<double>(now - stream.last_refill).count();
    stream.last_refill = now;
    stream.tokens = std::min(stream.tokens + elapsed * static_cast<double>(stream.profile.rate),
                             static_cast<double>(stream.profile.burst));
    budget = static_cast<std::size_t>(stream.tokens);
  }
  std::size_t accepted = 0;
  while (accepted < budget) {
    const auto limit = stream.messages.load();
    if (limit != 0 && stream.next_seq >= limit) {
      stream.done_sending.store(true);
      break;
    }
    bool local_stall = false;
    NetioStatus status = NetioStatus::FAILED;
    try {
      status = send_one(stream, local_stall);
    } catch (const NetioException&) {
      // The endpoint is gone before its closed callback came: closed by close_stream, or (SAFE)
      // dropped by the loop thread between our check and the call. The callback follows; the
      // send accepted nothing (send_one took its key back).
      stream.failed_sends.fetch_add(1);
      break;
    }
    if (local_stall) {
      stream.local_stalls.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    if (status == NetioStatus::OK) {
      ++accepted;
      continue;
    }
    if (status == NetioStatus::NO_RESOURCES) {
      stream.no_resources.fetch_add(1, std::memory_order_relaxed);
    } else if (status == NetioStatus::FAILED) {
      stream.failed_sends.fetch_add(1, std::memory_order_relaxed);
    } else {
      stream.unexpected_status.fetch_add(1);
      stream.halted = true;
      note_error("stream " + std::to_string(stream.id) + " seq " + std::to_string(stream.next_seq) +
                 ": unexpected status " + std::string(to_string(status)));
    }
    break;
  }
  if (stream.profile.rate != 0) {
    stream.tokens -= static_cast<double>(accepted);
  }
  return accepted > 0;
}

NetioStatus TrafficSender::send_one(Stream& stream, bool& local_stall) {
  const std::uint64_t seq = stream.next_seq;
  const std::uint64_t limit = stream.messages.load();
  const bool last = limit != 0 && seq + 1 == limit;
  const std::size_t size = pick_payload_size(stream.id, seq, stream.profile.min_size, stream.profile.max_size);

  // Pick the mode among the enabled ones, deterministically per sequence number (a retried message
  // keeps its mode, so a held buffer or a prepared slot is reused).
  unsigned enabled[send_mode_count];
  unsigned count = 0;
  for (unsigned mode = 0; mode < send_mode_count; ++mode) {
    if ((stream.profile.modes & (1U << mode)) != 0) {
      enabled[count++] = mode;
    }
  }
  const auto mode = static_cast<SendMode>(enabled[mix64(seq * 31U + stream.id) % count]);

  RecordHeader header;
  header.seq = seq;
  header.stream = stream.id;
  header.flags = static_cast<std::uint16_t>((last ? flag_last : 0U) | (static_cast<unsigned>(mode) << 8U));
  std::array<std::uint8_t, record_header_size> header_bytes{};
  auto& backend = *m_backends[stream.backend];
  NetioStatus status = NetioStatus::FAILED;

  if (mode == SendMode::buffered) {
    NetworkBuffer* buffer = stream.held_buffer;
    if (buffer == nullptr) {
      buffer = backend.get_buffer(stream.target);
      if (buffer == nullptr) {
        return NetioStatus::NO_RESOURCES;
      }
      auto memory = buffer->data();
      if (memory.size() < record_header_size + size) {
        note_error("stream " + std::to_string(stream.id) + ": get_buffer returned " + std::to_string(memory.size()) +
                   " bytes, less than the buf_size asked for");
        stream.unexpected_status.fetch_add(1);
        stream.halted = true;
        local_stall = true;
        return NetioStatus::FAILED;
      }
      const auto payload = memory.subspan(record_header_size, size);
      fill_payload(stream.id, seq, payload);
      header.checksum = payload_checksum(stream.id, seq, payload);
      encode_header(header, memory.first<record_header_size>());
      buffer->set_pos(record_header_size + size);
    }
    stream.held_buffer = nullptr; // if send_buffer throws, the endpoint (and its pool) is gone
    status = backend.send_buffer(stream.target, buffer);
    stream.held_buffer = status == NetioStatus::OK ? nullptr : buffer;
  } else {
    const std::size_t index = seq & (stream.ring_size - 1U);
    if (stream.ring[index].load() != 0) {
      local_stall = true; // the key window is full: wait for completions
      return NetioStatus::OK;
    }
    std::size_t slot_plus_one = 0;
    std::uint8_t* payload = nullptr;
    if (is_zero_copy(mode)) {
      const std::size_t slot = stream.zc_cursor % stream.slot_count;
      if (stream.slot_busy[slot].load()) {
        local_stall = true; // every slot of the region is in flight
        return NetioStatus::OK;
      }
      slot_plus_one = slot + 1;
      payload = stream.region.get() + slot * stream.slot_size;
    } else {
      payload = stream.scratch.data();
    }
    if (stream.prepared_seq != seq || stream.prepared_at != payload) {
      fill_payload(stream.id, seq, {payload, size});
      stream.prepared_checksum = payload_checksum(stream.id, seq, {payload, size});
      stream.prepared_seq = seq;
      stream.prepared_at = payload;
    }
    header.checksum = stream.prepared_checksum;
    encode_header(header, header_bytes);
    const std::uint64_t key = make_key(seq, slot_plus_one, mode);
    if (slot_plus_one != 0) {
      stream.slot_busy[slot_plus_one - 1].store(true);
    }
    stream.ring[index].store(key + 1U);
    // Three pieces for the iovec modes (empty pieces left out); a payload of 0 bytes goes as a span.
    iovec pieces[3];
    std::size_t piece_count = 0;
    const std::size_t cuts[4] = {0, size / 3, (2 * size) / 3, size};
    for (std::size_t i = 0; i < 3; ++i) {
      if (cuts[i + 1] > cuts[i]) {
        pieces[piece_count++] = iovec{payload + cuts[i], cuts[i + 1] - cuts[i]};
      }
    }
    const std::span<const iovec> iov{pieces, piece_count};
    const auto undo = [&] {
      stream.ring[index].store(0);
      if (slot_plus_one != 0) {
        stream.slot_busy[slot_plus_one - 1].store(false);
      }
    };
    try {
      switch (mode) {
      case SendMode::copy: status = backend.send_data_copy(stream.target, {payload, size}, header_bytes, key); break;
      case SendMode::copy_iov:
        status = size == 0 ? backend.send_data_copy(stream.target, {payload, size}, header_bytes, key)
                           : backend.send_data_copy(stream.target, iov, header_bytes, key);
        break;
      case SendMode::zerocopy: status = backend.send_data(stream.target, {payload, size}, header_bytes, key); break;
      case SendMode::zerocopy_iov:
        status = size == 0 ? backend.send_data(stream.target, {payload, size}, header_bytes, key)
                           : backend.send_data(stream.target, iov, header_bytes, key);
        break;
      case SendMode::buffered: break;
      }
    } catch (...) {
      undo(); // a send that throws accepted nothing: its key is not in flight
      throw;
    }
    if (status == NetioStatus::OK) {
      stream.keyed_sent.fetch_add(1, std::memory_order_relaxed);
      if (slot_plus_one != 0) {
        ++stream.zc_cursor;
      }
    } else {
      undo();
    }
  }
  if (status == NetioStatus::OK) {
    stream.sent.fetch_add(1, std::memory_order_relaxed);
    ++stream.next_seq;
    if (last) {
      stream.done_sending.store(true);
    }
  }
  return status;
}

void TrafficSender::audit(Stream& stream) {
  if (stream.ended) {
    return;
  }
  stream.ended = true;
  // Every key still in flight was neither completed nor returned by the closed callback.
  for (std::size_t index = 0; index < stream.ring_size; ++index) {
    const std::uint64_t value = stream.ring[index].exchange(0);
    if (value == 0) {
      continue;
    }
    const std::uint64_t key = value - 1U;
    if (is_zero_copy(key_mode(key))) {
      stream.unreported_zero_copy.fetch_add(1);
      note_error("stream " + std::to_string(stream.id) + ": zero-copy key " + std::to_string(key) + " (seq " +
                 std::to_string(key_seq(key)) + ") was neither completed nor returned by on_connection_closed_cb");
    } else {
      stream.dropped_copy_keys.fetch_add(1);
    }
  }
  stream.held_buffer = nullptr; // the backend reclaimed it with the endpoint
  stream.region.reset();        // every zero-copy key is accounted for: the memory is free
  std::vector<std::uint8_t>().swap(stream.scratch);
  {
    const std::lock_guard lock(m_mutex);
    auto& map = m_lookup[stream.backend];
    const auto found = map.find(stream.target);
    if (found != map.end() && found->second == &stream) {
      map.erase(found);
    }
  }
  auto figures = snapshot(stream);
  figures.audited = true;
  if (figures.refused) {
    emit("REFUSED stream=" + std::to_string(stream.id) + " target=" + stream.target.to_string());
  } else {
    emit("CLOSED stream=" + std::to_string(stream.id) + " sent=" + std::to_string(figures.sent) +
         " completed=" + std::to_string(figures.completed) + " pending=" + std::to_string(figures.pending_returned) +
         " unreported_zero_copy=" + std::to_string(figures.unreported_zero_copy) + " dropped_copy_keys=" +
         std::to_string(figures.dropped_copy_keys) + " finished=" + (figures.done_sending ? "1" : "0"));
  }
  // The hook runs before the stream counts as ended, so that a replacement stream it adds is
  // visible before anyone can see every stream ended.
  if (m_on_ended) {
    m_on_ended(figures);
  }
  stream.audited.store(true);
}

StreamStats TrafficSender::snapshot(const Stream& stream) const {
  StreamStats stats;
  stats.stream = stream.id;
  stats.target = stream.target;
  stats.established = stream.established.load();
  stats.refused = stream.refused.load();
  stats.closed = stream.closed.load();
  stats.audited = stream.audited.load();
  stats.done_sending = stream.done_sending.load();
  stats.sent = stream.sent.load();
  stats.keyed_sent = stream.keyed_sent.load();
  stats.completed = stream.completed.load();
  stats.pending_returned = stream.pending_returned.load();
  stats.no_resources = stream.no_resources.load();
  stats.local_stalls = stream.local_stalls.load();
  stats.failed_sends = stream.failed_sends.load();
  stats.unexpected_status = stream.unexpected_status.load();
  stats.key_errors = stream.key_errors.load();
  stats.unreported_zero_copy = stream.unreported_zero_copy.load();
  stats.dropped_copy_keys = stream.dropped_copy_keys.load();
  const std::uint64_t settled =
      stats.completed + stats.pending_returned + stats.unreported_zero_copy + stats.dropped_copy_keys;
  stats.outstanding = stats.keyed_sent > settled ? stats.keyed_sent - settled : 0;
  return stats;
}

StreamStats TrafficSender::stats(std::uint16_t stream) const {
  const std::lock_guard lock(m_mutex);
  for (auto it = m_streams.rbegin(); it != m_streams.rend(); ++it) {
    if ((*it)->id == stream) {
      return snapshot(**it);
    }
  }
  StreamStats none;
  none.stream = stream;
  return none;
}

std::vector<StreamStats> TrafficSender::all_stats() const {
  const std::lock_guard lock(m_mutex);
  std::vector<StreamStats> result;
  result.reserve(m_streams.size());
  for (const auto& stream : m_streams) {
    result.push_back(snapshot(*stream));
  }
  return result;
}

SenderTotals TrafficSender::totals() const {
  SenderTotals totals;
  for (const auto& stats : all_stats()) {
    ++totals.streams;
    totals.established += stats.established ? 1U : 0U;
    totals.refused += stats.refused ? 1U : 0U;
    totals.closed += stats.closed ? 1U : 0U;
    totals.done_sending += stats.done_sending ? 1U : 0U;
    totals.sent += stats.sent;
    totals.keyed_sent += stats.keyed_sent;
    totals.completed += stats.completed;
    totals.pending_returned += stats.pending_returned;
    totals.no_resources += stats.no_resources;
    totals.local_stalls += stats.local_stalls;
    totals.failed_sends += stats.failed_sends;
    totals.unexpected_status += stats.unexpected_status;
    totals.key_errors += stats.key_errors;
    totals.unreported_zero_copy += stats.unreported_zero_copy;
    totals.dropped_copy_keys += stats.dropped_copy_keys;
    totals.outstanding += stats.outstanding;
  }
  const std::lock_guard lock(m_mutex);
  totals.key_errors += m_unknown_callbacks;
  return totals;
}

std::string TrafficSender::first_error() const {
  const std::lock_guard lock(m_mutex);
  return m_first_error;
}

bool TrafficSender::quiescent() const {
  {
    const std::lock_guard lock(m_mutex);
    if (!m_commands.empty()) {
      return false;
    }
  }
  for (const auto& stats : all_stats()) {
    const bool ended = stats.audited;
    const bool drained = stats.done_sending && stats.outstanding == 0;
    if (!ended && !drained) {
      return false;
    }
  }
  return true;
}

void TrafficSender::emit(const std::string& line) {
  if (m_events) {
    m_events(line);
  }
}

void TrafficSender::note_error(const std::string& text) {
  const std::lock_guard lock(m_mutex);
  if (text.find("unknown address") != std::string::npos) {
    ++m_unknown_callbacks;
  }
  if (m_first_error.empty()) {
    m_first_error = text;
  }
}

} // namespace netio3::faults
