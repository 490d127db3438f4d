// The libfabric backend's domains (one per provider domain, shared by its connections) and their
// event queues: connection requests, connected and shutdown events, and their errors, dispatched
// to the listener or connection they name.

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <netinet/in.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_errno.h>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

#include "core/Logging.hpp"
#include "core/Resolve.hpp"
#include "libfabric/BackendLibfabric.hpp"

namespace netio3::libfabric {
namespace {

bool is_tcp_provider(const fi_info& info) {
  return info.fabric_attr->prov_name != nullptr && std::string_view{info.fabric_attr->prov_name} == "tcp";
}

/// Providers whose completion queues never overrun: they keep entries beyond the queue's size in
/// an overflow list (libfabric 1.17: util_cq.c ofi_cq_write_overflow for tcp, sock_cq.c for
/// sockets). Any other provider's queue (verbs: the device's) must have room for every operation
/// its endpoints may have outstanding.
bool queue_never_overruns(const fi_info& info) {
  const std::string_view name = info.fabric_attr->prov_name != nullptr ? info.fabric_attr->prov_name : "";
  return name == "tcp" || name == "sockets";
}

/// Connections per completion queue. The tcp provider (libfabric 1.17, prov/tcp/src/tcpx_cq.c
/// tcpx_progress, and util_wait.c util_wait_fd_try) visits every endpoint bound to a queue, each
/// under its lock, in every fi_cq_read and fi_trywait: a queue for 1,000 connections costs more per
/// read than it saves in wake-ups. Measured with 1,000 connections of 64-byte copy sends
/// (docs/libfabric-backend.md): 1 per queue 29 k msg/s, 8: 46 k, 32: 50-55 k, 128: 50 k, all in
/// one: 38-42 k. Other providers read their queues in O(1): one queue for all.
std::size_t queue_member_limit(const fi_info& info) {
  return is_tcp_provider(info) ? 32 : static_cast<std::size_t>(-1);
}

/// Entries of a shared completion queue: room for a burst of many connections' completions
/// between two reads (256 KiB of entries), and where the provider's queue can overrun, at least
/// what the first connection reserves.
constexpr std::size_t shared_queue_entries = 8192;

} // namespace

// --- domains ----------------------------------------------------------------------------------

std::shared_ptr<DomainContext> BackendLibfabric::acquire_domain(const fi_info& info) {
  const std::string key = domain_key(info);
  if (const auto found = m_domains.find(key); found != m_domains.end()) {
    ++found->second->users;
    return found->second;
  }
  auto domain = std::make_shared<DomainContext>();
  domain->key = key;
  domain->info.reset(fi_dupinfo(&info));
  if (!domain->info) {
    throw std::runtime_error("fi_dupinfo failed: out of memory");
  }
  check(fi_fabric(domain->info->fabric_attr, domain->fabric.out(), nullptr), "fi_fabric");
  check(fi_domain(domain->fabric.get(), domain->info.get(), domain->domain.out(), nullptr), "fi_domain");

  fi_eq_attr attributes{};
  attributes.size = 1024;
  attributes.wait_obj = FI_WAIT_FD;
  if (fi_eq_open(domain->fabric.get(), &attributes, domain->eq.out(), nullptr) != 0) {
    // No fd to wait on: the progress timer polls this event queue.
    attributes.wait_obj = FI_WAIT_NONE;
    check(fi_eq_open(domain->fabric.get(), &attributes, domain->eq.out(), nullptr), "fi_eq_open");
  } else if (fi_control(domain->eq.fid_ptr(), FI_GETWAIT, &domain->eq_fd) != 0) {
    domain->eq_fd = -1;
  }
  // The tcp provider says FI_PROGRESS_AUTO but progresses only inside its queue reads (fi_tcp(7)).
  domain->manual_progress = info.domain_attr->data_progress == FI_PROGRESS_MANUAL ||
                            info.domain_attr->control_progress == FI_PROGRESS_MANUAL || is_tcp_provider(info);
  domain->queue_member_limit = queue_member_limit(info);
  domain->users = 1;
  watch_domain_fd(domain);
  m_domains.emplace(key, domain);
  NETIO3_LOG_DEBUG("libfabric: opened domain {} (event queue fd {}, {} progress)", key, domain->eq_fd,
                   domain->manual_progress ? "manual" : "automatic");
  return domain;
}

void BackendLibfabric::release_domain(const std::shared_ptr<DomainContext>& domain) {
  if (domain && domain->users > 0) {
    --domain->users;
  }
}

void BackendLibfabric::discard_pending_events(DomainContext& domain) {
  if (!domain.eq) {
    return;
  }
  stash_events(domain);
  for (const DomainContext::StashedEvent& stashed : domain.stashed_events) {
    if (stashed.error || stashed.event != FI_CONNREQ) {
      continue;
    }
    // A request nobody will answer: reject it while its listener exists, and free its fi_info (the
    // provider frees neither when the queue closes).
    const auto* entry = reinterpret_cast<const fi_eq_cm_entry*>(stashed.bytes.data());
    const InfoPtr info{entry->info};
    const auto owner = m_fid_owners.find(entry->fid);
    if (info && owner != m_fid_owners.end() && owner->second.listener && owner->second.listener->pep) {
      fi_reject(owner->second.listener->pep.get(), info->handle, nullptr, 0);
    }
  }
  domain.stashed_events.clear();
}

void BackendLibfabric::stash_events(DomainContext& domain) {
  alignas(fi_eq_cm_entry) std::array<std::uint8_t, sizeof(fi_eq_cm_entry) + 256> buffer{};
  for (;;) {
    std::uint32_t event = 0;
    const ssize_t rc = fi_eq_read(domain.eq.get(), &event, buffer.data(), buffer.size(), 0);
    if (rc == -FI_EAVAIL) {
      fi_eq_err_entry error{};
      if (fi_eq_readerr(domain.eq.get(), &error, 0) < 0) {
        return;
      }
      domain.stashed_events.push_back(
          DomainContext::StashedEvent{true, 0, error.fid, eq_error_text(domain, error), {}});
      continue;
    }
    if (rc < 0) {
      return;
    }
    if (static_cast<std::size_t>(rc) >= sizeof(fi_eq_cm_entry)) {
      domain.stashed_events.push_back(DomainContext::StashedEvent{
          false, event, nullptr, {}, std::vector<std::uint8_t>(buffer.begin(), buffer.begin() + rc)});
    }
  }
}

void BackendLibfabric::destroy_domain(DomainContext& domain, bool on_loop) {
  if (domain.eq_fd_registered && on_loop) {
    m_evloop->remove_fd(domain.eq_fd);
  }
  domain.eq_fd_registered = false;
  discard_pending_events(domain);
  close_unused_queues(domain, on_loop, true);
  domain.shared_send.reset();
  domain.shared_receive.reset();
  domain.eq.reset();
  domain.domain.reset();
  domain.fabric.reset();
  domain.retired_infos.clear();
  NETIO3_LOG_DEBUG("libfabric: closed domain {}", domain.key);
}

// --- completion queues -------------------------------------------------------------------------

void BackendLibfabric::join_completion_queue(Connection& connection, std::size_t reservation) {
  DomainContext& domain = *connection.domain;
  const bool receiving = connection.role == Connection::Role::receiver;
  std::shared_ptr<CompletionQueue> chosen;
  for (const auto& queue : domain.queues) {
    if (queue->for_receivers == receiving && queue->cq && queue->members < domain.queue_member_limit &&
        (queue->capacity == 0 || queue->reserved + reservation <= queue->capacity)) {
      chosen = queue;
      break;
    }
  }
  if (!chosen) {
    chosen = std::make_shared<CompletionQueue>(domain, receiving);
    const bool unlimited = queue_never_overruns(*domain.info);
    fi_cq_attr attributes{};
    attributes.format = FI_CQ_FORMAT_MSG;
    attributes.wait_obj = FI_WAIT_FD;
    attributes.wait_cond = FI_CQ_COND_NONE;
    // A device may take fewer entries than asked for (verbs: max_cqe): halve down to what this
    // connection needs before giving up.
    std::size_t size = std::max(shared_queue_entries, reservation);
    int rc = 0;
    for (;;) {
      attributes.size = size;
      rc = fi_cq_open(domain.domain.get(), &attributes, chosen->cq.out(), nullptr);
      if (rc == 0 || unlimited || size / 2 < reservation) {
        break;
      }
      size /= 2;
    }
    if (rc != 0) {
      // No fd to wait on: the progress timer polls this completion queue.
      attributes.wait_obj = FI_WAIT_NONE;
      check(fi_cq_open(domain.domain.get(), &attributes, chosen->cq.out(), nullptr), "fi_cq_open");
    } else if (fi_control(chosen->cq.fid_ptr(), FI_GETWAIT, &chosen->fd) != 0) {
      chosen->fd = -1;
    }
    chosen->capacity = unlimited ? 0 : size;
    if (receiving) {
      chosen->poll_budget = std::chrono::duration_cast<std::chrono::steady_clock::duration>(m_config.receive_poll);
    }
    domain.queues.push_back(chosen);
    NETIO3_LOG_DEBUG("libfabric: opened a completion queue for {} in domain {} ({} entries, fd {})",
                     receiving ? "receivers" : "senders", domain.key, size, chosen->fd);
    watch_queue_fd(chosen);
  }
  check(fi_ep_bind(connection.ep.get(), chosen->cq.fid_ptr(), FI_TRANSMIT | FI_RECV), "fi_ep_bind (completion queue)");
  chosen->reserved += reservation;
  ++chosen->members;
  connection.queue = std::move(chosen);
  connection.queue_reservation = reservation;
}

void BackendLibfabric::leave_completion_queue(Connection& connection) {
  if (!connection.queue) {
    return;
  }
  CompletionQueue& queue = *connection.queue;
  queue.reserved -= std::min(queue.reserved, connection.queue_reservation);
  queue.sends_outstanding -= std::min(queue.sends_outstanding, connection.sends_outstanding);
  if (queue.members > 0) {
    --queue.members;
  }
  // Entries of this connection may still be in the queue (and closing an endpoint may add
  // cancelled ones): they point into it, so it lives until the queue read empty or closes (also
  // when no member is left: a new connection may join the queue before the loop closes it).
  queue.retired.push_back(connection.shared_from_this());
  connection.queue_reservation = 0;
  connection.queue.reset();
}

void BackendLibfabric::close_unused_queues(DomainContext& domain, bool on_loop, bool all) {
  std::erase_if(domain.queues, [&](const std::shared_ptr<CompletionQueue>& queue) {
    if (!all && queue->members > 0) {
      return false;
    }
    if (queue->fd_registered && on_loop) {
      m_evloop->remove_fd(queue->fd);
    }
    queue->fd_registered = false;
    queue->cq.reset();
    queue->retired.clear();
    return true;
  });
}

void BackendLibfabric::watch_domain_fd(const std::shared_ptr<DomainContext>& domain) {
  if (domain->eq_fd < 0 || domain->eq_fd_registered || !domain->eq) {
    return;
  }
  if (!m_evloop->in_loop_thread()) {
    // Registered by the loop thread itself, so that a tear-down on the loop can never overtake a
    // registration still queued in the loop (and find the fd closed when it is applied).
    m_pending_domain_fds.push_back(domain);
    wake_loop();
    return;
  }
  std::weak_ptr<DomainContext> weak = domain;
  m_evloop->register_fd(EventContext{domain->eq_fd, [this, weak](int) { on_eq_ready(weak); }, {}});
  domain->eq_fd_registered = true;
}

void BackendLibfabric::watch_queue_fd(const std::shared_ptr<CompletionQueue>& queue) {
  if (queue->fd < 0 || queue->fd_registered || !queue->cq) {
    return;
  }
  if (!m_evloop->in_loop_thread()) {
    m_pending_queue_fds.push_back(queue); // see watch_domain_fd
    wake_loop();
    return;
  }
  std::weak_ptr<CompletionQueue> weak = queue;
  m_evloop->register_fd(EventContext{queue->fd, [this, weak](int) { on_cq_ready(weak); }, {}});
  queue->fd_registered = true;
  // Completions may have arrived before the fd was watched, and some providers signal only new ones.
  progress_queue_later(queue);
}

void BackendLibfabric::apply_pending_registrations() {
  std::vector<std::weak_ptr<DomainContext>> domains;
  domains.swap(m_pending_domain_fds);
  for (const auto& weak : domains) {
    if (const auto domain = weak.lock()) {
      watch_domain_fd(domain);
    }
  }
  std::vector<std::weak_ptr<CompletionQueue>> queues;
  queues.swap(m_pending_queue_fds);
  for (const auto& weak : queues) {
    if (const auto queue = weak.lock()) {
      watch_queue_fd(queue);
    }
  }
}

// --- the event queue --------------------------------------------------------------------------

void BackendLibfabric::on_eq_ready(const std::weak_ptr<DomainContext>& weak_domain) {
  Lock lock{m_mutex};
  if (m_shutting_down) {
    return;
  }
  const std::shared_ptr<DomainContext> domain = weak_domain.lock();
  if (domain && domain->eq) {
    progress_event_queue(*domain, lock);
  }
  run_deferred(lock);
}

void BackendLibfabric::progress_event_queue(DomainContext& domain, Lock& lock) {
  // Entries read early come first, in their order.
  while (!domain.stashed_events.empty() && !m_shutting_down) {
    const DomainContext::StashedEvent stashed = std::move(domain.stashed_events.front());
    domain.stashed_events.pop_front();
    if (stashed.error) {
      handle_eq_failure(stashed.source, stashed.error_text);
    } else {
      const auto* entry = reinterpret_cast<const fi_eq_cm_entry*>(stashed.bytes.data());
      handle_eq_event(domain, stashed.event, *entry, stashed.bytes.size() - sizeof(fi_eq_cm_entry), lock);
    }
  }
  // Room for a connection-management entry and its parameter data.
  alignas(fi_eq_cm_entry) std::array<std::uint8_t, sizeof(fi_eq_cm_entry) + 256> buffer{};
  for (int round = 0; round < 4; ++round) {
    while (!m_shutting_down && domain.eq) {
      std::uint32_t event = 0;
      const ssize_t rc = fi_eq_read(domain.eq.get(), &event, buffer.data(), buffer.size(), 0);
      if (rc == -FI_EAGAIN) {
        break;
      }
      if (rc == -FI_EAVAIL) {
        handle_eq_error(domain);
        continue;
      }
      if (rc < 0) {
        NETIO3_LOG_ERROR("libfabric: fi_eq_read on domain {} failed: {}", domain.key, fabric_error_text(rc));
        break;
      }
      if (static_cast<std::size_t>(rc) < sizeof(fi_eq_cm_entry)) {
        NETIO3_LOG_WARNING("libfabric: ignoring event {} of {} bytes on domain {}", event, rc, domain.key);
        continue;
      }
      // The entry's parameter data follow it in the buffer (a flexible array member).
      const auto* entry = reinterpret_cast<const fi_eq_cm_entry*>(buffer.data());
      handle_eq_event(domain, event, *entry, static_cast<std::size_t>(rc) - sizeof(fi_eq_cm_entry), lock);
    }
    if (m_shutting_down || !domain.eq || domain.eq_fd < 0) {
      return;
    }
    fid* queue = domain.eq.fid_ptr();
    const int rc = fi_trywait(domain.fabric.get(), &queue, 1);
    if (rc == 0) {
      return; // the fd will signal the next event
    }
    if (rc != -FI_EAGAIN) {
      NETIO3_LOG_WARNING("libfabric: fi_trywait on the event queue of {} failed: {}", domain.key,
                         fabric_error_text(rc));
      break;
    }
  }
  ensure_progress_timer(); // could not put the queue to sleep: poll it
}

void BackendLibfabric::handle_eq_event(DomainContext& domain, std::uint32_t event, const fi_eq_cm_entry& entry,
                                       std::size_t data_size, Lock& lock) {
  // Connection requests carry an fi_info that is ours to free, whatever happens.
  InfoPtr info{event == FI_CONNREQ ? entry.info : nullptr};
  const std::span<const std::uint8_t> data{entry.data, data_size};
  const auto owner = m_fid_owners.find(entry.fid);
  if (owner == m_fid_owners.end()) {
    NETIO3_LOG_DEBUG("libfabric: event {} for an endpoint that is gone (domain {})", event, domain.key);
    return;
  }
  const FidOwner target = owner->second; // a copy: keeps the object alive across callbacks
  switch (event) {
  case FI_CONNREQ:
    if (target.listener) {
      handle_connection_request(target.listener, std::move(info), data, lock);
    }
    break;
  case FI_CONNECTED:
    if (target.connection) {
      handle_connected(*target.connection, data, lock);
    }
    break;
  case FI_SHUTDOWN:
    if (target.connection) {
      const std::shared_ptr<Connection>& connection = target.connection;
      if (connection->state != Connection::State::closing && connection->queue && !connection->queue->draining) {
        // Messages that arrived before the shutdown are delivered first (with those of the other
        // connections on the queue).
        const std::shared_ptr<CompletionQueue> queue = connection->queue;
        std::size_t handled = 0;
        queue->draining = true;
        drain_completions(*queue, lock, handled);
        queue->draining = false;
      }
      if (loss_notice(*connection) == CloseNotice::refused) {
        connect_attempt_failed(connection, "the peer closed the connection before it was established");
      } else {
        begin_close(connection, loss_notice(*connection), "the peer closed the connection");
      }
    }
    break;
  default: NETIO3_LOG_DEBUG("libfabric: ignoring event {} on domain {}", event, domain.key); break;
  }
}

std::string BackendLibfabric::eq_error_text(DomainContext& domain, const fi_eq_err_entry& error) {
  const char* provider_text = fi_eq_strerror(domain.eq.get(), error.prov_errno, error.err_data, nullptr, 0);
  return std::string{fi_strerror(error.err)} + " (provider: " + (provider_text != nullptr ? provider_text : "no text") +
         ")";
}

void BackendLibfabric::handle_eq_error(DomainContext& domain) {
  fi_eq_err_entry error{};
  const ssize_t rc = fi_eq_readerr(domain.eq.get(), &error, 0);
  if (rc < 0) {
    NETIO3_LOG_ERROR("libfabric: fi_eq_readerr on domain {} failed: {}", domain.key, fabric_error_text(rc));
    return;
  }
  handle_eq_failure(error.fid, eq_error_text(domain, error));
}

void BackendLibfabric::handle_eq_failure(const fid* source, const std::string& reason) {
  const auto owner = m_fid_owners.find(source);
  if (owner == m_fid_owners.end()) {
    NETIO3_LOG_DEBUG("libfabric: event queue error for an endpoint that is gone: {}", reason);
    return;
  }
  const FidOwner target = owner->second;
  if (target.connection) {
    const auto& connection = target.connection;
    if (connection->state == Connection::State::connecting) {
      connect_attempt_failed(connection, reason);
    } else {
      begin_close(connection, loss_notice(*connection), "connection error: " + reason);
    }
  } else if (target.listener) {
    NETIO3_LOG_WARNING("libfabric: listen endpoint {}: {}", target.listener->address.to_string(), reason);
  }
}

} // namespace netio3::libfabric
