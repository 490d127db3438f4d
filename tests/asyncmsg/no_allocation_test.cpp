// No heap allocation per message in steady state, on the copy, zero-copy, buffered and receive
// paths of the TCP backend. This binary replaces the global operator new/delete with counting
// versions; after a warm-up (queues and buffers reach the size the workload needs) a long run of
// messages must not add allocations in proportion to the number of messages.

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "TestSupport.hpp"

namespace {

std::atomic<std::size_t> allocation_count{0};

void* counted_allocation(std::size_t size) {
  allocation_count.fetch_add(1, std::memory_order_relaxed);
  if (void* memory = std::malloc(size == 0 ? 1 : size)) {
    return memory;
  }
  throw std::bad_alloc();
}

void* counted_aligned_allocation(std::size_t size, std::align_val_t alignment) {
  allocation_count.fetch_add(1, std::memory_order_relaxed);
  const auto align = static_cast<std::size_t>(alignment);
  if (void* memory = std::aligned_alloc(align, (size + align - 1) / align * align)) {
    return memory;
  }
  throw std::bad_alloc();
}

} // namespace

void* operator new(std::size_t size) {
  return counted_allocation(size);
}
void* operator new[](std::size_t size) {
  return counted_allocation(size);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return counted_allocation(size);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return counted_allocation(size);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t size, std::align_val_t alignment) {
  return counted_aligned_allocation(size, alignment);
}
void* operator new[](std::size_t size, std::align_val_t alignment) {
  return counted_aligned_allocation(size, alignment);
}
void operator delete(void* memory) noexcept {
  std::free(memory);
}
void operator delete[](void* memory) noexcept {
  std::free(memory);
}
void operator delete(void* memory, std::size_t) noexcept {
  std::free(memory);
}
void operator delete[](void* memory, std::size_t) noexcept {
  std::free(memory);
}
void operator delete(void* memory, std::align_val_t) noexcept {
  std::free(memory);
}
void operator delete[](void* memory, std::align_val_t) noexcept {
  std::free(memory);
}
void operator delete(void* memory, std::size_t, std::align_val_t) noexcept {
  std::free(memory);
}
void operator delete[](void* memory, std::size_t, std::align_val_t) noexcept {
  std::free(memory);
}

namespace netio3::asyncmsg {
namespace {

using namespace netio3::asyncmsg::testing;

/// Allocations allowed in a measured run: growth to a new high-water mark of a queue may happen a
/// few times; one allocation per message would be thousands.
constexpr std::size_t allowed_allocations{64};

class NoAllocation : public ::testing::Test {
protected:
  void SetUp() override {
    NetworkConfig config;
    config.thread_safety = ThreadSafetyModel::SAFE;
    // Callbacks that only count: they must not allocate themselves.
    config.on_connection_established_cb = [this](const EndPointAddress&) { ++m_established; };
    config.on_data_cb = [this](std::span<const std::uint8_t> data) {
      m_received_bytes.fetch_add(data.size(), std::memory_order_relaxed);
      // Reply path: while hops remain, every message is sent on again from inside this callback.
      if (const std::size_t hops = m_hops_left.load(std::memory_order_relaxed); hops > 0) {
        if (m_backend->send_data_copy(m_address, data, {}, hops) == NetioStatus::OK) {
          m_hops_left.store(hops - 1, std::memory_order_relaxed);
        }
      }
      m_received.fetch_add(1, std::memory_order_release);
    };
    config.on_send_completed_cb = [this](const EndPointAddress&, std::uint64_t) {
      m_completed.fetch_add(1, std::memory_order_release);
    };
    m_backend = NetworkBackend::create(NetworkType::ASYNCMSG, config, m_loop.loop());
    m_address = m_backend->open_listen_endpoint({"127.0.0.1", 0}, {});
    ConnectionParameters params;
    params.num_buf = 32;
    params.buf_size = 256;
    m_backend->open_send_endpoint(m_address, params);
    wait_for([&] { return m_established.load() == 2; });
  }

  template <typename Condition>
  void wait_for(Condition condition) {
    const auto deadline = std::chrono::steady_clock::now() + wait_limit;
    while (!condition()) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "timed out";
      std::this_thread::sleep_for(std::chrono::microseconds{200});
    }
  }

