#pragma once

// The buffered-send pool of a send endpoint, or the backend-wide shared one (private).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "asyncmsg/OptionalMutex.hpp"
#include "asyncmsg/WireProtocol.hpp"
#include "netio3/NetworkBuffer.hpp"

namespace netio3::asyncmsg {

/// `num_buf` buffers of `buf_size` bytes in one allocation, each preceded by room for a frame
/// header, so that a buffer is written to the socket with its header as one iovec and never copied.
///
/// Every buffer is free, handed out (between `acquire` and `send_buffer`) or in flight (queued
/// until written). Thread-safe when built with `thread_safe` (the shared pool is used by several
/// endpoints; a per-endpoint pool by the caller's thread and the loop thread).
class BufferPool {
public:
  /// @throws std::bad_alloc
  BufferPool(std::size_t num_buf, std::size_t buf_size, bool thread_safe);
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;
  BufferPool(BufferPool&&) = delete;
  BufferPool& operator=(BufferPool&&) = delete;
  ~BufferPool() = default;

  /// A free buffer (now handed out, `pos()` reset to 0), or nullptr when none is free.
  [[nodiscard]] NetworkBuffer* acquire();
  /// True when `buffer` belongs to this pool.
  [[nodiscard]] bool owns(const NetworkBuffer* buffer) const noexcept;
  /// Handed out -> in flight. False (nothing changed) when the buffer is not handed out (free, or
  /// already being sent).
  [[nodiscard]] bool start_send(const NetworkBuffer& buffer);
  /// In flight -> handed out again (a send that was not accepted after all).
  void cancel_send(std::size_t index);
  /// In flight -> free. Returns true when no buffer was free before: only then may a thread wait
  /// for one (wait_for_buffer) or a refused get_buffer want one, so only then must the caller say so.
  bool release(std::size_t index);
  /// The frame (header room followed by the first `payload` bytes of the buffer) of buffer `index`;
  /// writes the frame header.
  [[nodiscard]] std::uint8_t* frame(std::size_t index, std::uint32_t payload) noexcept;
  /// The minimum number of free buffers since the previous call (the current number on the first).
  [[nodiscard]] std::size_t take_min_available();
  /// Free buffers now.
  [[nodiscard]] std::size_t available();
  /// Number of buffers.
  [[nodiscard]] std::size_t count() const noexcept { return m_buffers.size(); }

private:
  enum class State : std::uint8_t { free, handed_out, in_flight };

  OptionalMutex m_mutex;
  std::size_t m_slot_size;
  std::unique_ptr<std::uint8_t[]> m_memory;
  std::vector<std::unique_ptr<NetworkBuffer>> m_buffers;
  std::vector<State> m_states;
  std::vector<std::size_t> m_free; ///< stack of free indices (capacity fixed at num_buf)
  std::size_t m_min_free{0};
  bool m_queried{false};
};

} // namespace netio3::asyncmsg
