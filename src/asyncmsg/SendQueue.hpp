#pragma once

/// @file
/// The send queue of one TCP connection (pure code: no sockets, no locks; the caller locks).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <sys/uio.h>
#include <utility>
#include <vector>

namespace netio3::asyncmsg {

/// A FIFO ring of trivially copyable `T` whose capacity (a power of two) doubles when full. It
/// only allocates while growing, so once it has reached the size a workload needs, pushing and
/// popping never allocate.
template <typename T>
class GrowableRing {
public:
  explicit GrowableRing(std::size_t initial_capacity) { reallocate(round_up(initial_capacity)); }

  [[nodiscard]] std::size_t size() const noexcept { return m_tail - m_head; }
  [[nodiscard]] bool empty() const noexcept { return m_tail == m_head; }
  [[nodiscard]] std::size_t capacity() const noexcept { return m_mask + 1; }

  /// Makes room for `count` more elements (may allocate; throws std::bad_alloc).
  void reserve_more(std::size_t count) {
    if (size() + count > capacity()) {
      reallocate(round_up(size() + count));
    }
  }
  /// Appends; there must be room (see `reserve_more`).
  void push_back_reserved(const T& value) noexcept {
    m_items[m_tail & m_mask] = value;
    ++m_tail;
  }
  [[nodiscard]] T& front() noexcept { return m_items[m_head & m_mask]; }
  [[nodiscard]] const T& front() const noexcept { return m_items[m_head & m_mask]; }
  [[nodiscard]] T& back() noexcept { return m_items[(m_tail - 1) & m_mask]; }
  /// The element `index` places after the front.
  [[nodiscard]] const T& at(std::size_t index) const noexcept { return m_items[(m_head + index) & m_mask]; }
  void pop_front() noexcept { ++m_head; }
  void clear() noexcept { m_head = m_tail = 0; }

private:
  static std::size_t round_up(std::size_t wanted) noexcept {
    std::size_t capacity = 16;
    while (capacity < wanted) {
      capacity *= 2;
    }
    return capacity;
  }
  void reallocate(std::size_t capacity) {
    auto items = std::make_unique<T[]>(capacity);
    const std::size_t count = size();
    for (std::size_t index = 0; index < count; ++index) {
      items[index] = at(index);
    }
    m_items = std::move(items);
    m_mask = capacity - 1;
    m_head = 0;
    m_tail = count;
  }

  std::unique_ptr<T[]> m_items;
  std::size_t m_mask{0};
  std::size_t m_head{0};
  std::size_t m_tail{0};
};

/// What to do once a queued message has been written completely.
struct Completion {
  enum class Kind : std::uint8_t {
    key,    ///< report `value` (the send's key) through on_send_completed_cb
    buffer, ///< return buffer `value` to its pool (buffered sends carry no key)
  };
  std::uint64_t end{0};   ///< stream position just after the message's last byte
  std::uint64_t value{0}; ///< the key or the buffer index
  Kind kind{Kind::key};
};

/// The bytes waiting to be written on one connection, in order, and what to report when each
/// message is out.
///
/// - Copied bytes (frame headers, header data, copying sends) go into a byte ring; consecutive
///   copied bytes form one chunk, so a burst of small copying sends is written with one iovec.
/// - Zero-copy payloads and send buffers are chunks that point into the caller's or the pool's
///   memory; nothing of them is copied.
/// - Completions record the stream position at which each message ends; a message is complete
///   when the written position passes it.
///
/// `gather` fills an iovec array from the front for one `writev`/`sendmsg`; while that write is in
/// flight (the caller may drop its lock), appending is still allowed: memory of the ring that grows
/// meanwhile is kept until `finish_write`, so the iovecs stay valid.
///
/// Every structure grows by doubling up to what the byte bound allows and is then reused: steady
/// state appends and writes never allocate.
class SendQueue {
public:
  /// @param max_unsent_bytes bound on queued, unwritten bytes (a single larger message is still
  ///        accepted into an empty queue, so that every message the peer accepts can be sent)
  explicit SendQueue(std::size_t max_unsent_bytes);

