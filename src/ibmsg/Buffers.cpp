#include "ibmsg/Buffers.hpp"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <sys/mman.h>

#include "ibmsg/Loop.hpp"

namespace netio3::ibmsg {

namespace {

/// Slot sizes are rounded up to a cache line so that slots never share one.
constexpr std::size_t slot_alignment{64};
/// A SEND socket's slab holds about this many bytes (fewer slots for larger messages).
constexpr std::size_t slab_target_bytes{std::size_t{4} << 20U};
constexpr std::size_t max_slab_slots{256};
/// The receive pool grows by about this many bytes at a time.
constexpr std::size_t receive_chunk_target_bytes{std::size_t{256} << 10U};
constexpr std::size_t max_receive_chunk_slots{64};
/// Fewest receive slots the program may hold, however large the messages.
constexpr std::size_t min_receive_slots{4};

std::size_t round_up(std::size_t value, std::size_t multiple) noexcept {
  return (value + multiple - 1) / multiple * multiple;
}

} // namespace

// --- SendSlab -----------------------------------------------------------------------------------

std::size_t SendSlab::slot_count_for(std::size_t max_message_size) noexcept {
  const std::size_t stride = round_up(std::max<std::size_t>(max_message_size, 1), slot_alignment);
  return std::clamp<std::size_t>(slab_target_bytes / stride, 1, max_slab_slots);
}

SendSlab::SendSlab(Loop* loop, std::size_t slot_size, std::size_t slot_count) : m_loop{loop} {
  const std::size_t stride = round_up(std::max<std::size_t>(slot_size, 1), slot_alignment);
  m_region_size = stride * slot_count;
  // An anonymous mapping: page-aligned (what RDMA registration wants), and on TCP the pages that
  // are never used cost no memory.
  void* memory = ::mmap(nullptr, m_region_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    throw std::bad_alloc{};
  }
  m_memory = static_cast<std::uint8_t*>(memory);
  m_records.resize(slot_count);
  m_free.reserve(slot_count);
  for (std::size_t index = slot_count; index-- > 0;) { // lowest slot handed out first
    BufferRecord& record = m_records[index];
    record.data = m_memory + index * stride;
    record.capacity = stride;
    record.origin = BufferOrigin::SendSlab;
    record.owner = this;
    m_free.push_back(&record);
  }
}

SendSlab::~SendSlab() {
  if (m_memory != nullptr) {
    ::munmap(m_memory, m_region_size);
  }
}

BufferRecord* SendSlab::acquire(std::size_t size) noexcept {
  if (m_free.empty() || !endpoint_alive || size > m_records.front().capacity) {
    return nullptr;
  }
  BufferRecord* record = m_free.back();
  m_free.pop_back();
  record->state = BufferState::Held;
  return record;
}

void SendSlab::release(BufferRecord* record) noexcept {
  record->state = BufferState::Free;
  record->user = nullptr;
  m_free.push_back(record); // capacity reserved for every slot: never allocates
}

// --- ReceivePool --------------------------------------------------------------------------------

ReceivePool::ReceivePool(std::size_t slot_size)
  : m_slot_size{round_up(std::max<std::size_t>(slot_size, 1), slot_alignment)},
    m_chunk_slots{std::clamp<std::size_t>(receive_chunk_target_bytes / m_slot_size, 1, max_receive_chunk_slots)},
    m_max_slots{std::max(min_receive_slots, max_held_bytes / m_slot_size)} {}

bool ReceivePool::grow() noexcept {
  const std::size_t slots = std::min(m_chunk_slots, m_max_slots - m_total_slots);
  if (slots == 0) {
    return false;
  }
  try {
    auto memory = std::make_unique_for_overwrite<std::uint8_t[]>(slots * m_slot_size);
    auto records = std::make_unique<BufferRecord[]>(slots);
    m_free.reserve(m_total_slots + slots);
    m_memory_chunks.reserve(m_memory_chunks.size() + 1);
    m_record_chunks.reserve(m_record_chunks.size() + 1);
    for (std::size_t index = slots; index-- > 0;) {
      BufferRecord& record = records[index];
      record.data = memory.get() + index * m_slot_size;
      record.capacity = m_slot_size;
      record.origin = BufferOrigin::ReceivePool;
      record.owner = this;
      m_free.push_back(&record);
    }
    m_memory_chunks.push_back(std::move(memory));
    m_record_chunks.push_back(std::move(records));
    m_total_slots += slots;
    return true;
  } catch (const std::bad_alloc&) {
    return false;
  }
}

BufferRecord* ReceivePool::acquire() noexcept {
  if (m_free.empty() && !grow()) {
    return nullptr;
  }
  BufferRecord* record = m_free.back();
  m_free.pop_back();
  record->state = BufferState::Held;
  return record;
}

void ReceivePool::release(BufferRecord* record) noexcept {
  record->state = BufferState::Free;
  record->user = nullptr;
  m_free.push_back(record); // reserved in grow(): never allocates
}

// --- heap buffers -------------------------------------------------------------------------------

BufferRecord* allocate_heap_buffer(Loop* loop, std::size_t size) noexcept {
  auto* record = new (std::nothrow) BufferRecord{};
  if (record == nullptr) {
    return nullptr;
  }
  // malloc(0) may return null; one byte keeps "data is null" meaning "not allocated".
  record->data = static_cast<std::uint8_t*>(std::malloc(std::max<std::size_t>(size, 1)));
  if (record->data == nullptr) {
    delete record;
    return nullptr;
  }
  record->capacity = size;
  record->usable = size;
  record->origin = BufferOrigin::Heap;
  record->state = BufferState::Held;
  record->owner = loop;
  if (loop != nullptr) {
    try {
      loop->track_heap_buffer(record);
    } catch (const std::bad_alloc&) {
      std::free(record->data);
      delete record;
      return nullptr;
    }
  }
  return record;
}

void free_heap_buffer(BufferRecord* record, bool untrack) noexcept {
  if (untrack && record->owner != nullptr) {
    static_cast<Loop*>(record->owner)->untrack_heap_buffer(record);
  }
  std::free(record->data);
  delete record;
}

void release_buffer(BufferRecord* record) noexcept {
  switch (record->origin) {
  case BufferOrigin::SendSlab: {
    auto* slab = static_cast<SendSlab*>(record->owner);
    slab->release(record);
    if (!slab->endpoint_alive) {
      slab->loop()->slab_slot_released(slab);
    }
    break;
  }
  case BufferOrigin::ReceivePool: static_cast<ReceivePool*>(record->owner)->release(record); break;
  case BufferOrigin::Heap: free_heap_buffer(record, true); break;
  }
}

} // namespace netio3::ibmsg
