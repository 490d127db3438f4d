// Unit tests of the TCP backend's send queue and send buffer pool (pure code).

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "asyncmsg/BufferPool.hpp"
#include "asyncmsg/SendQueue.hpp"

namespace netio3::asyncmsg {
namespace {

std::vector<std::uint8_t> bytes_of(std::size_t size, std::uint8_t seed) {
  std::vector<std::uint8_t> bytes(size);
  for (std::size_t index = 0; index < size; ++index) {
    bytes[index] = static_cast<std::uint8_t>(seed + index);
  }
  return bytes;
}

/// Writes up to `limit` bytes of the queue into `out` (as a socket would take them).
std::size_t write_some(SendQueue& queue, std::vector<std::uint8_t>& out, std::size_t limit) {
  std::array<iovec, 16> iov{};
  std::size_t bytes = 0;
  const std::size_t count = queue.gather(iov.data(), iov.size(), bytes);
  std::size_t written = 0;
  for (std::size_t index = 0; index < count && written < limit; ++index) {
    const std::size_t take = std::min(iov[index].iov_len, limit - written);
    const auto* start = static_cast<const std::uint8_t*>(iov[index].iov_base);
    out.insert(out.end(), start, start + take);
    written += take;
  }
  queue.finish_write(written);
  return written;
}

TEST(SendQueue, CopiedMessagesMergeIntoOneIovec) {
  SendQueue queue{1U << 20U};
  for (int index = 0; index < 100; ++index) {
    const auto message = bytes_of(72, static_cast<std::uint8_t>(index));
    queue.reserve(message.size(), 0);
    queue.append_copy(message);
    queue.end_message(Completion::Kind::key, static_cast<std::uint64_t>(index));
  }
  std::array<iovec, 16> iov{};
  std::size_t bytes = 0;
  EXPECT_EQ(queue.gather(iov.data(), iov.size(), bytes), 1U);
  EXPECT_EQ(bytes, 7200U);
  queue.finish_write(0);
}

TEST(SendQueue, MixedMessagesComeOutInOrderWithCompletions) {
  SendQueue queue{1U << 20U};
  std::vector<std::uint8_t> expected;
  std::vector<std::vector<std::uint8_t>> user_memory;
  std::mt19937 random{42};
  for (std::uint64_t key = 0; key < 300; ++key) {
    const auto head = bytes_of(8 + key % 5, static_cast<std::uint8_t>(key));
    if (key % 3 == 0) {
      user_memory.push_back(bytes_of(100 + key, static_cast<std::uint8_t>(key * 3)));
      queue.reserve(head.size(), 1);
      queue.append_copy(head);
      queue.append_user(user_memory.back().data(), user_memory.back().size());
      expected.insert(expected.end(), head.begin(), head.end());
      expected.insert(expected.end(), user_memory.back().begin(), user_memory.back().end());
    } else {
      const auto body = bytes_of(50 + key, static_cast<std::uint8_t>(key * 5));
      queue.reserve(head.size() + body.size(), 0);
      queue.append_copy(head);
      queue.append_copy(body);
      expected.insert(expected.end(), head.begin(), head.end());
      expected.insert(expected.end(), body.begin(), body.end());
    }
    queue.end_message(Completion::Kind::key, key);
  }
  std::vector<std::uint8_t> written;
  std::vector<std::uint64_t> completed;
  std::uniform_int_distribution<std::size_t> limit_of{1, 700};
  while (!queue.empty()) {
    write_some(queue, written, limit_of(random));
    queue.pop_finished([&](const Completion& completion) {
      EXPECT_LE(completion.end, written.size()); // only whole messages complete
      completed.push_back(completion.value);
    });
  }
  EXPECT_EQ(written, expected);
  ASSERT_EQ(completed.size(), 300U);
  for (std::uint64_t key = 0; key < 300; ++key) {
    EXPECT_EQ(completed[key], key);
  }
}

TEST(SendQueue, BoundOnUnsentBytes) {
  SendQueue queue{1000};
  EXPECT_TRUE(queue.would_accept(5000)); // an empty queue takes one message of any size
  const auto big = bytes_of(900, 1);
  queue.reserve(big.size(), 0);
  queue.append_copy(big);
  queue.end_message(Completion::Kind::key, 1);
  EXPECT_TRUE(queue.would_accept(100));
  EXPECT_FALSE(queue.would_accept(101));
  std::vector<std::uint8_t> out;
  write_some(queue, out, 500);
  EXPECT_TRUE(queue.would_accept(600));
  EXPECT_EQ(queue.unsent_bytes(), 400U);
}

TEST(SendQueue, RingGrowsWhileAWriteIsInFlightWithoutMovingItsBytes) {
  SendQueue queue{64U << 20U};
  const auto first = bytes_of(1000, 3);
  queue.reserve(first.size(), 0);
  queue.append_copy(first);
  queue.end_message(Completion::Kind::key, 1);
  std::array<iovec, 4> iov{};
  std::size_t bytes = 0;
  const std::size_t count = queue.gather(iov.data(), iov.size(), bytes);
  ASSERT_EQ(count, 1U);
  const std::size_t before = queue.ring_capacity();
  // Appending far more than the ring holds while the write is in flight.
  const auto second = bytes_of(before * 4, 9);
  queue.reserve(second.size(), 0);
  queue.append_copy(second);
  queue.end_message(Completion::Kind::key, 2);
  EXPECT_GT(queue.ring_capacity(), before);
  // The in-flight iovec still shows the first message (old memory kept until finish_write).
  EXPECT_TRUE(std::equal(first.begin(), first.end(), static_cast<const std::uint8_t*>(iov[0].iov_base)));
  queue.finish_write(bytes);
  std::vector<std::uint8_t> out;
  while (!queue.empty()) {
    write_some(queue, out, 1U << 20U);
  }
  EXPECT_EQ(out, second);
}

TEST(SendQueue, WrapAroundSplitsIntoTwoIovecs) {
  SendQueue queue{1U << 20U};
  const std::size_t capacity = [&] {
    queue.reserve(1, 0);
    return queue.ring_capacity();
  }();
  std::vector<std::uint8_t> out;
  const auto filler = bytes_of(capacity - 100, 1);
  queue.append_copy(filler);
  queue.end_message(Completion::Kind::key, 1);
  write_some(queue, out, filler.size());
  const auto wrapping = bytes_of(300, 2);
  queue.reserve(wrapping.size(), 0);
  EXPECT_EQ(queue.ring_capacity(), capacity); // fits without growing, across the end
  queue.append_copy(wrapping);
  queue.end_message(Completion::Kind::key, 2);
  std::array<iovec, 4> iov{};
  std::size_t bytes = 0;
  EXPECT_EQ(queue.gather(iov.data(), iov.size(), bytes), 2U);
  EXPECT_EQ(bytes, 300U);
  queue.finish_write(0);
  out.clear();
  write_some(queue, out, 1000);
  EXPECT_EQ(out, wrapping);
}

TEST(SendQueue, DirectWritesAndDrainKeepCompletionOrder) {
  SendQueue queue{1U << 20U};
  queue.record_written_message(72, Completion::Kind::key, 10); // written at once by the send call
  const auto rest = bytes_of(50, 1);
  queue.skip_written(20); // a message of 70 bytes of which 20 went out directly
  queue.reserve(rest.size(), 0);
  queue.append_copy(rest);
  queue.end_message(Completion::Kind::key, 11);
  queue.reserve(0, 1);
  queue.append_user(rest.data(), rest.size());
  queue.end_message(Completion::Kind::buffer, 3);
  EXPECT_EQ(queue.unsent_bytes(), 100U);
  std::vector<std::uint64_t> finished;
  queue.pop_finished([&](const Completion& completion) { finished.push_back(completion.value); });
  EXPECT_EQ(finished, std::vector<std::uint64_t>{10});
  std::vector<std::uint8_t> out;
  write_some(queue, out, 50);
  std::vector<Completion> drained;
  queue.drain([&](const Completion& completion) { drained.push_back(completion); });
  ASSERT_EQ(drained.size(), 2U);
  EXPECT_EQ(drained[0].value, 11U); // written, not yet reported: still handed over once
  EXPECT_EQ(drained[1].kind, Completion::Kind::buffer);
  EXPECT_TRUE(queue.empty());
  EXPECT_FALSE(queue.has_completions());
}

TEST(BufferPool, HandOutSendReleaseAndMinimum) {
  BufferPool pool{3, 100, true};
  EXPECT_EQ(pool.take_min_available(), 3U); // the current number on the first call
  NetworkBuffer* first = pool.acquire();
  NetworkBuffer* second = pool.acquire();
  NetworkBuffer* third = pool.acquire();
  ASSERT_NE(third, nullptr);
  EXPECT_EQ(pool.acquire(), nullptr);
  EXPECT_TRUE(pool.owns(first));
  BufferPool other{1, 10, false};
  EXPECT_FALSE(pool.owns(other.acquire()));
  EXPECT_FALSE(pool.owns(nullptr));
  ASSERT_TRUE(first->append(std::vector<std::uint8_t>(10, 7)));
  EXPECT_TRUE(pool.start_send(*first));
  EXPECT_FALSE(pool.start_send(*first)); // already being sent
  const std::uint8_t* frame = pool.frame(first->index(), 10);
  EXPECT_EQ(frame + frame_header_size, first->data().data()); // header room right before the payload
  pool.release(first->index());
  pool.release(first->index()); // a second release is ignored
  EXPECT_EQ(pool.available(), 1U);
  EXPECT_EQ(pool.take_min_available(), 0U); // went down to 0 since the previous call
  EXPECT_EQ(pool.take_min_available(), 1U);
  (void)second;
}

} // namespace
} // namespace netio3::asyncmsg
