#pragma once

// The objects behind send endpoints, listen endpoints and accepted connections (private to the
// TCP backend). Which thread may touch what is written next to each field.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include "asyncmsg/BufferPool.hpp"
#include "asyncmsg/OptionalMutex.hpp"
#include "asyncmsg/SendQueue.hpp"
#include "asyncmsg/WireProtocol.hpp"
#include "core/Resolve.hpp"
#include "netio3/EndPointAddress.hpp"
#include "netio3/NetworkConfig.hpp"

namespace netio3::asyncmsg {

/// Closes the fd it holds when destroyed (the owner of a socket that has not been torn down).
class OwnedFd {
public:
  OwnedFd() = default;
  explicit OwnedFd(int fd) noexcept : m_fd{fd} {}
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  OwnedFd(OwnedFd&&) = delete;
  OwnedFd& operator=(OwnedFd&&) = delete;
  ~OwnedFd() { reset(); }
  [[nodiscard]] int get() const noexcept { return m_fd; }
  /// Closes the fd held (if any) and holds `fd` instead.
  void reset(int fd = -1) noexcept {
    if (m_fd >= 0) {
      ::close(m_fd);
    }
    m_fd = fd;
  }
  /// Gives up ownership without closing.
  [[nodiscard]] int release() noexcept {
    const int fd = m_fd;
    m_fd = -1;
    return fd;
  }

private:
  int m_fd{-1};
};

/// Life of a connection. Send side: connecting -> handshake -> established -> closed; receive
/// side: handshake -> established -> closed.
enum class ConnectionState : std::uint8_t { connecting, handshake, established, closed };

/// A send endpoint: one outgoing connection.
///
/// Threads: `mutex` guards the fields marked (M); they are touched by callers of the public API
/// (SAFE: any thread) and by the loop thread. Fields marked (L) belong to the loop thread. The
/// rest is fixed after construction.
///
/// Two queues: senders append to `queue` under the mutex; the loop takes a whole batch at once
/// (swaps `queue` with the empty `outgoing` under the mutex) and then writes it and reports its
/// completions without the mutex, so that senders and the loop meet once per batch instead of
/// several times per write. Messages never overtake each other: the loop takes the next batch only
/// when `outgoing` is completely written and its completions reported, and a sender writes
/// directly only when both queues are empty and the loop is not working on the connection.
struct SendConnection : std::enable_shared_from_this<SendConnection> {
  SendConnection(const EndPointAddress& endpoint, int socket_fd, bool thread_safe, std::size_t max_unsent_bytes)
    : address{endpoint}, fd{socket_fd}, mutex{thread_safe}, max_unsent{max_unsent_bytes},
      queues{{AlignedQueue{SendQueue{max_unsent_bytes}}, AlignedQueue{SendQueue{max_unsent_bytes}}}} {}

  /// (M) where senders append.
  [[nodiscard]] SendQueue& queue() noexcept { return queues[incoming].queue; }
  [[nodiscard]] const SendQueue& queue() const noexcept { return queues[incoming].queue; }
  /// (L) the batch the loop is writing.
  [[nodiscard]] SendQueue& outgoing() noexcept { return queues[incoming ^ 1U].queue; }
  /// (loop thread, mutex held) `outgoing` is done: the messages queued since become the next batch.
  void take_batch() noexcept { incoming ^= 1U; }

  /// True when a message of `bytes` bytes (framing included) fits within the bound on unsent bytes
  /// now (mutex held). An empty connection always takes one message, so that any message the
  /// receiver accepts can be sent.
  [[nodiscard]] bool would_accept(std::size_t bytes) const noexcept {
    const std::uint64_t in_flight = outgoing_unsent.load(std::memory_order_relaxed);
    const std::uint64_t unsent = queue().unsent_bytes() + in_flight;
    return unsent == 0 || unsent + bytes <= max_unsent;
  }

  const EndPointAddress address; ///< as given to open_send_endpoint: named in every callback
  OwnedFd fd;

