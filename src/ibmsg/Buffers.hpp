#pragma once

// Message memory of the ibmsg facade: the book-keeping record behind every ibmsg_buffer, the
// pre-registered send slab of a SEND socket, the receive pool of a loop, and heap buffers.
//
// Why three kinds: a SEND socket's slab is registered with the transport once (RDMA needs that for
// zero-copy sends) and serves ibmsg_alloc_msg without any allocation in steady state; received
// messages are copied out of the transport's buffer (valid only during its callback) into a pooled
// slot that the program owns until ibmsg_free_msg; anything else (a buffer larger than the limit,
// more buffers held than the slab has, a buffer of a RECV socket) comes from the heap and is sent
// with a copying send.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <ibmsg.h>

namespace netio3::ibmsg {

class Loop;
class SendEndpoint;
class SendSlab;
class ReceivePool;

/// Where a buffer's memory comes from.
enum class BufferOrigin : std::uint8_t { SendSlab, ReceivePool, Heap };

/// Who owns a buffer right now.
enum class BufferState : std::uint8_t {
  Free,             ///< in its pool (slab or receive pool); never seen for heap buffers
  Held,             ///< owned by the program (allocated or received), not being sent
  InFlight,         ///< posted; the transport may still read it
  InFlightOrphaned, ///< posted, then freed by the program: reclaimed when the send ends
};

/// The record behind one ibmsg_buffer (`ibmsg_buffer::ibmsg_private` points here). Its address is
/// also the key of the buffer's send, so a completion finds it without a lookup.
struct BufferRecord {
  std::uint8_t* data{nullptr};
  /// Bytes of memory behind `data`.
  std::size_t capacity{0};
  /// Bytes the program asked for (or received): what it may send from this buffer.
  std::size_t usable{0};
  BufferOrigin origin{BufferOrigin::Heap};
  BufferState state{BufferState::Free};
  /// The program's struct whose status the library updates (the one given to alloc or post_send,
  /// or the socket's recv_buffer); null once freed.
  ibmsg_buffer* user{nullptr};
  /// SendSlab origin: the slab. ReceivePool origin: the pool. Heap origin: the loop that tracks the
  /// buffer, or null when it was allocated for a socket without a loop.
  void* owner{nullptr};
  /// While in flight: the endpoint that sends it, and the links of that endpoint's in-flight list.
  SendEndpoint* endpoint{nullptr};
  BufferRecord* previous_in_flight{nullptr};
  BufferRecord* next_in_flight{nullptr};
};

/// The memory of a SEND socket's zero-copy sends: `slot_count` slots of `slot_size` bytes in one
/// anonymous mapping (page-aligned, registered by the transport when the endpoint opens). Slots
/// outlive the endpoint while the program still holds them.
class SendSlab {
public:
  /// @throws std::bad_alloc if the mapping fails
  SendSlab(Loop* loop, std::size_t slot_size, std::size_t slot_count);
  ~SendSlab();
  SendSlab(const SendSlab&) = delete;
  SendSlab& operator=(const SendSlab&) = delete;
  SendSlab(SendSlab&&) = delete;
  SendSlab& operator=(SendSlab&&) = delete;

  /// A free slot for a message of `size` bytes, or null if none is free or it does not fit.
  [[nodiscard]] BufferRecord* acquire(std::size_t size) noexcept;
  /// Returns a slot to the slab.
  void release(BufferRecord* record) noexcept;

  [[nodiscard]] std::uint8_t* region_start() const noexcept { return m_memory; }
  [[nodiscard]] std::size_t region_size() const noexcept { return m_region_size; }
  [[nodiscard]] std::size_t slots_in_use() const noexcept { return m_records.size() - m_free.size(); }
  [[nodiscard]] Loop* loop() const noexcept { return m_loop; }
  /// False once the endpoint is gone: the slab only waits for its last slot to come back.
  bool endpoint_alive{true};

  /// How many slots a SEND socket gets for messages of up to `max_message_size` bytes.
  [[nodiscard]] static std::size_t slot_count_for(std::size_t max_message_size) noexcept;

private:
  Loop* m_loop;
  std::uint8_t* m_memory{nullptr};
  std::size_t m_region_size{0};
  std::vector<BufferRecord> m_records;
  std::vector<BufferRecord*> m_free;
};

/// The slots that received messages are copied into, shared by every RECV socket of a loop. Grows
/// in chunks while the program holds more messages, up to a fixed number of bytes; never shrinks
/// (the steady state allocates nothing).
class ReceivePool {
public:
  explicit ReceivePool(std::size_t slot_size);
  ~ReceivePool() = default;
  ReceivePool(const ReceivePool&) = delete;
  ReceivePool& operator=(const ReceivePool&) = delete;
  ReceivePool(ReceivePool&&) = delete;
  ReceivePool& operator=(ReceivePool&&) = delete;

  /// A free slot, growing the pool if needed; null when the program holds the pool's limit.
  [[nodiscard]] BufferRecord* acquire() noexcept;
  void release(BufferRecord* record) noexcept;
  [[nodiscard]] std::size_t slot_size() const noexcept { return m_slot_size; }
  [[nodiscard]] std::size_t slots_in_use() const noexcept { return m_total_slots - m_free.size(); }

  /// Most bytes of received messages the program may hold at once (at least a few slots).
  static constexpr std::size_t max_held_bytes{std::size_t{256} << 20U};

private:
  bool grow() noexcept;

  std::size_t m_slot_size;
  std::size_t m_chunk_slots;
  std::size_t m_max_slots;
  std::size_t m_total_slots{0};
  std::vector<std::unique_ptr<std::uint8_t[]>> m_memory_chunks;
  std::vector<std::unique_ptr<BufferRecord[]>> m_record_chunks;
  std::vector<BufferRecord*> m_free;
};

/// A heap buffer of `size` bytes tracked by `loop` (may be null). Null if out of memory.
[[nodiscard]] BufferRecord* allocate_heap_buffer(Loop* loop, std::size_t size) noexcept;
/// Frees a heap buffer (and untracks it from its loop when `untrack`).
void free_heap_buffer(BufferRecord* record, bool untrack) noexcept;

/// Gives a buffer back to where it came from (slab, receive pool or heap). The program's struct is
/// not touched.
void release_buffer(BufferRecord* record) noexcept;

} // namespace netio3::ibmsg
