// Construction, destruction, deferred work and the progress timer of the libfabric backend.

#include "libfabric/BackendLibfabric.hpp"

#include <algorithm>
#include <exception>
#include <utility>

#include "core/BackendFactories.hpp"
#include "core/Logging.hpp"

namespace netio3 {

std::unique_ptr<NetworkBackend> detail::make_libfabric_backend(const NetworkConfig& config,
                                                               std::shared_ptr<BaseEventLoop> evloop) {
  return std::make_unique<libfabric::BackendLibfabric>(config, std::move(evloop));
}

} // namespace netio3

namespace netio3::libfabric {

BackendLibfabric::BackendLibfabric(const NetworkConfig& config, std::shared_ptr<BaseEventLoop> evloop)
  : NetworkBackend{config, std::move(evloop)}, m_provider{select_provider(m_config)}, m_mutex{config.thread_safety ==
                                                                                              ThreadSafetyModel::SAFE} {
  if (m_config.use_shared_send_buffers) {
    if (m_config.shared_send_buf_size == 0 || m_config.shared_send_num_buf == 0) {
      throw UnsupportedConfiguration("libfabric backend: the shared send pool needs buffers (shared_send_buf_size " +
                                     std::to_string(m_config.shared_send_buf_size) + ", shared_send_num_buf " +
                                     std::to_string(m_config.shared_send_num_buf) + ")");
    }
    try {
      m_shared_send_pool = std::make_unique<SendBufferPool>(m_config.shared_send_num_buf, m_config.shared_send_buf_size,
                                                            wire_header_size);
    } catch (const std::exception& error) {
      throw UnsupportedConfiguration(std::string{"libfabric backend: cannot allocate the shared send pool: "} +
                                     error.what());
    }
  }
  if (m_config.use_shared_receive_buffers) {
    if (m_config.shared_receive_buf_size == 0 || m_config.shared_receive_num_buf == 0) {
      throw UnsupportedConfiguration(
          "libfabric backend: the shared receive pool needs buffers (shared_receive_buf_size " +
          std::to_string(m_config.shared_receive_buf_size) + ", shared_receive_num_buf " +
          std::to_string(m_config.shared_receive_num_buf) + ")");
    }
    try {
      m_shared_receive_pool = std::make_unique<SharedReceivePool>(
          m_config.shared_receive_num_buf, align_up(wire_header_size + m_config.shared_receive_buf_size, 64));
    } catch (const std::exception& error) {
      throw UnsupportedConfiguration(std::string{"libfabric backend: cannot allocate the shared receive pool: "} +
                                     error.what());
    }
  }
  if (m_config.receive_poll.count() < 0) {
    throw UnsupportedConfiguration("libfabric backend: receive_poll must not be negative (" +
                                   std::to_string(m_config.receive_poll.count()) + " us)");
  }
  m_completed_keys.reserve(max_queue_depth);
  m_wake = m_evloop->create_signal([this] { on_wake(); });
  m_progress_timer = m_evloop->create_timer([this] { on_progress_timer(); });
  if (m_config.peer_timeout.count() > 0) {
    // peer_timeout 0: no keepalive timer at all, and this side sends no keepalives.
    m_keepalive_period = std::clamp<std::chrono::milliseconds>(m_config.peer_timeout / keepalive_ticks_per_timeout,
                                                               std::chrono::milliseconds{1}, std::chrono::hours{24});
    m_keepalive_timer = m_evloop->create_timer([this] { on_keepalive_timer(); });
  }
  if (m_provider == "tcp" && m_config.connect_timeout.count() > 0) {
    m_unclaimed_timer = m_evloop->create_timer([this] { on_unclaimed_socket_timer(); });
  }
  NETIO3_LOG_DEBUG("libfabric backend created (provider {}, {})", m_provider, to_string(m_config.thread_safety));
}

BackendLibfabric::~BackendLibfabric() {
  // 1. No handler does anything from now on, and no fd of ours stays in the loop. The lock is not
  //    held while waiting for the loop: a handler may be waiting for it.
  // 0. Threads waiting for room or completions return CLOSED; returns once they left the backend
  //    (before the lock: their probes take it).
  m_send_wait.shut_down();
  std::vector<int> fds;
  {
    const Lock lock{m_mutex};
    m_shutting_down = true;
    for (auto& [key, domain] : m_domains) {
      for (const auto& queue : domain->queues) {
        if (queue->fd_registered) {
          fds.push_back(queue->fd);
          queue->fd_registered = false;
        }
      }
      if (domain->eq_fd_registered) {
        fds.push_back(domain->eq_fd);
        domain->eq_fd_registered = false;
      }
    }
  }
  m_wake.reset();
  m_progress_timer.reset();
  m_keepalive_timer.reset();
  m_unclaimed_timer.reset();
  for (const int fd : fds) {
    try {
      m_evloop->remove_fd(fd, false, true);
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("libfabric backend: removing fd {} from the event loop failed: {}", fd, error.what());
    }
  }
  // 2. Close everything, endpoints before their domains, without callbacks. Connection requests
  //    still queued are answered first, while their listeners exist.
  const Lock lock{m_mutex};
  for (auto& [key, domain] : m_domains) {
    discard_pending_events(*domain);
  }
  for (auto& [pointer, connection] : m_connections) {
    teardown_connection(*connection, nullptr);
  }
  m_connections.clear();
  m_senders.clear();
  m_teardown_queue.clear();
  m_ready_again.clear();
  for (auto& [address, listener] : m_listeners) {
    close_listener_now(*listener);
  }
  for (auto& listener : m_listener_teardown_queue) {
    close_listener_now(*listener);
  }
  m_listeners.clear();
  m_listener_teardown_queue.clear();
  m_fid_owners.clear();
  for (auto& [key, domain] : m_domains) {
    destroy_domain(*domain, false);
  }
  m_domains.clear();
  m_notices.clear();
}

void BackendLibfabric::wake_loop() {
  if (m_shutting_down) {
    return;
  }
  try {
    m_wake.fire();
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("libfabric backend: cannot wake the event loop: {}", error.what());
  }
}

void BackendLibfabric::ensure_progress_timer() {
  m_idle_ticks = 0;
  if (m_timer_running || m_shutting_down) {
    return;
  }
  try {
    m_progress_timer.start(progress_tick);
    m_timer_running = true;
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("libfabric backend: cannot start the progress timer: {}", error.what());
  }
}

void BackendLibfabric::progress_queue_later(const std::shared_ptr<CompletionQueue>& queue) {
  if (!queue->ready_again) {
    queue->ready_again = true;
    m_ready_again.push_back(queue);
  }
  wake_loop();
}

void BackendLibfabric::process_teardowns() {
  while (!m_teardown_queue.empty() && !m_shutting_down) {
    std::vector<std::shared_ptr<Connection>> queue;
    queue.swap(m_teardown_queue);
    for (auto& connection : queue) {
      std::vector<std::uint64_t> pending_keys;
      teardown_connection(*connection, &pending_keys);
      if (connection->role == Connection::Role::sender) {
        const auto found = m_senders.find(connection->address);
        if (found != m_senders.end() && found->second == connection) {
          m_senders.erase(found);
        }
      }
      if (connection->listener != nullptr) {
        connection->listener->accepted.erase(connection.get());
        connection->listener = nullptr;
      }
      m_connections.erase(connection.get());
      if (connection->close_notice == CloseNotice::closed) {
        m_notices.push_back(Notice{Notice::Kind::closed, connection->address, std::move(pending_keys)});
      } else if (connection->close_notice == CloseNotice::refused) {
        m_notices.push_back(Notice{Notice::Kind::refused, connection->address, {}});
      }
    }
  }
}

void BackendLibfabric::run_deferred(Lock& lock) {
  apply_pending_registrations();
  while (!m_shutting_down) {
    if (!m_teardown_queue.empty()) {
      process_teardowns();
      continue;
    }
    if (!m_listener_teardown_queue.empty()) {
      std::vector<std::shared_ptr<Listener>> queue;
      queue.swap(m_listener_teardown_queue);
      for (auto& listener : queue) {
        close_listener_now(*listener);
      }
      continue;
    }
    for (auto it = m_domains.begin(); it != m_domains.end();) {
      if (!it->second->queues.empty()) {
        close_unused_queues(*it->second, true, false);
      }
      if (it->second->users == 0) {
        destroy_domain(*it->second, true);
        it = m_domains.erase(it);
      } else {
        ++it;
      }
    }
    if (m_notices.empty()) {
      return;
    }
    deliver_notices(lock);
  }
}

void BackendLibfabric::deliver_notices(Lock& lock) {
  while (!m_notices.empty() && !m_shutting_down) {
    Notice notice = std::move(m_notices.front());
    m_notices.pop_front();
    switch (notice.kind) {
    case Notice::Kind::established:
      if (m_config.on_connection_established_cb) {
        call_user(lock, "on_connection_established_cb", [&] { m_config.on_connection_established_cb(notice.address); });
      }
      break;
    case Notice::Kind::closed:
      if (m_config.on_connection_closed_cb) {
        call_user(lock, "on_connection_closed_cb",
                  [&] { m_config.on_connection_closed_cb(notice.address, notice.pending_keys); });
      }
      break;
    case Notice::Kind::refused:
      if (m_config.on_connection_refused_cb) {
        call_user(lock, "on_connection_refused_cb", [&] { m_config.on_connection_refused_cb(notice.address); });
      }
      break;
    }
  }
}

void BackendLibfabric::on_wake() {
  Lock lock{m_mutex};
  if (m_shutting_down) {
    return;
  }
  apply_pending_registrations();
  // Event-queue entries read early (a listener closed) are handled here.
  std::vector<std::shared_ptr<DomainContext>> stashed;
  for (auto& [key, domain] : m_domains) {
    if (!domain->stashed_events.empty()) {
      stashed.push_back(domain);
    }
  }
  for (auto& domain : stashed) { // a copy: callbacks may change m_domains
    if (domain->eq && !m_shutting_down) {
      progress_event_queue(*domain, lock);
    }
  }
  if (!m_ready_again.empty()) {
    m_poll_scratch.clear();
    m_poll_scratch.swap(m_ready_again);
    for (auto& queue : m_poll_scratch) {
      queue->ready_again = false;
      if (queue->cq && !m_shutting_down) {
        progress_queue(queue, lock);
      }
    }
    m_poll_scratch.clear();
  }
  run_deferred(lock);
}

bool BackendLibfabric::needs_timer(const CompletionQueue& queue) noexcept {
  return queue.members > 0 && queue.cq &&
         (queue.needs_poll || queue.fd < 0 || (queue.domain->manual_progress && queue.sends_outstanding > 0));
}

void BackendLibfabric::on_progress_timer() {
  Lock lock{m_mutex};
  if (m_shutting_down) {
    return;
  }
  bool busy = false;
  const std::uint64_t previous_tick = m_tick++;
  m_poll_scratch.clear();
  // Each queue once per tick, unless the loop read it since the previous tick anyway (busy queues
  // cost the timer nothing).
  const auto list_queue = [&](const std::shared_ptr<CompletionQueue>& queue) {
    busy = true;
    if (queue->listed_tick != m_tick && (queue->serviced_tick != previous_tick || queue->needs_poll || queue->fd < 0)) {
      queue->listed_tick = m_tick;
      m_poll_scratch.push_back(queue);
    }
  };

  // Connections in set-up: their deadlines, their domains' event queues (providers with manual
  // progress advance connection set-up only when their queues are read) and their completion
  // queues. One pass over the connections, and only while some may be in set-up.
  std::vector<std::shared_ptr<DomainContext>> domains;
  if (m_setup_in_progress) {
    check_connect_deadlines();
    bool setting_up = false;
    for (auto& [pointer, connection] : m_connections) {
      if (connection->state != Connection::State::connecting && connection->state != Connection::State::accepting) {
        continue;
      }
      setting_up = true;
      if (connection->domain && std::find(domains.begin(), domains.end(), connection->domain) == domains.end()) {
        domains.push_back(connection->domain);
      }
      if (connection->queue) {
        list_queue(connection->queue);
      }
    }
    m_setup_in_progress = setting_up;
  }
  // Event queues without a wait fd, and completion queues that need reading.
  for (auto& [key, domain] : m_domains) {
    if (domain->eq_fd < 0 && domain->users > 0 && std::find(domains.begin(), domains.end(), domain) == domains.end()) {
      domains.push_back(domain);
    }
    for (const auto& queue : domain->queues) {
      if (needs_timer(*queue)) {
        list_queue(queue);
      }
    }
  }
  for (auto& domain : domains) {
    busy = true;
    if (!m_shutting_down && domain->eq) {
      progress_event_queue(*domain, lock);
    }
  }
  std::vector<std::shared_ptr<CompletionQueue>> polled;
  polled.swap(m_poll_scratch);
  for (auto& queue : polled) {
    if (queue->cq && !m_shutting_down) {
      progress_queue(queue, lock);
      queue->serviced_tick = 0; // read by the timer, not by the loop: poll again next tick
    }
  }
  polled.clear();
  m_poll_scratch.swap(polled); // keep the capacity for the next tick
  run_deferred(lock);

  if (busy) {
    m_idle_ticks = 0;
  } else if (++m_idle_ticks >= idle_ticks_before_stop && m_timer_running) {
    try {
      m_progress_timer.stop();
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("libfabric backend: cannot stop the progress timer: {}", error.what());
    }
    m_timer_running = false;
  }
}

} // namespace netio3::libfabric