  /// Sends `count` messages of `size` bytes, cycling through the five send calls, retrying on
  /// NO_RESOURCES; `one_at_a_time` waits for each message to arrive (the direct-write path).
  void run(std::size_t count, std::size_t size, bool one_at_a_time) {
    const std::array<std::uint8_t, 16> header{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    const std::size_t received_before = m_received.load();
    const std::size_t completed_before = m_completed.load();
    std::size_t keyed = 0;
    for (std::size_t index = 0; index < count; ++index) {
      std::span<std::uint8_t> payload{m_payload.data(), size};
      const std::array<iovec, 2> pieces{iovec{payload.data(), size / 2},
                                        iovec{payload.data() + size / 2, size - size / 2}};
      while (true) {
        NetioStatus status = NetioStatus::OK;
        switch (index % 5) {
        case 0:
          status = m_backend->send_data_copy(m_address, std::span<const std::uint8_t>{payload}, header, index);
          break;
        case 1: status = m_backend->send_data_copy(m_address, std::span<const iovec>{pieces}, header, index); break;
        case 2: status = m_backend->send_data(m_address, payload, header, index); break;
        case 3: status = m_backend->send_data(m_address, std::span<const iovec>{pieces}, {}, index); break;
        default: {
          NetworkBuffer* buffer = m_backend->get_buffer(m_address);
          if (buffer == nullptr) {
            status = NetioStatus::NO_RESOURCES;
            break;
          }
          buffer->set_pos(std::min(size, buffer->size()));
          status = m_backend->send_buffer(m_address, buffer);
          break;
        }
        }
        if (status == NetioStatus::OK) {
          break;
        }
        ASSERT_EQ(status, NetioStatus::NO_RESOURCES);
        std::this_thread::yield();
      }
      if (index % 5 != 4) {
        ++keyed;
      }
      if (one_at_a_time) {
        wait_for([&] { return m_received.load() == received_before + index + 1; });
      }
    }
    wait_for([&] { return m_received.load() == received_before + count; });
    wait_for([&] { return m_completed.load() == completed_before + keyed; });
  }

  LoopThread m_loop;
  std::unique_ptr<NetworkBackend> m_backend;
  EndPointAddress m_address;
  std::array<std::uint8_t, std::size_t{256} << 10U> m_payload{}; // zero-copy memory, never written meanwhile
  std::atomic<int> m_established{0};
  std::atomic<std::size_t> m_received{0};
  std::atomic<std::size_t> m_received_bytes{0};
  std::atomic<std::size_t> m_completed{0};
  std::atomic<std::size_t> m_hops_left{0};
};

TEST_F(NoAllocation, SmallMessagesInBursts) {
  run(20000, 64, false); // warm-up
  const std::size_t before = allocation_count.load();
  run(50000, 64, false);
  const std::size_t allocations = allocation_count.load() - before;
  RecordProperty("allocations", static_cast<int>(allocations));
  EXPECT_LE(allocations, allowed_allocations) << "in 50000 messages";
}

TEST_F(NoAllocation, SmallMessagesOneAtATime) {
  run(500, 64, true);
  const std::size_t before = allocation_count.load();
  run(2000, 64, true);
  const std::size_t allocations = allocation_count.load() - before;
  EXPECT_LE(allocations, allowed_allocations) << "in 2000 messages";
}

// Messages sent on from inside the data callback (the request/response path: written at once,
// completions reported when the event ends, the brief wait for the next message).
TEST_F(NoAllocation, RepliesFromTheDataCallback) {
  const auto hop = [&](std::size_t hops) {
    const std::size_t received_before = m_received.load();
    const std::size_t completed_before = m_completed.load();
    m_hops_left = hops;
    ASSERT_EQ(m_backend->send_data_copy(m_address, std::span<const std::uint8_t>{m_payload.data(), 64}, {}, 0),
              NetioStatus::OK);
    wait_for([&] { return m_received.load() == received_before + hops + 1; });
    wait_for([&] { return m_completed.load() == completed_before + hops + 1; });
  };
  hop(2000);
  const std::size_t before = allocation_count.load();
  hop(10000);
  const std::size_t allocations = allocation_count.load() - before;
  EXPECT_LE(allocations, allowed_allocations) << "in 10000 replies";
}

TEST_F(NoAllocation, LargeMessages) {
  // 200 KiB: beyond the 64 KiB read buffer, so the receiver assembles them in its message buffer;
  // buffered sends are capped at the pool's 256-byte buffers.
  run(50, 200U << 10U, false);
  const std::size_t before = allocation_count.load();
  run(200, 200U << 10U, false);
  const std::size_t allocations = allocation_count.load() - before;
  EXPECT_LE(allocations, allowed_allocations) << "in 200 messages";
}

} // namespace
} // namespace netio3::asyncmsg