  OptionalMutex mutex;
  ConnectionState state{ConnectionState::connecting}; ///< (M) written by the loop thread only
  std::uint64_t peer_limit{0};                        ///< (M) the receiver's largest message
  bool service_requested{false};                      ///< (M) queued on a service list, or being serviced
  bool blocked{false};                                ///< (M) the socket is full: the writable event flushes
  bool broken{false};                                 ///< (M) a write failed: the connection is being closed
  /// (M) a send from inside one of our callbacks wrote a message at once and its completion is not
  /// reported yet: later sends queue behind it, so that a burst sent from callbacks leaves in one
  /// batch (one write), not one write per message.
  bool wrote_directly{false};
  /// (M) the last batch the loop took held several messages: the application sends in bursts.
  /// Then even the first message of a burst is queued (not written at once), so that the whole
  /// burst leaves in one write instead of two and wakes the receiver once. A batch of one message
  /// turns direct writes (the lowest latency for lone messages) back on.
  bool bursting{false};
  /// close_send_endpoint was called: report nothing but the close. Written under `mutex`; read
  /// without it between completion callbacks.
  std::atomic<bool> user_closed{false};
  const std::uint64_t max_unsent; ///< NetworkConfig::max_unsent_bytes
  /// Keyed sends reported by on_send_completed_cb (NetworkBackend::completed_sends). Written by the
  /// loop thread only (sequentially consistent, see core/SendWait.hpp), read by any thread.
  std::atomic<std::uint64_t> completed_keys{0};
  /// (M) a send was refused for lack of room while on_send_space_cb is set: the loop calls it once a
  /// message of `space_wanted_bytes` (framing included) fits again.
  bool space_wanted{false};
  std::size_t space_wanted_bytes{0}; ///< (M)
  /// (M) get_buffer returned nullptr on the established endpoint while on_send_space_cb is set: the
  /// loop calls it once get_buffer could return a buffer (armed apart from `space_wanted`).
  bool buffer_wanted{false};

  /// Which of `queues` senders append to (M; written by the loop thread only, so the loop reads it
  /// without the mutex).
  unsigned incoming{0};
  /// The two queues, each on cache lines of its own: the loop updates `outgoing` while senders work
  /// on `queue`. Switching them is flipping `incoming`.
  struct alignas(64) AlignedQueue {
    SendQueue queue;
  };
  std::array<AlignedQueue, 2> queues;
  /// Unwritten bytes of `outgoing`: written by the loop, read by senders (mutex held) to keep the
  /// bound on unsent bytes.
  alignas(64) std::atomic<std::uint64_t> outgoing_unsent{0};
  /// Keys taken off the queue for delivery but not delivered because the endpoint was closed
  /// meanwhile: reported with the pending keys instead. (L)
  std::vector<std::uint64_t> undelivered_keys;

  /// The pool of get_buffer/send_buffer: `own_pool`, the backend's shared pool, or none.
  std::unique_ptr<BufferPool> own_pool;
  BufferPool* pool{nullptr};

  // (L) handshake and loop-side state
  bool registered{false};
  bool write_interest{false};
  std::size_t hello_sent{0};
  std::array<std::uint8_t, reply_size> reply{};
  std::size_t reply_received{0};
  /// The connect failed at once (e.g. ECONNREFUSED on loopback) for every address: report refused
  /// when started.
  int immediate_error{0};
  /// The addresses of the destination not tried yet, in getaddrinfo's order (a host name can have
  /// several): a connect that fails before the handshake moves on to the next one.
  std::vector<detail::ResolvedAddress> untried;
  /// The address being tried ("::1"), and what became of those tried before, for the log.
  std::string trying;
  std::string failed_attempts;
  /// Counts connect attempts, so that the deadline of an abandoned attempt is ignored.
  std::uint32_t attempt{0};
};

struct Listener;

/// A connection accepted by a listen endpoint. Loop thread only.
struct RecvConnection : std::enable_shared_from_this<RecvConnection> {
  RecvConnection(const EndPointAddress& remote, int socket_fd, Listener* owner)
    : peer{remote}, fd{socket_fd}, listener{owner} {}

  const EndPointAddress peer; ///< the peer's address and port: named in every callback
  OwnedFd fd;
  Listener* listener; ///< outlives the connection (closing a listener closes its connections first)
  ConnectionState state{ConnectionState::handshake};
  std::array<std::uint8_t, hello_size> hello{};
  std::size_t hello_received{0};
  /// Created when the handshake succeeds (so that floods of half-open connections cost no buffers).
  std::optional<FrameDecoder> decoder;
  /// Reads until delayed acknowledgements are asked for again (TCP_QUICKACK = 0 does not last).
  std::uint32_t reads_until_ack_mode{0};
  /// Spin-waits for a response in a row that found nothing (see BackendAsyncmsg::on_data_readable).
  std::uint32_t spin_misses{0};
  /// Counts the chances to spin skipped after too many misses; every so often one is taken.
  std::uint32_t spin_skipped{0};
  /// The socket's SO_RCVLOWAT (1 unless a large message is being received).
  int receive_low_water{1};
};

/// A listen endpoint.
struct Listener : std::enable_shared_from_this<Listener> {
  Listener(const EndPointAddress& endpoint, int socket_fd, std::uint64_t message_limit)
    : address{endpoint}, fd{socket_fd}, max_message_size{message_limit} {}

  const EndPointAddress address; ///< as returned by open_listen_endpoint (real port)
  OwnedFd fd;
  const std::uint64_t max_message_size;
  std::atomic<bool> closing{false}; ///< close_listen_endpoint was called (any thread)
  bool registered{false};           ///< (loop thread)
  /// Accepted connections, handshaking or established (loop thread).
  std::unordered_map<RecvConnection*, std::shared_ptr<RecvConnection>> connections;
};

} // namespace netio3::asyncmsg
