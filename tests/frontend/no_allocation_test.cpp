// No heap allocation per message in steady state, in publish and in delivery, for every send
// method: this binary replaces the global operator new/delete with counting versions (netio3-bench's
// AllocationCounter); after a
// warm-up, a long run of published and delivered messages must not add allocations in proportion
// to their number (a few for a new high-water mark of some queue are allowed).

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "bench/AllocationCounter.hpp"
#include "frontend/FrontendFixture.hpp"

namespace netio3::frontend_test {
namespace {

constexpr std::size_t allowed_allocations{64};

class NoAllocation : public FrontendTest {};

TEST_P(NoAllocation, PublishAndDeliveryAllocateNothingPerMessage) {
  for (const SendMethod method : {SendMethod::BUFFERED, SendMethod::COPY, SendMethod::ZERO_COPY}) {
    SCOPED_TRACE(to_string(method));
    conformance::AlignedMemory& region = make_region(1U << 16U);
    NetioPublisherConfig config = publisher_config(method);
    config.mr_start = region.data();
    config.mr_size = region.size();
    NetioPublisher publisher{config, make_loop().loop(), any_port()};
    std::atomic<std::uint64_t> completed{0};
    publisher.set_on_publish_completed([&](std::uint64_t) { completed.fetch_add(1, std::memory_order_relaxed); });
    // Callbacks that only count: they must not allocate themselves.
    std::atomic<std::uint64_t> delivered{0};
    std::atomic<int> subscribed{0};
    NetioSubscriberConfig sub_config;
    sub_config.backend_type = under_test().type;
    sub_config.backend_mode = under_test().mode;
    sub_config.provider = under_test().provider;
    sub_config.on_data_cb = [&](std::uint64_t, std::span<const std::uint8_t>, std::uint8_t) {
      delivered.fetch_add(1, std::memory_order_relaxed);
    };
    sub_config.on_subscribed_cb = [&](std::uint64_t, const EndPointAddress&) { ++subscribed; };
    NetioSubscriber subscriber{sub_config, make_loop().loop(), conformance::test_environment().address};
    for (std::uint64_t tag = 0; tag < 4; ++tag) {
      ASSERT_EQ(subscriber.subscribe(tag, publisher.address(), {}), NetioStatus::OK);
    }
    ASSERT_TRUE(eventually([&] { return subscribed.load() == 4; }));
    std::uint64_t published = 0;
    const auto run = [&](std::uint64_t messages) {
      for (std::uint64_t index = 0; index < messages; ++index) {
        // Zero-copy: 64 slots of 64 bytes, each reused only after its publish completed.
        while (method == SendMethod::ZERO_COPY && published - completed.load() >= 64) {
          std::this_thread::yield();
        }
        const std::span<const std::uint8_t> payload = region.span().subspan((published % 64) * 64, 64);
        while (publisher.publish(index % 4, payload, 0, published) == NetioPublisherStatus::NO_RESOURCES) {
          std::this_thread::yield();
        }
        ++published;
      }
      publisher.flush();
      ASSERT_TRUE(eventually([&] { return delivered.load() == published; }));
    };
    const bool buffered = method == SendMethod::BUFFERED;   // one send per message otherwise: fewer suffice
    run(buffered ? count(20000, 2000) : count(4000, 1000)); // warm-up: queues and maps reach their sizes
    const std::size_t before = bench::allocation_count();
    const std::uint64_t measured = buffered ? count(100000, 20000) : count(20000, 4000);
    run(measured);
    const std::size_t allocations = bench::allocation_count() - before;
    EXPECT_LE(allocations, allowed_allocations) << allocations << " allocations for " << measured << " messages";
    RecordProperty(std::string{"allocations_"} + std::string{to_string(method)}, std::to_string(allocations));
  }
}

NETIO3_INSTANTIATE_FRONTEND(NoAllocation);

} // namespace
} // namespace netio3::frontend_test
