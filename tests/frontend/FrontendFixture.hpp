#pragma once

/// @file
/// The frontend suite's fixture and helpers: one instantiation per backend (the conformance
/// suite's list and probe), loop threads, self-checking tagged messages, and a thread-safe record
/// of what a subscriber or receiver saw that tests wait on. Callbacks are checked to run on their
/// loop thread.

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "conformance/Node.hpp"
#include "conformance/Support.hpp"
#include "netio3/Netio3.hpp"

namespace netio3::frontend_test {

using conformance::BackendUnderTest;
using conformance::LoopThread;

/// The payload of message `seq` of `tag`: the sequence number (8 bytes) then a pattern of
/// (tag, seq, position), so that each message checks itself. At least 8 bytes.
std::vector<std::uint8_t> make_payload(std::uint64_t tag, std::uint64_t seq, std::size_t size);
/// Writes that payload into `out` (its size is the payload size, at least 8).
void fill_payload(std::span<std::uint8_t> out, std::uint64_t tag, std::uint64_t seq) noexcept;
/// Checks a payload; returns what is wrong, or an empty string (and sets `seq`).
std::string check_payload(std::uint64_t tag, std::span<const std::uint8_t> payload, std::uint64_t& seq);

/// What a receiving side saw, per tag, checked as it arrives: every payload intact, sequence
/// numbers of each tag consecutive from the first one seen (in order, none lost, none twice).
/// Also records subscribe/unsubscribe/lost notices. Thread-safe; `wait` blocks on conditions.
class Collector {
public:
  explicit Collector(std::thread::id loop_thread = {}) : m_loop_thread{loop_thread} {}
  void set_loop_thread(std::thread::id loop_thread);

  // Callbacks (give these to the configuration).
  void on_data(std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t status);
  void on_subscribed(std::uint64_t tag);
  void on_unsubscribed(std::uint64_t tag);
  void on_refused(std::uint64_t tag, const std::string& reason);
  void on_lost(const std::vector<std::uint64_t>& tags);
  /// The test subscribes to `tag` again: data of it may arrive from now on (before the
  /// acknowledgement, since data and acknowledgements travel on different connections).
  void subscribing_again(std::uint64_t tag);

  /// Waits until `predicate(*this)` holds (called with the lock held) or the deadline passes.
  template <typename Predicate>
  [[nodiscard]] bool wait(Predicate predicate) {
    std::unique_lock lock{m_mutex};
    return m_changed.wait_until(lock, conformance::deadline_from_now(), [&] { return predicate(*this); });
  }

  // Figures (call with the lock held, i.e. inside `wait`, or through the locked getters).
  [[nodiscard]] std::uint64_t received_unlocked(std::uint64_t tag) const;
  [[nodiscard]] std::uint64_t total_unlocked() const noexcept { return m_total; }
  [[nodiscard]] bool subscribed_unlocked(std::uint64_t tag) const { return m_subscribed.contains(tag); }
  [[nodiscard]] std::size_t subscribed_count_unlocked() const noexcept { return m_subscribed.size(); }
  [[nodiscard]] std::size_t unsubscribed_count_unlocked(std::uint64_t tag) const;
  [[nodiscard]] std::size_t lost_count_unlocked() const noexcept { return m_lost_notices; }
  [[nodiscard]] std::size_t refusal_count_unlocked() const noexcept { return m_refusals.size(); }

  [[nodiscard]] std::uint64_t received(std::uint64_t tag);
  [[nodiscard]] std::uint64_t total();
  /// The first and the last sequence number seen of `tag` (0, 0 when none).
  [[nodiscard]] std::pair<std::uint64_t, std::uint64_t> range(std::uint64_t tag);
  /// Statuses seen, per tag (the last message's).
  [[nodiscard]] std::uint8_t last_status(std::uint64_t tag);
  [[nodiscard]] std::vector<std::uint64_t> lost_tags();
  [[nodiscard]] std::vector<std::string> refusals();
  /// Every fault seen (bad payload, gap, repeat, wrong thread, data after unsubscribing).
  [[nodiscard]] std::vector<std::string> errors();

private:
  struct TagRecord {
    std::uint64_t first{0};
    std::uint64_t last{0};
    std::uint64_t count{0};
    std::uint8_t status{0};
    bool rebase{false}; // unsubscribed: the next message may follow a gap
  };
  void check_thread(const char* what);

  std::mutex m_mutex;
  std::condition_variable m_changed;
  std::thread::id m_loop_thread;
  std::map<std::uint64_t, TagRecord> m_tags;
  std::uint64_t m_total{0};
  std::set<std::uint64_t> m_subscribed;
  std::map<std::uint64_t, std::size_t> m_unsubscribed;
  std::set<std::uint64_t> m_unsubscribed_now; // acknowledged and not subscribed again
  std::vector<std::uint64_t> m_lost_tags;
  std::size_t m_lost_notices{0};
  std::vector<std::string> m_refusals;
  std::vector<std::string> m_errors;
};

/// Base fixture of every frontend test; the parameter is the backend under test.
class FrontendTest : public ::testing::TestWithParam<BackendUnderTest> {
public:
  static std::string param_name(const ::testing::TestParamInfo<BackendUnderTest>& info) { return info.param.name; }

protected:
  void SetUp() override;
  void TearDown() override;

  [[nodiscard]] const BackendUnderTest& under_test() const { return GetParam(); }
  /// `normal` scaled for the environment and the backend's slowness, never below `minimum`.
  [[nodiscard]] std::size_t count(std::size_t normal, std::size_t minimum = 1) const;
  /// The test address with port 0.
  [[nodiscard]] static EndPointAddress any_port();
  /// A loop thread owned by the test (stopped after every frontend object of the test is gone).
  LoopThread& make_loop();

  /// Configurations for the backend under test.
  [[nodiscard]] NetioPublisherConfig publisher_config(SendMethod method) const;
  [[nodiscard]] NetioSubscriberConfig subscriber_config(Collector& collector) const;
  [[nodiscard]] NetioSenderConfig sender_config(SendMethod method) const;
  [[nodiscard]] NetioReceiverConfig receiver_config(Collector& collector) const;

  /// Page-aligned memory owned by the test, freed after everything else (zero-copy regions).
  conformance::AlignedMemory& make_region(std::size_t size);

private:
  std::vector<std::unique_ptr<conformance::AlignedMemory>> m_regions;
  std::vector<std::unique_ptr<LoopThread>> m_loops;
  std::unique_ptr<conformance::Watchdog> m_watchdog;
};

/// Polls `condition` every millisecond until it holds (true) or the deadline passes (false), for
/// state that no condition variable announces (atomics set by callbacks, publisher counts).
bool eventually(const std::function<bool()>& condition);

/// Publishes `count` messages of `tag` (sequence numbers `first`..) of `size` bytes, retrying on
/// NO_RESOURCES with a short sleep; returns the first status that is neither OK nor NO_RESOURCES
/// (or OK), and the number published in `published`.
NetioPublisherStatus publish_sequence(NetioPublisher& publisher, std::uint64_t tag, std::uint64_t first,
                                      std::uint64_t count, std::size_t size, std::uint64_t& published);

} // namespace netio3::frontend_test

/// Instantiates frontend suite `suite` for every selected backend: `Backends/<suite>.<test>/<backend>`.
#define NETIO3_INSTANTIATE_FRONTEND(suite)                                                                             \
  INSTANTIATE_TEST_SUITE_P(Backends, suite, ::testing::ValuesIn(::netio3::conformance::selected_backends()),           \
                           ::netio3::frontend_test::FrontendTest::param_name)
