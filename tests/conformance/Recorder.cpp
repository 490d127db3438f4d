#include "conformance/Recorder.hpp"

#include <algorithm>
#include <sstream>
#include <stdexcept>

namespace netio3::conformance {

namespace {
constexpr std::size_t max_kept_texts = 20;

std::string describe(const EndPointAddress& address) {
  return address.to_string();
}
} // namespace

// --- RecorderState --------------------------------------------------------------------------------

std::size_t RecorderState::keys_done(const std::vector<std::uint64_t>& keys) const {
  return static_cast<std::size_t>(
      std::count_if(keys.begin(), keys.end(), [this](std::uint64_t key) { return key_done(key); }));
}

bool RecorderState::key_done(std::uint64_t key) const {
  return completed.contains(key) || returned.contains(key);
}

std::size_t RecorderState::closed_count(const EndPointAddress& address) const {
  return static_cast<std::size_t>(
      std::count_if(closed.begin(), closed.end(), [&](const ClosedEvent& event) { return event.address == address; }));
}

std::size_t RecorderState::established_count(const EndPointAddress& address) const {
  return static_cast<std::size_t>(std::count(established.begin(), established.end(), address));
}

std::size_t RecorderState::refused_count(const EndPointAddress& address) const {
  return static_cast<std::size_t>(std::count(refused.begin(), refused.end(), address));
}

std::uint64_t RecorderState::stream_progress(std::uint32_t stream) const {
  const auto found = streams.find(stream);
  return found == streams.end() ? 0 : found->second.next_seq;
}

// --- Recorder -------------------------------------------------------------------------------------

void Recorder::attach(NetworkConfig& config, bool use_on_data_from, bool set_both_data_callbacks) {
  config.on_data_cb = nullptr;
  config.on_data_from_cb = nullptr;
  if (!use_on_data_from || set_both_data_callbacks) {
    config.on_data_cb = [this](std::span<const std::uint8_t> data) { on_data(nullptr, data); };
  }
  if (use_on_data_from || set_both_data_callbacks) {
    config.on_data_from_cb = [this](const EndPointAddress& remote, std::span<const std::uint8_t> data) {
      on_data(&remote, data);
    };
  }
  config.on_connection_established_cb = [this](const EndPointAddress& address) { on_established(address); };
  config.on_connection_closed_cb = [this](const EndPointAddress& address, const std::vector<std::uint64_t>& keys) {
    on_closed(address, keys);
  };
  config.on_connection_refused_cb = [this](const EndPointAddress& address) { on_refused(address); };
  config.on_send_completed_cb = [this](const EndPointAddress& address, std::uint64_t key) {
    on_completed(address, key);
  };
  config.on_connection_request_cb = [this](const EndPointAddress& remote) { return on_request(remote); };
}

void Recorder::set_data_mode(DataMode mode) {
  std::lock_guard lock{m_mutex};
  m_data_mode = mode;
}

void Recorder::pause_data(bool paused) {
  {
    std::lock_guard lock{m_mutex};
    m_paused = paused;
  }
  m_changed.notify_all();
}

void Recorder::expect_reopen(const EndPointAddress& address) {
  std::lock_guard lock{m_mutex};
  auto& life = m_state.lives[address];
  life.send_endpoint = true;
  ++life.begun;
}

void Recorder::wait_for_progress(std::chrono::milliseconds timeout) {
  std::unique_lock lock{m_mutex};
  const std::size_t before = m_state.callbacks;
  m_changed.wait_for(lock, timeout, [&] { return m_state.callbacks != before; });
}

std::string Recorder::summary() const {
  std::lock_guard lock{m_mutex};
  std::ostringstream text;
  text << "established " << m_state.established.size() << ", closed " << m_state.closed.size() << " (keys returned "
       << m_state.returned_total << "), refused " << m_state.refused.size() << ", connection requests "
       << m_state.requests.size() << ", completions " << m_state.completions << ", messages " << m_state.messages
       << ", data errors " << m_state.data_error_count << ", contract violations " << m_state.violation_count;
  // The last few closes and refusals (the interesting ones are usually at the end).
  constexpr std::size_t shown = 10;
  const std::size_t first_closed = m_state.closed.size() > shown ? m_state.closed.size() - shown : 0;
  for (std::size_t i = first_closed; i < m_state.closed.size(); ++i) {
    text << "\n    closed " << m_state.closed[i].address << " with " << m_state.closed[i].pending_keys.size()
         << " pending keys";
  }
  const std::size_t first_refused = m_state.refused.size() > shown ? m_state.refused.size() - shown : 0;
  for (std::size_t i = first_refused; i < m_state.refused.size(); ++i) {
    text << "\n    refused " << m_state.refused[i];
  }
  return text.str();
}

std::string Recorder::violations_text() const {
  std::lock_guard lock{m_mutex};
  std::ostringstream text;
  for (const auto& line : m_state.violations) {
    text << line << '\n';
  }
  if (m_state.violation_count > m_state.violations.size()) {
    text << "... and " << (m_state.violation_count - m_state.violations.size()) << " more\n";
  }
  return text.str();
}

std::size_t Recorder::violation_count() const {
  std::lock_guard lock{m_mutex};
  return m_state.violation_count;
}

std::string Recorder::data_errors_text() const {
  std::lock_guard lock{m_mutex};
  std::ostringstream text;
  for (const auto& line : m_state.data_errors) {
    text << line << '\n';
  }
  if (m_state.data_error_count > m_state.data_errors.size()) {
    text << "... and " << (m_state.data_error_count - m_state.data_errors.size()) << " more\n";
  }
  return text.str();
}

std::size_t Recorder::data_error_count() const {
  std::lock_guard lock{m_mutex};
  return m_state.data_error_count;
}

void Recorder::violation(std::string text) {
  ++m_state.violation_count;
  if (m_state.violations.size() < max_kept_texts) {
    m_state.violations.push_back(std::move(text));
  }
}

void Recorder::data_error(std::string text) {
  ++m_state.data_error_count;
  if (m_state.data_errors.size() < max_kept_texts) {
    m_state.data_errors.push_back(std::move(text));
  }
}

void Recorder::check_callback(const char* name, const EndPointAddress* address) {
  ++m_state.callbacks;
  const std::string where = address != nullptr ? std::string{" for "} + describe(*address) : std::string{};
  if (std::this_thread::get_id() != m_loop_thread) {
    violation(std::string{name} + where + " ran on a thread that is not the event-loop thread");
  }
  if (m_in_call.load() > 0) {
    violation(std::string{name} + where + " ran inside the public backend call that caused it");
  }
}

void Recorder::on_data(const EndPointAddress* remote, std::span<const std::uint8_t> data) {
  std::unique_lock lock{m_mutex};
  check_callback(remote != nullptr ? "on_data_from_cb" : "on_data_cb", remote);
  if (remote != nullptr) {
    ++m_state.via_on_data_from_cb;
    const auto& life = m_state.lives[*remote];
    if (life.live == 0) {
      violation("on_data_from_cb for " + describe(*remote) +
                (life.ended > 0 ? " after its closed callback" : " before its established callback"));
    }
  } else {
    ++m_state.via_on_data_cb;
  }
  ++m_state.messages;
  m_state.bytes += data.size();
  if (m_data_mode == DataMode::Store) {
    m_state.stored.push_back({remote != nullptr ? *remote : EndPointAddress{}, {data.begin(), data.end()}});
  } else {
    DecodedMessage decoded;
    std::string problem = check_message(data, decoded);
    if (!problem.empty()) {
      data_error(std::move(problem));
    } else {
      auto [entry, inserted] = m_state.streams.try_emplace(decoded.stream);
      StreamProgress& progress = entry->second;
      if (inserted && remote != nullptr) {
        progress.remote = *remote;
      }
      if (remote != nullptr && !inserted && progress.remote != *remote) {
        data_error("message stream " + std::to_string(decoded.stream) + " seq " + std::to_string(decoded.seq) +
                   " arrived from " + describe(*remote) + ", earlier ones from " + describe(progress.remote));
      }
      if (decoded.seq != progress.next_seq) {
        data_error("message stream " + std::to_string(decoded.stream) + ": expected seq " +
                   std::to_string(progress.next_seq) + ", received seq " + std::to_string(decoded.seq) +
                   (decoded.seq < progress.next_seq ? " (duplicate or reordered)" : " (lost or reordered)"));
        // Resynchronise so that one gap is reported once, not for every later message.
        progress.next_seq = decoded.seq + 1;
      } else {
        ++progress.next_seq;
      }
    }
  }
  if (m_paused) {
    ++m_state.paused_callbacks;
    m_changed.notify_all();
    m_changed.wait(lock, [this] { return !m_paused; });
    --m_state.paused_callbacks;
  }
  const std::size_t messages = m_state.messages;
  lock.unlock();
  m_changed.notify_all();
  const std::size_t every = m_throw_every.load();
  if (every != 0 && messages % every == 0) {
    throw std::runtime_error("conformance test: exception thrown by on_data callback on purpose");
  }
}

void Recorder::on_established(const EndPointAddress& address) {
  {
    std::lock_guard lock{m_mutex};
    check_callback("on_connection_established_cb", &address);
    auto& life = m_state.lives[address];
    if (life.live > 0) {
      violation("on_connection_established_cb for " + describe(address) + " twice without a closed callback");
    }
    if (life.send_endpoint) {
      if (life.established >= life.begun) {
        violation("on_connection_established_cb for " + describe(address) + " more often than it was opened");
      }
    } else {
      life.begun = life.established + 1;
    }
    ++life.established;
    ++life.live;
    m_state.established.push_back(address);
  }
  m_changed.notify_all();
}

void Recorder::on_closed(const EndPointAddress& address, const std::vector<std::uint64_t>& keys) {
  {
    std::lock_guard lock{m_mutex};
    check_callback("on_connection_closed_cb", &address);
    auto& life = m_state.lives[address];
    if (life.ended >= life.begun) {
      violation("on_connection_closed_cb for " + describe(address) + " after its closed or refused callback");
    }
    ++life.ended;
    if (life.live > 0) {
      --life.live;
    }
    for (const auto key : keys) {
      if (m_state.completed.contains(key)) {
        violation("key " + std::to_string(key) + " returned in on_connection_closed_cb for " + describe(address) +
                  " although on_send_completed_cb reported it");
      }
      ++m_state.returned_total;
      if (++m_state.returned[key] > 1) {
        violation("key " + std::to_string(key) + " returned more than once in on_connection_closed_cb");
      }
    }
    m_state.closed.push_back({address, keys});
  }
  m_changed.notify_all();
}

void Recorder::on_refused(const EndPointAddress& address) {
  {
    std::lock_guard lock{m_mutex};
    check_callback("on_connection_refused_cb", &address);
    auto& life = m_state.lives[address];
    if (!life.send_endpoint) {
      violation("on_connection_refused_cb for " + describe(address) + ", which is no send endpoint of this backend");
    } else if (life.ended >= life.begun) {
      violation("on_connection_refused_cb for " + describe(address) + " after its closed or refused callback");
    } else if (life.live > 0 && life.begun == life.ended + 1) {
      violation("on_connection_refused_cb for " + describe(address) + " after it was established");
    }
    ++life.ended;
    m_state.refused.push_back(address);
  }
  m_changed.notify_all();
}

void Recorder::on_completed(const EndPointAddress& address, std::uint64_t key) {
  std::size_t completions{0};
  {
    std::lock_guard lock{m_mutex};
    check_callback("on_send_completed_cb", &address);
    const auto& life = m_state.lives[address];
    if (life.live == 0) {
      violation("on_send_completed_cb for " + describe(address) + " (key " + std::to_string(key) + ") " +
                (life.ended > 0 ? "after its closed callback" : "before its established callback"));
    }
    if (m_state.returned.contains(key)) {
      violation("key " + std::to_string(key) + " completed after it was returned in on_connection_closed_cb");
    }
    if (++m_state.completed[key] > 1) {
      violation("key " + std::to_string(key) + " completed more than once");
    }
    completions = ++m_state.completions;
  }
  m_changed.notify_all();
  const std::size_t every = m_throw_every.load();
  if (every != 0 && completions % every == 0) {
    throw std::runtime_error("conformance test: exception thrown by on_send_completed_cb on purpose");
  }
}

bool Recorder::on_request(const EndPointAddress& remote) {
  {
    std::lock_guard lock{m_mutex};
    check_callback("on_connection_request_cb", &remote);
    m_state.requests.push_back(remote);
  }
  m_changed.notify_all();
  return m_accept_connections.load();
}

} // namespace netio3::conformance
