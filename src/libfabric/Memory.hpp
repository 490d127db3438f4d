#pragma once

// Memory of the libfabric backend (private): page-aligned host memory, its registration with a
// libfabric domain, the bounce ring of copying sends and the pools of send and receive buffers.
// Everything here is allocated and registered when an endpoint opens (or, for the bounce ring, on
// the first send that needs it), never per message.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <vector>

#include "libfabric/Fabric.hpp"
#include "netio3/NetworkBuffer.hpp"

namespace netio3::libfabric {

/// Rounds `value` up to a multiple of `alignment` (a power of two).
[[nodiscard]] constexpr std::size_t align_up(std::size_t value, std::size_t alignment) noexcept {
  return (value + alignment - 1) & ~(alignment - 1);
}

/// Anonymous, page-aligned memory (mmap): pages are only backed once touched, so large regions that
/// are rarely filled cost address space, not RAM.
class HostMemory {
public:
  HostMemory() = default;
  /// @throws std::runtime_error (with the errno text) when the mapping fails.
  explicit HostMemory(std::size_t size);
  HostMemory(const HostMemory&) = delete;
  HostMemory& operator=(const HostMemory&) = delete;
  HostMemory(HostMemory&& other) noexcept;
  HostMemory& operator=(HostMemory&& other) noexcept;
  ~HostMemory();

  [[nodiscard]] std::uint8_t* data() const noexcept { return m_data; }
  [[nodiscard]] std::size_t size() const noexcept { return m_size; }

private:
  void release() noexcept;
  std::uint8_t* m_data{nullptr};
  std::size_t m_size{0};
};

/// A memory registration with a domain (fi_mr_reg), closed on destruction. Must be destroyed before
/// its domain and before the memory it covers is freed.
class Registration {
public:
  Registration() = default;
  /// Registers `[start, start + size)` for `access` (FI_SEND / FI_RECV) with `requested_key` (used
  /// only by providers without FI_MR_PROV_KEY, which need keys unique per domain).
  /// @throws FabricError when fi_mr_reg fails.
  Registration(fid_domain* domain, const void* start, std::size_t size, std::uint64_t access,
               std::uint64_t requested_key);

  /// The descriptor to pass with data in this region (may be null for providers without FI_MR_LOCAL).
  [[nodiscard]] void* desc() const noexcept { return m_desc; }
  [[nodiscard]] bool valid() const noexcept { return static_cast<bool>(m_mr); }
  void reset() noexcept {
    m_mr.reset();
    m_desc = nullptr;
  }

private:
  FidHandle<fid_mr> m_mr{"memory registration"};
  void* m_desc{nullptr};
};

/// A ring of variable-sized chunks inside one registered region, for copying sends: chunks are taken
/// at the head and given back in any order; space is reused once every older chunk came back.
class BounceRing {
public:
  /// A ring over `capacity` bytes with at most `max_chunks` chunks outstanding.
  BounceRing(std::size_t capacity, std::size_t max_chunks);

  /// No chunk handed out.
  static constexpr std::uint32_t no_chunk = std::numeric_limits<std::uint32_t>::max();

  /// Reserves `size` contiguous bytes; returns the chunk's id and sets `offset` into the region, or
  /// `no_chunk` when there is no room right now.
  [[nodiscard]] std::uint32_t allocate(std::size_t size, std::size_t& offset) noexcept;
  /// True when `allocate(size, ...)` would succeed now (changes nothing).
  [[nodiscard]] bool can_allocate(std::size_t size) const noexcept;
  /// Gives a chunk back (ids from `allocate`, each once).
  void release(std::uint32_t chunk) noexcept;

