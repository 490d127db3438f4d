// Data path of the libfabric backend: reading the completion queues (shared by the connections of
// a domain and role, see CompletionQueue in Objects.hpp) and handing each completion to its
// connection (sends in DataPath.cpp release their slot, receives go to handle_receive), with the
// fairness budget, the "read again after posting" rounds and receive polling.

#include <algorithm>
#include <array>
#include <chrono>
#include <rdma/fi_errno.h>
#include <string>

#include "core/Logging.hpp"
#include "libfabric/BackendLibfabric.hpp"

namespace netio3::libfabric {

void BackendLibfabric::on_cq_ready(const std::weak_ptr<CompletionQueue>& weak_queue) {
  Lock lock{m_mutex};
  if (m_shutting_down) {
    return;
  }
  const std::shared_ptr<CompletionQueue> queue = weak_queue.lock();
  if (queue && queue->cq) {
    progress_queue(queue, lock);
  }
  run_deferred(lock);
}

void BackendLibfabric::note_posted(Connection& connection) {
  if (!connection.domain->manual_progress || !connection.queue) {
    return;
  }
  ensure_progress_timer();
  CompletionQueue& queue = *connection.queue;
  if (queue.draining) {
    queue.posted_during_drain = true; // progress_queue reads the queue again
  } else if (!queue.ready_again) {
    progress_queue_later(connection.queue);
  }
}

void BackendLibfabric::progress_queue(const std::shared_ptr<CompletionQueue>& queue, Lock& lock) {
  queue->needs_poll = false;
  queue->serviced_tick = m_tick;
  std::size_t handled = 0;
  // Receive polling reads the queue here for at most poll_slice before going through the loop, so
  // that one queue holds neither the loop nor (SAFE mode) the backend's lock for long. Set when
  // polling starts: the clock is read only while polling.
  std::chrono::steady_clock::time_point slice_end{};
  for (int round = 0; round < progress_rounds; ++round) {
    const std::size_t handled_before = handled;
    queue->draining = true;
    queue->posted_during_drain = false;
    drain_completions(*queue, lock, handled);
    queue->draining = false;
    if (m_shutting_down || !queue->cq) {
      return;
    }
    if (handled >= completion_budget) {
      progress_queue_later(queue); // other fds get their turn first
      return;
    }
    if (queue->posted_during_drain) {
      continue; // the provider pushes out what was just posted while its queue is read
    }
    const bool completed = handled > handled_before;
    if (queue->for_receivers && (queue->polling || !completed)) {
      const auto now = std::chrono::steady_clock::now();
      if (keep_polling(*queue, completed, now)) {
        if (slice_end == std::chrono::steady_clock::time_point{}) {
          slice_end = now + poll_slice;
        }
        if (now < slice_end) {
          --round; // polling is not a progress round
          continue;
        }
        progress_queue_later(queue); // through the loop: other fds and threads get their turn
        return;
      }
    }
    if (queue->fd < 0) {
      return; // polled by the progress timer
    }
    fid* waitable = queue->cq.fid_ptr();
    const int rc = fi_trywait(queue->domain->fabric.get(), &waitable, 1);
    if (rc == 0) {
      return; // the fd will signal the next completion
    }
    if (rc != -FI_EAGAIN) {
      NETIO3_LOG_WARNING("libfabric: fi_trywait on a completion queue of domain {} failed: {}", queue->domain->key,
                         fabric_error_text(rc));
      break;
    }
  }
  if (queue->posted_during_drain) {
    progress_queue_later(queue); // still busy: after the others had their turn
    return;
  }
  queue->needs_poll = true; // could not put the queue to sleep: the timer polls it
  ensure_progress_timer();
}

// A receiver woken by part of a large message (the provider's socket became readable, nothing
// completed yet) would sleep again at once and wake for every following segment, and every one of
// those wake-ups is paid by the sending side's CPU (over loopback, the kernel wakes the receiver
// from the sender's system call). Reading the queue again through the loop for a while instead
// lets the message arrive without them (1 MiB messages over the tcp provider: 3 wake-ups per
// message -> 1, docs/performance.md). The budget adapts like KVM's halt polling: doubled (up to
// receive_poll) when a completion came within it, halved when none did, so a queue whose data
// trickles in (a slow link) stops polling; from 0 it grows again when empty wake-ups come closer
// together than receive_poll.
bool BackendLibfabric::keep_polling(CompletionQueue& queue, bool completed, std::chrono::steady_clock::time_point now) {
  using Clock = std::chrono::steady_clock;
  const auto limit = std::chrono::duration_cast<Clock::duration>(m_config.receive_poll);
  if (limit <= Clock::duration::zero()) {
    return false;
  }
  constexpr Clock::duration smallest_budget = std::chrono::microseconds{16};
  if (queue.polling) {
    if (completed) {
      queue.polling = false;
      queue.poll_budget = std::min(limit, std::max(smallest_budget, queue.poll_budget * 2));
      return false;
    }
    if (now < queue.poll_deadline) {
      return true;
    }
    queue.polling = false;
    queue.poll_budget /= 2;
    if (queue.poll_budget < smallest_budget) {
      queue.poll_budget = Clock::duration::zero();
    }
    return false;
  }
  if (completed) {
    return false;
  }
  const bool close_to_previous = now - queue.last_empty_wake < limit;
  queue.last_empty_wake = now;
  if (queue.poll_budget == Clock::duration::zero()) {
    if (!close_to_previous) {
      return false;
    }
    queue.poll_budget = std::min(limit, smallest_budget);
  }
  queue.polling = true;
  queue.poll_deadline = now + queue.poll_budget;
  return true;
}

void BackendLibfabric::drain_completions(CompletionQueue& queue, Lock& lock, std::size_t& handled) {
  std::array<fi_cq_msg_entry, 64> entries{};
  // Connections retired before this read: once the queue reads empty, no entry names them any more.
  const std::size_t retired_before = queue.retired.size();
  while (handled < completion_budget && !m_shutting_down && queue.cq) {
    const ssize_t rc = fi_cq_read(queue.cq.get(), entries.data(), entries.size());
    if (rc == -FI_EAGAIN) {
      // (Nothing shortens the list during a read; min() only keeps that an assumption, not a crash.)
      const auto freed = static_cast<std::ptrdiff_t>(std::min(retired_before, queue.retired.size()));
      queue.retired.erase(queue.retired.begin(), queue.retired.begin() + freed);
      break;
    }
    if (rc == -FI_EAVAIL) {
      handle_cq_error(queue);
      continue;
    }
    if (rc < 0) {
      // The queue itself failed: every connection on it ends.
      const std::string reason = "fi_cq_read failed: " + fabric_error_text(rc);
      NETIO3_LOG_ERROR("libfabric: a completion queue of domain {}: {}", queue.domain->key, reason);
      for (auto& [pointer, connection] : m_connections) {
        if (connection->queue.get() == &queue) {
          begin_close(connection, loss_notice(*connection), reason);
        }
      }
      break;
    }
    const auto count = static_cast<std::size_t>(rc);
    for (std::size_t i = 0; i < count && !m_shutting_down; ++i) {
      const auto* operation = static_cast<const OperationContext*>(entries[i].op_context);
      Connection& connection = *operation->connection;
      if (connection.state == Connection::State::closing) {
        continue; // ended: its tear-down releases what the operation held
      }
      if (!connection.touched) {
        connection.touched = true;
        m_touched.push_back(&connection);
      }
      if (operation->kind == OperationContext::Kind::send) {
        release_slot(connection, operation->index);
        connection.provider_full = false;
      } else {
        handle_receive(connection, operation->index, entries[i].len, lock);
      }
    }
    handled += count;
  }
  finish_touched(lock);
}

void BackendLibfabric::finish_touched(Lock& lock) {
  // Callbacks below may read another queue (FI_SHUTDOWN drains): work on a list of our own.
  for (std::size_t i = 0; i < m_touched.size(); ++i) {
    Connection& connection = *m_touched[i];
    connection.touched = false;
    if (connection.state == Connection::State::closing || m_shutting_down) {
      continue;
    }
    if (connection.role == Connection::Role::receiver) {
      return_credits(connection);
    } else {
      room_changed(connection, lock); // send completions, or credits that came back
    }
  }
  m_touched.clear();
}

void BackendLibfabric::handle_cq_error(CompletionQueue& queue) {
  fi_cq_err_entry error{};
  const ssize_t rc = fi_cq_readerr(queue.cq.get(), &error, 0);
  if (rc < 0) {
    NETIO3_LOG_ERROR("libfabric: fi_cq_readerr on a completion queue of domain {} failed: {}", queue.domain->key,
                     fabric_error_text(rc));
    return;
  }
  if (error.err == FI_ECANCELED || error.op_context == nullptr) {
    return; // flushed while an endpoint closed
  }
  Connection& connection = *static_cast<const OperationContext*>(error.op_context)->connection;
  if (connection.state == Connection::State::closing) {
    return;
  }
  const char* provider_text = fi_cq_strerror(queue.cq.get(), error.prov_errno, error.err_data, nullptr, 0);
  std::string reason = std::string{"completion error: "} + fi_strerror(error.err) +
                       " (provider: " + (provider_text != nullptr ? provider_text : "no text") + ")";
  if (error.err == FI_ETRUNC) {
    reason += ": the peer sent a message larger than the receive buffer";
  }
  NETIO3_LOG_WARNING("libfabric: connection {}: {}", connection.address.to_string(), reason);
  begin_close(connection.shared_from_this(), loss_notice(connection), reason);
}

} // namespace netio3::libfabric