  /// Bytes queued and not written yet.
  [[nodiscard]] std::uint64_t unsent_bytes() const noexcept { return m_queued_end - m_written; }
  /// True when nothing waits to be written.
  [[nodiscard]] bool empty() const noexcept { return m_queued_end == m_written; }
  /// True when a message of `bytes` (framing included) fits within the bound now.
  [[nodiscard]] bool would_accept(std::size_t bytes) const noexcept {
    return empty() || unsent_bytes() + bytes <= m_max_unsent_bytes;
  }
  /// True when completions are waiting (written or not).
  [[nodiscard]] bool has_completions() const noexcept { return !m_completions.empty(); }
  /// Messages (completion records) in the queue, written or not.
  [[nodiscard]] std::size_t message_count() const noexcept { return m_completions.size(); }
  /// True when at least one completion can be popped.
  [[nodiscard]] bool has_finished_messages() const noexcept {
    return !m_completions.empty() && m_completions.front().end <= m_written;
  }
  /// True between `gather` and `finish_write`.
  [[nodiscard]] bool write_in_flight() const noexcept { return m_write_in_flight; }

  /// Makes room for a message of `copied_bytes` copied bytes and `user_chunks` chunks of foreign
  /// memory. Throws std::bad_alloc (then nothing changed); afterwards the appends cannot fail.
  void reserve(std::size_t copied_bytes, std::size_t user_chunks);
  /// Appends bytes that are copied now (room reserved).
  void append_copy(std::span<const std::uint8_t> bytes) noexcept;
  /// Appends a chunk of memory that is written from where it is (room reserved). Empty: ignored.
  void append_user(const std::uint8_t* data, std::size_t size) noexcept;
  /// Ends the message appended since the previous `end_message` (room reserved).
  void end_message(Completion::Kind kind, std::uint64_t value) noexcept;

  /// Records a message of `bytes` bytes that was written completely without being queued (the
  /// queue must be empty), so that its completion comes in order with the others.
  void record_written_message(std::size_t bytes, Completion::Kind kind, std::uint64_t value);

  /// Records that the first `bytes` bytes of the message about to be appended were already
  /// written directly (the queue must be empty); only the rest is appended.
  void skip_written(std::size_t bytes) noexcept {
    m_queued_end += bytes;
    m_written += bytes;
  }

  /// Fills up to `max_iov` iovecs with the bytes at the front. Returns the count and sets `bytes`.
  /// Marks a write in flight.
  std::size_t gather(iovec* iov, std::size_t max_iov, std::size_t& bytes) noexcept;
  /// Ends the write begun by `gather`: `written` bytes (0 if none) left the queue.
  void finish_write(std::size_t written) noexcept;
  /// Drops `count` bytes from the front without a gather (after a direct partial write).
  void consume(std::size_t count) noexcept;

  /// Pops every completion whose message is completely written, calling `handle(const Completion&)`.
  template <typename Handle>
  std::size_t pop_finished(Handle&& handle) {
    std::size_t count = 0;
    while (!m_completions.empty() && m_completions.front().end <= m_written) {
      const Completion completion = m_completions.front();
      m_completions.pop_front();
      handle(completion);
      ++count;
    }
    return count;
  }

  /// Empties the queue (the connection is gone), calling `handle(const Completion&)` for every
  /// completion not popped yet, written or not, in order.
  template <typename Handle>
  void drain(Handle&& handle) {
    while (!m_completions.empty()) {
      const Completion completion = m_completions.front();
      m_completions.pop_front();
      handle(completion);
    }
    m_chunks.clear();
    m_front_offset = 0;
    m_ring_head = m_ring_tail;
    m_written = m_queued_end;
  }

  /// Current capacity of the byte ring (for tests).
  [[nodiscard]] std::size_t ring_capacity() const noexcept { return m_ring_mask + 1; }

private:
  /// One contiguous piece of the stream: in the byte ring (user == nullptr, at ring position
  /// `ring_position`) or in foreign memory.
  struct Chunk {
    const std::uint8_t* user{nullptr};
    std::uint64_t ring_position{0};
    std::size_t size{0};
  };

  void grow_ring(std::size_t needed);

  std::size_t m_max_unsent_bytes;

  // The byte ring: logical positions [m_ring_head, m_ring_tail) hold copied bytes not written yet.
  std::unique_ptr<std::uint8_t[]> m_ring;
  std::size_t m_ring_mask{0};
  std::uint64_t m_ring_head{0};
  std::uint64_t m_ring_tail{0};
  /// Ring memory replaced while a write was in flight; freed when it finishes.
  std::vector<std::unique_ptr<std::uint8_t[]>> m_retired;

  GrowableRing<Chunk> m_chunks{64};
  std::size_t m_front_offset{0}; ///< bytes of the front chunk already written

  GrowableRing<Completion> m_completions{64};
  std::uint64_t m_queued_end{0}; ///< stream position after the last queued byte
  std::uint64_t m_written{0};    ///< stream position after the last written byte
  bool m_write_in_flight{false};
};

} // namespace netio3::asyncmsg