  [[nodiscard]] std::size_t capacity() const noexcept { return m_capacity; }
  [[nodiscard]] bool empty() const noexcept { return m_count == 0; }

private:
  struct Chunk {
    std::size_t start{0};
    std::size_t end{0};
    bool released{false};
  };
  std::size_t m_capacity;
  std::vector<Chunk> m_chunks; // circular, in allocation order
  std::size_t m_first{0};      // index of the oldest outstanding chunk
  std::size_t m_count{0};      // outstanding chunks
  std::size_t m_head{0};       // where the next chunk starts (if it fits)
};

/// A fixed set of free indices (a stack), for slots of all kinds.
class IndexStack {
public:
  IndexStack() = default;
  /// Holds every index in [0, count).
  explicit IndexStack(std::size_t count);
  [[nodiscard]] bool empty() const noexcept { return m_free.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return m_free.size(); }
  [[nodiscard]] std::uint32_t pop() noexcept {
    const std::uint32_t index = m_free.back();
    m_free.pop_back();
    return index;
  }
  void push(std::uint32_t index) noexcept { m_free.push_back(index); } // never grows past the reserve

private:
  std::vector<std::uint32_t> m_free;
};

/// Buffers for buffered sends (`get_buffer` / `send_buffer`): `count` buffers of `buffer_size`
/// bytes, each preceded by room for the wire header, in one region. Used per send endpoint, or once
/// per backend as the shared send pool (then each buffer remembers which endpoint holds it).
class SendBufferPool {
public:
  /// What a buffer is doing.
  enum class State : std::uint8_t { free, handed_out, in_flight };

  /// @throws std::runtime_error when the memory cannot be mapped.
  SendBufferPool(std::size_t count, std::size_t buffer_size, std::size_t header_room);

  [[nodiscard]] std::size_t count() const noexcept { return m_buffers.size(); }
  [[nodiscard]] std::size_t free_count() const noexcept { return m_free.size(); }
  [[nodiscard]] const HostMemory& memory() const noexcept { return m_memory; }
  /// Start of buffer `index`'s header room (the user data follow `header_room` bytes later).
  [[nodiscard]] std::uint8_t* frame(std::size_t index) const noexcept { return m_memory.data() + index * m_stride; }
  [[nodiscard]] std::size_t header_room() const noexcept { return m_header_room; }

  /// A free buffer, handed out to `holder` (pos reset to 0), or nullptr when none is free.
  [[nodiscard]] NetworkBuffer* take(const void* holder) noexcept;
  /// True when `buffer` belongs to this pool and is handed out to `holder`.
  [[nodiscard]] bool is_handed_out_to(const NetworkBuffer* buffer, const void* holder) const noexcept;
  void mark_in_flight(std::size_t index) noexcept { m_state[index] = State::in_flight; }
  /// Returns buffer `index` to the free list.
  void give_back(std::size_t index) noexcept;
  /// Returns every buffer held by `holder` (handed out or in flight): its endpoint is gone.
  void reclaim(const void* holder) noexcept;

private:
  std::size_t m_header_room;
  std::size_t m_stride;
  HostMemory m_memory;
  std::vector<std::unique_ptr<NetworkBuffer>> m_buffers;
  std::vector<State> m_state;
  std::vector<const void*> m_holder;
  IndexStack m_free;
};

/// The shared receive pool: `count` receive buffers in one region; each accepted connection that
/// uses it takes its buffers (its credit window) from here when accepted and gives them back when
/// it closes.
class SharedReceivePool {
public:
  SharedReceivePool(std::size_t count, std::size_t stride);
  [[nodiscard]] const HostMemory& memory() const noexcept { return m_memory; }
  [[nodiscard]] std::size_t stride() const noexcept { return m_stride; }
  [[nodiscard]] std::size_t free_count() const noexcept { return m_free.size(); }
  [[nodiscard]] std::uint32_t take() noexcept { return m_free.pop(); }
  void give_back(std::uint32_t index) noexcept { m_free.push(index); }

private:
  std::size_t m_stride;
  HostMemory m_memory;
  IndexStack m_free;
};

} // namespace netio3::libfabric
