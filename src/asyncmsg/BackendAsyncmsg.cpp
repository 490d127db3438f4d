// BackendAsyncmsg: construction, destruction, lookups, and the machinery that hands work to the
// loop thread (one signal for posted tasks and for connections that need a flush or completions).

#include "asyncmsg/BackendAsyncmsg.hpp"

#include <exception>
#include <fcntl.h>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/BackendFactories.hpp"
#include "core/Logging.hpp"

namespace netio3::asyncmsg {

namespace {

/// Source of BackendAsyncmsg::m_instance_id.
std::atomic<std::uint64_t> g_next_instance_id{1};

} // namespace

BackendAsyncmsg::BackendAsyncmsg(const NetworkConfig& config, std::shared_ptr<BaseEventLoop> evloop)
  : NetworkBackend{config, std::move(evloop)}, m_thread_safe{config.thread_safety == ThreadSafetyModel::SAFE},
    m_use_data_from{static_cast<bool>(config.on_data_from_cb)},
    m_notify_space{static_cast<bool>(config.on_send_space_cb)}, m_map_mutex{m_thread_safe},
    m_instance_id{g_next_instance_id.fetch_add(1, std::memory_order_relaxed)}, m_post_mutex{m_thread_safe} {
  if (config.mode != NetworkMode::TCP) {
    throw UnsupportedConfiguration("asyncmsg (TCP) backend: network mode " + std::string{to_string(config.mode)} +
                                   " is not supported; use NetworkMode::TCP, or the LIBFABRIC backend for RDMA");
  }
  if (!m_evloop) {
    throw std::invalid_argument("asyncmsg (TCP) backend: the event loop is null");
  }
  if (config.use_shared_send_buffers) {
    if (config.shared_send_num_buf == 0 || config.shared_send_buf_size == 0) {
      throw UnsupportedConfiguration("asyncmsg (TCP) backend: use_shared_send_buffers needs shared_send_num_buf > 0 "
                                     "and shared_send_buf_size > 0");
    }
    if (config.shared_send_buf_size > max_frame_payload) {
      throw UnsupportedConfiguration("asyncmsg (TCP) backend: shared_send_buf_size exceeds the largest message the "
                                     "wire protocol can carry (4 GiB - 1)");
    }
    try {
      m_shared_send_pool =
          std::make_unique<BufferPool>(config.shared_send_num_buf, config.shared_send_buf_size, m_thread_safe);
    } catch (const std::bad_alloc&) {
      throw UnsupportedConfiguration("asyncmsg (TCP) backend: cannot allocate the shared send pool of " +
                                     std::to_string(config.shared_send_num_buf) + " x " +
                                     std::to_string(config.shared_send_buf_size) + " bytes");
    }
  }
  m_completed_keys.reserve(1024);
  m_tasks.reserve(16);
  m_tasks_running.reserve(16);
  m_service.reserve(16);
  m_service_running.reserve(16);
  m_inline_service.reserve(16);
  m_inline_running.reserve(16);
  m_direct_completions.reserve(16);
  m_direct_running.reserve(16);
  m_spare_fd.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  m_wakeup = m_evloop->create_signal([this] { on_wakeup(); });
  m_deadline_timer = m_evloop->create_timer([this] { on_deadline_timer(); });
}

BackendAsyncmsg::~BackendAsyncmsg() {
  // Every callback first checks this flag. Removing the signal and the timer with wait (which the
  // handles do) returns only once the loop has finished the batch of events it was dispatching,
  // so afterwards no callback of ours is running or starts doing anything.
  m_shutting_down.store(true);
  // Threads waiting for room or completions return CLOSED; returns once they left the backend.
  m_send_wait.shut_down();
  m_wakeup.reset();
  m_deadline_timer.reset();
  std::vector<int> fds;
  {
    const std::lock_guard lock{m_registry_mutex};
    fds.assign(m_registered_fds.begin(), m_registered_fds.end());
    m_registered_fds.clear();
  }
  for (const int fd : fds) {
    try {
      m_evloop->remove_fd(fd, false, true);
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("asyncmsg: removing fd {} from the event loop failed: {}", fd, error.what());
    }
  }
  // Send sockets are closed now: a thread's remembered lookup (see find_for_send) may keep a
  // connection object until that thread's next send. Listener and accepted-connection objects
  // close their sockets when their last reference goes (some references may sit in the loop's
  // retired callbacks until its next iteration).
  for (auto& [address, connection] : m_send_endpoints) {
    connection->fd.reset();
  }
}

// --- dispatching ----------------------------------------------------------------------------------

namespace {

/// The backend whose event handler the current thread is running (the loop thread), if any.
/// (initial-exec: read on every send; the default model for a shared library costs a call to
/// __tls_get_addr per access.)
thread_local BackendAsyncmsg* t_dispatching __attribute__((tls_model("initial-exec"))) = nullptr;

/// Rounds of inline service per dispatch: completion callbacks that keep sending are handed to
/// the signal after these, so that one connection cannot keep the loop from its other fds.
constexpr int max_inline_rounds{4};

} // namespace

BackendAsyncmsg::DispatchScope::DispatchScope(BackendAsyncmsg& backend) noexcept
  : m_backend{backend}, m_previous{t_dispatching} {
  t_dispatching = &backend;
  ++backend.m_dispatch_depth;
}

BackendAsyncmsg::DispatchScope::~DispatchScope() {
  if (--m_backend.m_dispatch_depth == 0 &&
      (!m_backend.m_inline_service.empty() || !m_backend.m_direct_completions.empty())) {
    m_backend.run_inline_service();
  }
  t_dispatching = m_previous;
}

void BackendAsyncmsg::run_inline_service() noexcept {
  ++m_dispatch_depth; // sends from the callbacks below queue up here again
  for (int round = 0; round < max_inline_rounds && (!m_inline_service.empty() || !m_direct_completions.empty());
       ++round) {
    if (m_shutting_down.load(std::memory_order_relaxed)) {
      break;
    }
    deliver_direct_completions(); // before any queued completion of the same connections
    m_inline_running.swap(m_inline_service);
    for (const auto& connection : m_inline_running) {
      if (!m_shutting_down.load(std::memory_order_relaxed)) {
        service(*connection);
      }
    }
    m_inline_running.clear();
  }
  --m_dispatch_depth;
  if (!m_direct_completions.empty()) {
    // Completion callbacks that keep sending: the rest is reported at the end of the next dispatch
    // (the signal's, at the latest), after the loop has looked at its other fds.
    fire_wakeup();
  }
  if (!m_inline_service.empty()) {
    // Still busy: continue from the signal, after the loop has looked at its other fds.
    try {
      const std::lock_guard lock{m_post_mutex};
      m_service.insert(m_service.end(), m_inline_service.begin(), m_inline_service.end());
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("asyncmsg: cannot hand connections to the event loop: {}", error.what());
    }
    m_inline_service.clear();
    fire_wakeup();
  }
}

void BackendAsyncmsg::deliver_direct_completions() noexcept {
  if (m_delivering_direct || m_direct_completions.empty()) {
    return;
  }
  m_delivering_direct = true;
  m_direct_running.swap(m_direct_completions);
  for (const DirectCompletion& entry : m_direct_running) {
    SendConnection* const connection = entry.connection;
    if (connection == nullptr) {
      continue; // closed meanwhile: reported with its pending keys
    }
    if (connection->user_closed.load(std::memory_order_relaxed)) {
      try {
        connection->undelivered_keys.push_back(entry.key); // reported with the pending keys
      } catch (const std::bad_alloc&) {
        NETIO3_LOG_ERROR("asyncmsg: no memory to keep the completion of key {} to {}; it is lost", entry.key,
                         connection->address.to_string());
      }
      continue;
    }
    invoke("on_send_completed", m_config.on_send_completed_cb, connection->address, entry.key);
    connection->completed_keys.fetch_add(1, std::memory_order_seq_cst);
  }
  m_send_wait.notify(); // waiters for completed sends (the counters are sequentially consistent)
  // Only now may sends write at once again: what the completion callbacks above sent is queued and
  // leaves in one batch.
  for (const DirectCompletion& entry : m_direct_running) {
    if (entry.connection != nullptr) {
      const std::lock_guard lock{entry.connection->mutex};
      entry.connection->wrote_directly = false;
    }
  }
  m_direct_running.clear();
  m_delivering_direct = false;
}

// --- posting work to the loop -------------------------------------------------------------------

void BackendAsyncmsg::fire_wakeup() {
  if (!m_wakeup_pending.exchange(true)) {
    try {
      m_wakeup.fire();
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("asyncmsg: waking the event loop failed: {}", error.what());
    }
  }
}

void BackendAsyncmsg::post(std::function<void()> task) {
  {
    const std::lock_guard lock{m_post_mutex};
    m_tasks.push_back(std::move(task));
  }
  fire_wakeup();
}

void BackendAsyncmsg::request_service_locked(SendConnection& connection) {
  if (connection.service_requested) {
    return; // already on a list, or being serviced: what was appended is picked up
  }
  connection.service_requested = true;
  if (t_dispatching == this) {
    // Called from inside one of our callbacks: serviced when the dispatch ends, no wake-up needed.
    m_inline_service.push_back(connection.shared_from_this());
    return;
  }
  hand_to_signal_locked(connection);
}

bool BackendAsyncmsg::in_dispatch() const noexcept {
  return t_dispatching == this;
}

void BackendAsyncmsg::note_send() noexcept {
  if (t_dispatching == this) {
    m_sent_in_dispatch = true;
  }
}

void BackendAsyncmsg::hand_to_signal_locked(SendConnection& connection) {
  {
    const std::lock_guard lock{m_post_mutex};
    m_service.push_back(connection.shared_from_this());
  }
  fire_wakeup();
}

void BackendAsyncmsg::on_wakeup() {
  if (m_shutting_down.load(std::memory_order_relaxed)) {
    return;
  }
  const DispatchScope scope{*this};
  m_wakeup_pending.store(false);
  {
    const std::lock_guard lock{m_post_mutex};
    m_tasks_running.swap(m_tasks);
    m_service_running.swap(m_service);
  }
  for (auto& task : m_tasks_running) {
    try {
      task();
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("asyncmsg: a task on the event loop failed: {}", error.what());
    } catch (...) {
      NETIO3_LOG_ERROR("asyncmsg: a task on the event loop failed with an unknown exception");
    }
  }
  m_tasks_running.clear();
  for (const auto& connection : m_service_running) {
    service(*connection);
  }
  m_service_running.clear();
}

void BackendAsyncmsg::register_fd(const EventContext& context) {
  m_evloop->register_fd(context);
  const std::lock_guard lock{m_registry_mutex};
  m_registered_fds.insert(context.fd);
}

void BackendAsyncmsg::unregister_fd(int fd) {
  {
    const std::lock_guard lock{m_registry_mutex};
    m_registered_fds.erase(fd);
  }
  m_evloop->remove_fd(fd, false, false);
}

std::shared_ptr<SendConnection> BackendAsyncmsg::find_send_locked(const EndPointAddress& address) const {
  const auto found = m_send_endpoints.find(address);
  if (found == m_send_endpoints.end()) {
    throw UnknownSendEndpoint("asyncmsg: no send endpoint to " + address.to_string() +
                              " (never opened, closed, or its connection ended)");
  }
  return found->second;
}

namespace {

/// The last data-path lookup of this thread: it holds a reference to the connection, so that a
/// send needs neither the map lock nor a hash computation while the map is unchanged (see
/// BackendAsyncmsg::m_map_generation). The reference lasts until the thread's next lookup of
/// another endpoint (or its exit); sockets are closed by the backend, not by the last reference.
/// The fast path reads only the plain part (no thread-local initialisation check).
struct RememberedLookup {
  std::uint64_t backend{0};
  std::uint64_t generation{0};
  SendConnection* connection{nullptr};
};
thread_local RememberedLookup t_last_lookup __attribute__((tls_model("initial-exec")));
thread_local std::shared_ptr<SendConnection> t_last_lookup_owner;

} // namespace

SendConnection* BackendAsyncmsg::find_for_send(const EndPointAddress& address) const {
  RememberedLookup& remembered = t_last_lookup;
  // A change of the map made before this call (in this thread, or in one this call is ordered
  // after) is seen here; one racing with the call may be missed, as if the call had come first.
  if (remembered.backend == m_instance_id &&
      remembered.generation == m_map_generation.load(std::memory_order_acquire)) {
    const EndPointAddress& known = remembered.connection->address;
    if (known.port() == address.port() && known.address() == address.address()) {
      return remembered.connection;
    }
  }
  const std::shared_lock map_lock{m_map_mutex};
  const auto found = m_send_endpoints.find(address);
  if (found == m_send_endpoints.end()) {
    return nullptr;
  }
  t_last_lookup_owner = found->second;
  remembered = RememberedLookup{m_instance_id, m_map_generation.load(std::memory_order_relaxed), found->second.get()};
  return remembered.connection;
}

// --- buffers ------------------------------------------------------------------------------------

NetworkBuffer* BackendAsyncmsg::get_buffer(const EndPointAddress& address) {
  SendConnection* const found = find_for_send(address); // alive until this thread's next lookup
  if (found == nullptr) {
    throw UnknownSendEndpoint("asyncmsg: get_buffer: no send endpoint to " + address.to_string());
  }
  SendConnection& connection = *found;
  if (connection.pool == nullptr) {
    throw NoBuffersAllocated("asyncmsg: get_buffer: the send endpoint to " + address.to_string() +
                             " was opened without buffers (num_buf == 0 and no shared send pool)");
  }
  const std::lock_guard lock{connection.mutex};
  if (connection.state != ConnectionState::established || connection.broken || connection.user_closed) {
    return nullptr;
  }
  NetworkBuffer* const buffer = connection.pool->acquire(); // the pool lives as long as the connection
  if (buffer == nullptr) {
    note_buffer_refused_locked(connection);
  }
  return buffer;
}

void BackendAsyncmsg::buffer_returned_locked(SendConnection& connection) {
  m_send_wait.notify(); // after the pool's lock: see wait_for_buffer
  const bool shared = connection.pool == m_shared_send_pool.get();
  if (connection.buffer_wanted || (shared && m_shared_buffer_wanted.load(std::memory_order_relaxed))) {
    request_service_locked(connection); // service() calls on_send_space_cb on the loop thread
  }
}

void BackendAsyncmsg::call_back_shared_buffer_waiters() {
  // Cleared before the look, so that a refusal during it arms the next one.
  m_shared_buffer_wanted.store(false, std::memory_order_relaxed);
  m_buffer_ready.clear();
  {
    const std::shared_lock map_lock{m_map_mutex};
    for (const auto& [address, sender] : m_send_endpoints) {
      if (sender->pool != m_shared_send_pool.get()) {
        continue; // its own pool: its own service() calls it back
      }
      const std::lock_guard lock{sender->mutex};
      if (!sender->buffer_wanted) {
        continue;
      }
      if (sender->state == ConnectionState::established && !sender->broken && !sender->user_closed &&
          sender->pool->available() > 0) {
        sender->buffer_wanted = false;
        m_buffer_ready.push_back(sender);
      } else {
        m_shared_buffer_wanted.store(true, std::memory_order_relaxed); // still waiting
      }
    }
  }
  // Indexed, and without the locks: the callbacks may open or close endpoints.
  for (std::size_t i = 0; i < m_buffer_ready.size(); ++i) {
    const std::shared_ptr<SendConnection> ready = m_buffer_ready[i];
    if (!ready->user_closed.load(std::memory_order_relaxed)) {
      invoke("on_send_space", m_config.on_send_space_cb, ready->address);
    }
  }
  m_buffer_ready.clear();
}

std::size_t BackendAsyncmsg::get_num_available_buffers(const EndPointAddress& address) {
  const std::shared_lock map_lock{m_map_mutex};
  const auto found = m_send_endpoints.find(address);
  if (found == m_send_endpoints.end()) {
    throw UnknownSendEndpoint("asyncmsg: get_num_available_buffers: no send endpoint to " + address.to_string());
  }
  if (found->second->pool == nullptr) {
    throw NoBuffersAllocated("asyncmsg: get_num_available_buffers: the send endpoint to " + address.to_string() +
                             " was opened without buffers (num_buf == 0 and no shared send pool)");
  }
  return found->second->pool->take_min_available();
}

// --- waiting for room and completions (any thread but the loop's; SAFE) --------------------------

std::optional<WaitStatus> BackendAsyncmsg::wait_precheck(const EndPointAddress& address,
                                                         std::shared_ptr<SendConnection>& connection) const {
  if (!m_thread_safe) {
    return WaitStatus::NOT_THREAD_SAFE;
  }
  if (m_evloop->in_loop_thread()) {
    return WaitStatus::ON_LOOP_THREAD;
  }
  if (m_shutting_down.load(std::memory_order_relaxed)) {
    return WaitStatus::CLOSED;
  }
  {
    const std::shared_lock map_lock{m_map_mutex};
    const auto found = m_send_endpoints.find(address);
    if (found == m_send_endpoints.end()) {
      return WaitStatus::CLOSED; // never opened, closed, or its connection ended
    }
    connection = found->second;
  }
  return std::nullopt;
}

WaitStatus BackendAsyncmsg::wait_for_send_space(const EndPointAddress& address, std::size_t message_size,
                                                std::chrono::milliseconds timeout) {
  detail::SendWaitHub::check_timeout("asyncmsg: wait_for_send_space", timeout);
  std::shared_ptr<SendConnection> held;
  if (const auto early = wait_precheck(address, held)) {
    return *early;
  }
  SendConnection& connection = *held;
  const std::size_t frame =
      message_size > max_frame_payload ? max_frame_payload + frame_header_size : frame_header_size + message_size;
  return m_send_wait.wait(timeout, "asyncmsg: wait_for_send_space", [&]() -> std::optional<WaitStatus> {
    const std::lock_guard lock{connection.mutex};
    if (ended_for_waiters(connection)) {
      return WaitStatus::CLOSED;
    }
    if (connection.state != ConnectionState::established) {
      return std::nullopt; // the established notice wakes us
    }
    if (message_size > connection.peer_limit || connection.would_accept(frame)) {
      return WaitStatus::READY; // (too large: the send says MESSAGE_TOO_LARGE at once)
    }
    return std::nullopt;
  });
}

bool BackendAsyncmsg::ended_for_waiters(const SendConnection& connection) const noexcept {
  return m_shutting_down.load(std::memory_order_relaxed) || connection.state == ConnectionState::closed ||
         connection.broken || connection.user_closed.load(std::memory_order_relaxed);
}

WaitStatus BackendAsyncmsg::wait_for_buffer(const EndPointAddress& address, std::chrono::milliseconds timeout) {
  detail::SendWaitHub::check_timeout("asyncmsg: wait_for_buffer", timeout);
  std::shared_ptr<SendConnection> held;
  if (const auto early = wait_precheck(address, held)) {
    return *early;
  }
  SendConnection& connection = *held;
  if (connection.pool == nullptr) {
    throw NoBuffersAllocated("asyncmsg: wait_for_buffer: the send endpoint to " + address.to_string() +
                             " was opened without buffers (num_buf == 0 and no shared send pool)");
  }
  // get_buffer's conditions. Buffers come back under the pool's lock and the notice follows (the
  // loop's in service(), a direct write's in buffer_returned_locked, a close's in
  // close_send_connection): a probe that found none free came before that release, so the notice
  // sees this waiter (core/SendWait.hpp).
  return m_send_wait.wait(timeout, "asyncmsg: wait_for_buffer", [&]() -> std::optional<WaitStatus> {
    const std::lock_guard lock{connection.mutex};
    if (ended_for_waiters(connection)) {
      return WaitStatus::CLOSED;
    }
    if (connection.state != ConnectionState::established) {
      return std::nullopt; // the established notice wakes us
    }
    return connection.pool->available() > 0 ? std::optional<WaitStatus>{WaitStatus::READY} : std::nullopt;
  });
}

std::uint64_t BackendAsyncmsg::completed_sends(const EndPointAddress& address) {
  const std::shared_lock map_lock{m_map_mutex};
  const auto found = m_send_endpoints.find(address);
  if (found == m_send_endpoints.end()) {
    throw UnknownSendEndpoint("asyncmsg: completed_sends: no send endpoint to " + address.to_string() +
                              " (never opened, closed, or its connection ended)");
  }
  return found->second->completed_keys.load(std::memory_order_seq_cst);
}

WaitStatus BackendAsyncmsg::wait_for_completed_sends(const EndPointAddress& address, std::uint64_t after_count,
                                                     std::chrono::milliseconds timeout) {
  detail::SendWaitHub::check_timeout("asyncmsg: wait_for_completed_sends", timeout);
  std::shared_ptr<SendConnection> held;
  if (const auto early = wait_precheck(address, held)) {
    return *early;
  }
  SendConnection& connection = *held;
  return m_send_wait.wait(timeout, "asyncmsg: wait_for_completed_sends", [&]() -> std::optional<WaitStatus> {
    if (connection.completed_keys.load(std::memory_order_seq_cst) > after_count) {
      return WaitStatus::READY;
    }
    const std::lock_guard lock{connection.mutex};
    if (ended_for_waiters(connection)) {
      return WaitStatus::CLOSED;
    }
    return std::nullopt;
  });
}

} // namespace netio3::asyncmsg

namespace netio3::detail {

std::unique_ptr<NetworkBackend> make_asyncmsg_backend(const NetworkConfig& config,
                                                      std::shared_ptr<BaseEventLoop> evloop) {
  return std::make_unique<asyncmsg::BackendAsyncmsg>(config, std::move(evloop));
}

} // namespace netio3::detail
