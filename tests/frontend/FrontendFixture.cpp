#include "frontend/FrontendFixture.hpp"

#include <cstring>
#include <sstream>
#include <thread>

namespace netio3::frontend_test {

namespace {

std::uint8_t pattern_byte(std::uint64_t tag, std::uint64_t seq, std::size_t index) noexcept {
  return static_cast<std::uint8_t>((tag * 131U) ^ (seq * 7U) ^ (index * 29U) ^ (index >> 8U));
}

} // namespace

void fill_payload(std::span<std::uint8_t> out, std::uint64_t tag, std::uint64_t seq) noexcept {
  std::memcpy(out.data(), &seq, sizeof(seq));
  for (std::size_t index = sizeof(seq); index < out.size(); ++index) {
    out[index] = pattern_byte(tag, seq, index);
  }
}

std::vector<std::uint8_t> make_payload(std::uint64_t tag, std::uint64_t seq, std::size_t size) {
  std::vector<std::uint8_t> payload(std::max<std::size_t>(size, sizeof(seq)));
  fill_payload(payload, tag, seq);
  return payload;
}

std::string check_payload(std::uint64_t tag, std::span<const std::uint8_t> payload, std::uint64_t& seq) {
  if (payload.size() < sizeof(seq)) {
    return "a payload of " + std::to_string(payload.size()) + " bytes, shorter than its sequence number";
  }
  std::memcpy(&seq, payload.data(), sizeof(seq));
  for (std::size_t index = sizeof(seq); index < payload.size(); ++index) {
    if (payload[index] != pattern_byte(tag, seq, index)) {
      return "tag " + std::to_string(tag) + " seq " + std::to_string(seq) + ": byte " + std::to_string(index) + " of " +
             std::to_string(payload.size()) + " is wrong";
    }
  }
  return {};
}

// --- Collector ----------------------------------------------------------------------------------

void Collector::set_loop_thread(std::thread::id loop_thread) {
  const std::lock_guard lock{m_mutex};
  m_loop_thread = loop_thread;
}

void Collector::check_thread(const char* what) {
  if (m_loop_thread != std::thread::id{} && std::this_thread::get_id() != m_loop_thread) {
    m_errors.push_back(std::string{what} + " called on a thread other than the loop's");
  }
}

void Collector::on_data(std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t status) {
  std::uint64_t seq = 0;
  const std::string fault = check_payload(tag, data, seq);
  {
    const std::lock_guard lock{m_mutex};
    check_thread("on_data_cb");
    if (!fault.empty()) {
      m_errors.push_back(fault);
    } else {
      if (m_unsubscribed_now.contains(tag)) {
        m_errors.push_back("tag " + std::to_string(tag) + " seq " + std::to_string(seq) +
                           " arrived after its unsubscribe acknowledgement");
      }
      TagRecord& record = m_tags[tag];
      if (record.count > 0 && seq != record.last + 1 && !(record.rebase && seq > record.last)) {
        m_errors.push_back("tag " + std::to_string(tag) + ": seq " + std::to_string(seq) + " after " +
                           std::to_string(record.last) + (seq <= record.last ? " (repeated or reordered)" : " (lost)"));
      }
      if (record.count == 0) {
        record.first = seq;
      }
      record.rebase = false;
      record.last = seq;
      record.status = status;
      ++record.count;
      ++m_total;
    }
  }
  m_changed.notify_all();
}

void Collector::on_subscribed(std::uint64_t tag) {
  {
    const std::lock_guard lock{m_mutex};
    check_thread("on_subscribed_cb");
    m_subscribed.insert(tag);
    m_unsubscribed_now.erase(tag);
  }
  m_changed.notify_all();
}

void Collector::on_unsubscribed(std::uint64_t tag) {
  {
    const std::lock_guard lock{m_mutex};
    check_thread("on_unsubscribed_cb");
    m_subscribed.erase(tag);
    ++m_unsubscribed[tag];
    m_unsubscribed_now.insert(tag);
    m_tags[tag].rebase = true; // a later subscription starts wherever the publisher is
  }
  m_changed.notify_all();
}

void Collector::subscribing_again(std::uint64_t tag) {
  const std::lock_guard lock{m_mutex};
  m_unsubscribed_now.erase(tag);
}

void Collector::on_refused(std::uint64_t tag, const std::string& reason) {
  {
    const std::lock_guard lock{m_mutex};
    check_thread("on_subscription_refused_cb");
    m_refusals.push_back(std::to_string(tag) + ": " + reason);
  }
  m_changed.notify_all();
}

void Collector::on_lost(const std::vector<std::uint64_t>& tags) {
  {
    const std::lock_guard lock{m_mutex};
    check_thread("on_publisher_lost_cb");
    ++m_lost_notices;
    m_lost_tags.insert(m_lost_tags.end(), tags.begin(), tags.end());
    for (const std::uint64_t tag : tags) {
      m_subscribed.erase(tag);
    }
  }
  m_changed.notify_all();
}

std::uint64_t Collector::received_unlocked(std::uint64_t tag) const {
  const auto found = m_tags.find(tag);
  return found == m_tags.end() ? 0 : found->second.count;
}

std::size_t Collector::unsubscribed_count_unlocked(std::uint64_t tag) const {
  const auto found = m_unsubscribed.find(tag);
  return found == m_unsubscribed.end() ? 0 : found->second;
}

std::uint64_t Collector::received(std::uint64_t tag) {
  const std::lock_guard lock{m_mutex};
  return received_unlocked(tag);
}

std::uint64_t Collector::total() {
  const std::lock_guard lock{m_mutex};
  return m_total;
}

std::pair<std::uint64_t, std::uint64_t> Collector::range(std::uint64_t tag) {
  const std::lock_guard lock{m_mutex};
  const auto found = m_tags.find(tag);
  return found == m_tags.end() ? std::pair<std::uint64_t, std::uint64_t>{0, 0}
                               : std::pair{found->second.first, found->second.last};
}

std::uint8_t Collector::last_status(std::uint64_t tag) {
  const std::lock_guard lock{m_mutex};
  const auto found = m_tags.find(tag);
  return found == m_tags.end() ? 0 : found->second.status;
}

std::vector<std::uint64_t> Collector::lost_tags() {
  const std::lock_guard lock{m_mutex};
  return m_lost_tags;
}

std::vector<std::string> Collector::refusals() {
  const std::lock_guard lock{m_mutex};
  return m_refusals;
}

std::vector<std::string> Collector::errors() {
  const std::lock_guard lock{m_mutex};
  return m_errors;
}

// --- fixture ------------------------------------------------------------------------------------

void FrontendTest::SetUp() {
  m_watchdog = std::make_unique<conformance::Watchdog>(
      4 * conformance::test_environment().deadline,
      std::string{::testing::UnitTest::GetInstance()->current_test_info()->name()});
  std::optional<std::string> unavailable;
  try {
    unavailable = conformance::backend_unavailable(under_test());
  } catch (const std::runtime_error& error) {
    FAIL() << error.what();
  }
  if (unavailable) {
    GTEST_SKIP() << under_test().name << " is not available in this build or on this machine: " << *unavailable;
  }
}

void FrontendTest::TearDown() {
  m_loops.clear();
  m_regions.clear();
  m_watchdog.reset();
}

std::size_t FrontendTest::count(std::size_t normal, std::size_t minimum) const {
  return std::max(conformance::scaled(normal, minimum) / under_test().slowness, minimum);
}

EndPointAddress FrontendTest::any_port() {
  return EndPointAddress{conformance::test_environment().address, 0};
}

LoopThread& FrontendTest::make_loop() {
  m_loops.push_back(std::make_unique<LoopThread>());
  return *m_loops.back();
}

conformance::AlignedMemory& FrontendTest::make_region(std::size_t size) {
  m_regions.push_back(std::make_unique<conformance::AlignedMemory>(size));
  return *m_regions.back();
}

namespace {

/// A frontend configuration with the backend under test.
template <typename Config>
Config for_backend(const BackendUnderTest& backend) {
  Config config;
  config.backend_type = backend.type;
  config.backend_mode = backend.mode;
  config.provider = backend.provider;
  return config;
}

OnTaggedDataCb collect_into(Collector& collector) {
  return [&collector](std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t status) {
    collector.on_data(tag, data, status);
  };
}

} // namespace

NetioPublisherConfig FrontendTest::publisher_config(SendMethod method) const {
  auto config = for_backend<NetioPublisherConfig>(under_test());
  config.method = method;
  return config;
}

NetioSubscriberConfig FrontendTest::subscriber_config(Collector& collector) const {
  auto config = for_backend<NetioSubscriberConfig>(under_test());
  config.on_data_cb = collect_into(collector);
  config.on_subscribed_cb = [&collector](std::uint64_t tag, const EndPointAddress&) { collector.on_subscribed(tag); };
  config.on_unsubscribed_cb = [&collector](std::uint64_t tag, const EndPointAddress&) {
    collector.on_unsubscribed(tag);
  };
  config.on_subscription_refused_cb = [&collector](std::uint64_t tag, const EndPointAddress&,
                                                   const std::string& reason) { collector.on_refused(tag, reason); };
  config.on_publisher_lost_cb = [&collector](const EndPointAddress&, const std::vector<std::uint64_t>& tags) {
    collector.on_lost(tags);
  };
  return config;
}

NetioSenderConfig FrontendTest::sender_config(SendMethod method) const {
  auto config = for_backend<NetioSenderConfig>(under_test());
  config.method = method;
  return config;
}

NetioReceiverConfig FrontendTest::receiver_config(Collector& collector) const {
  auto config = for_backend<NetioReceiverConfig>(under_test());
  config.on_data_cb = collect_into(collector);
  return config;
}

bool eventually(const std::function<bool()>& condition) {
  const auto deadline = conformance::deadline_from_now();
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
  return true;
}

NetioPublisherStatus publish_sequence(NetioPublisher& publisher, std::uint64_t tag, std::uint64_t first,
                                      std::uint64_t count, std::size_t size, std::uint64_t& published) {
  published = 0;
  std::vector<std::uint8_t> payload(std::max<std::size_t>(size, 8));
  const auto give_up = conformance::deadline_from_now();
  for (std::uint64_t seq = first; seq < first + count; ++seq) {
    fill_payload(payload, tag, seq);
    for (;;) {
      const NetioPublisherStatus status = publisher.publish(tag, payload);
      if (status == NetioPublisherStatus::OK) {
        break;
      }
      if (status != NetioPublisherStatus::NO_RESOURCES || std::chrono::steady_clock::now() > give_up) {
        return status;
      }
      std::this_thread::sleep_for(std::chrono::microseconds{50});
    }
    ++published;
  }
  return NetioPublisherStatus::OK;
}

} // namespace netio3::frontend_test
