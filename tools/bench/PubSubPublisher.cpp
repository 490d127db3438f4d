// The publisher side of `netio3-bench pubsub` (see PubSub.hpp).
//
// Threading as in the client role: with ThreadSafetyModel::UNSAFE every NetioPublisher call after
// set-up happens on the loop thread (publishing is a self-rescheduling loop task, the latency
// test's pacing a loop timer); with SAFE this (application) thread publishes while the loop thread
// does the I/O.

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <iostream>
#include <memory>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include <fmt/format.h>

#include "AllocationCounter.hpp"
#include "PubSub.hpp"
#include "netio3/EpollEventLoop.hpp"
#include "netio3/NetioPublisher.hpp"

namespace netio3::bench::pubsub {

namespace {

using Clock = std::chrono::steady_clock;

/// Publishes per pump call at most, and bytes: the loop must get to write between two calls.
constexpr std::uint64_t kMessagesPerPump = 16384;
constexpr std::uint64_t kBytesPerPump = std::uint64_t{4} << 20U;
/// How long set-up steps (subscriptions, reports) may take.
constexpr std::chrono::milliseconds kControlTimeout{60000};
/// Zero-copy payload slots in flight at most (NetioPublisherConfig::max_pending_publishes) and
/// their memory at most.
constexpr std::size_t kMaxZeroCopySlots = 4096;
constexpr std::size_t kZeroCopyMemory = std::size_t{64} << 20U;

/// Free zero-copy slots: pushed by the completion callback (loop thread), popped by the publishing
/// thread. One producer, one consumer; in UNSAFE mode both are the loop thread.
class SlotRing {
public:
  explicit SlotRing(std::size_t capacity) : m_slots(capacity + 1) {}
  void push(std::uint32_t slot) noexcept {
    const std::size_t tail = m_tail.load(std::memory_order_relaxed);
    m_slots[tail] = slot;
    m_tail.store(tail + 1 == m_slots.size() ? 0 : tail + 1, std::memory_order_release);
  }
  [[nodiscard]] bool pop(std::uint32_t& slot) noexcept {
    const std::size_t head = m_head.load(std::memory_order_relaxed);
    if (head == m_tail.load(std::memory_order_acquire)) {
      return false;
    }
    slot = m_slots[head];
    m_head.store(head + 1 == m_slots.size() ? 0 : head + 1, std::memory_order_release);
    return true;
  }

private:
  std::vector<std::uint32_t> m_slots;
  std::atomic<std::size_t> m_head{0};
  std::atomic<std::size_t> m_tail{0};
};

/// Waits with a growing pause (spin, yield, sleep) so that a SAFE publisher does not starve the
/// loop thread on a small machine.
class Backoff {
public:
  void wait() {
    ++m_rounds;
    if (m_rounds < 16) {
      return;
    }
    if (m_rounds < 256) {
      std::this_thread::yield();
      return;
    }
    std::this_thread::sleep_for(std::chrono::microseconds{20});
  }
  void reset() noexcept { m_rounds = 0; }

private:
  unsigned m_rounds{0};
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

/// A listening TCP socket for the subscribers' reports (plain sockets: one JSON line each).
class ReportListener {
public:
  ReportListener(const std::string& host, std::uint16_t port) {
    sockaddr_storage address{};
    socklen_t length = 0;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
      v4->sin_family = AF_INET;
      v4->sin_port = htons(port);
      length = sizeof(sockaddr_in);
    } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
      v6->sin6_family = AF_INET6;
      v6->sin6_port = htons(port);
      length = sizeof(sockaddr_in6);
    } else {
      throw std::invalid_argument("the report listener needs an IP address, not '" + host + "'");
    }
    m_fd = ::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (m_fd < 0) {
      throw std::runtime_error(std::string("socket for the report listener: ") + std::strerror(errno));
    }
    const int yes = 1;
    (void)setsockopt(m_fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (::bind(m_fd, reinterpret_cast<sockaddr*>(&address), length) != 0 || ::listen(m_fd, 128) != 0) {
      const int error = errno;
      ::close(m_fd);
      throw std::runtime_error(
          fmt::format("cannot listen for reports on {} port {}: {}", host, port, std::strerror(error)));
    }
    sockaddr_storage bound{};
    socklen_t bound_length = sizeof(bound);
    getsockname(m_fd, reinterpret_cast<sockaddr*>(&bound), &bound_length);
    m_port = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                              : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  }
  ReportListener(const ReportListener&) = delete;
  ReportListener& operator=(const ReportListener&) = delete;
  ReportListener(ReportListener&&) = delete;
  ReportListener& operator=(ReportListener&&) = delete;
  ~ReportListener() { ::close(m_fd); }

  [[nodiscard]] std::uint16_t port() const noexcept { return m_port; }

  /// Reads one report: accepts a connection and reads it to its end. Returns nothing at the
  /// deadline.
  std::optional<std::string> next(Clock::time_point deadline) {
    const int connection = accept_until(deadline);
    if (connection < 0) {
      return std::nullopt;
    }
    std::string text;
    char chunk[4096];
    while (true) {
      pollfd descriptor{connection, POLLIN, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0 || poll(&descriptor, 1, static_cast<int>(left)) <= 0) {
        break;
      }
      const ssize_t got = ::read(connection, chunk, sizeof(chunk));
      if (got <= 0) {
        break;
      }
      text.append(chunk, static_cast<std::size_t>(got));
    }
    ::close(connection);
    return text;
  }

private:
  int accept_until(Clock::time_point deadline) const {
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        return -1;
      }
      pollfd descriptor{m_fd, POLLIN, 0};
      if (poll(&descriptor, 1, static_cast<int>(std::min<std::int64_t>(left, 100))) > 0) {
        const int connection = ::accept4(m_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (connection >= 0) {
          return connection;
        }
      }
    }
  }

  int m_fd{-1};
  std::uint16_t m_port{0};
};

class Publisher {
public:
  explicit Publisher(const PubSubOptions& options) : m_options{options} {
    for (const std::size_t size : m_options.sizes) {
      m_max_size = std::max(m_max_size, size);
    }
    m_scratch.assign(m_max_size, 0);
    for (std::size_t i = 0; i < m_scratch.size(); ++i) {
      m_scratch[i] = static_cast<std::uint8_t>(i * 131U + 7U);
    }
    m_next_sequence.assign(m_options.tags, 0);
    if (m_options.method == SendMethod::ZERO_COPY) {
      // A slot also holds the hello, which goes out of registered memory like every message.
      m_slot_size = std::max(m_max_size, kHelloPayload);
      m_slot_count = std::clamp<std::size_t>(kZeroCopyMemory / m_slot_size, 16, kMaxZeroCopySlots);
      m_slot_memory.assign(m_slot_count * m_slot_size, 0);
      for (std::size_t slot = 0; slot < m_slot_count; ++slot) {
        std::memcpy(m_slot_memory.data() + slot * m_slot_size, m_scratch.data(), m_max_size);
      }
      m_free_slots = std::make_unique<SlotRing>(m_slot_count);
      for (std::size_t slot = 0; slot < m_slot_count; ++slot) {
        m_free_slots->push(static_cast<std::uint32_t>(slot));
      }
    }
  }
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;
  Publisher(Publisher&&) = delete;
  Publisher& operator=(Publisher&&) = delete;
  ~Publisher() { stop(); }

  std::vector<PubSubResult> run(const std::function<void(const std::string&, std::uint16_t)>& on_listening,
                                const std::function<void()>& check_children) {
    start();
    on_listening(m_address.address(), m_address.port());
    wait_for_subscribers(check_children);
    std::vector<PubSubResult> results;
    for (std::size_t index = 0; index < m_options.sizes.size(); ++index) {
      const bool last = index + 1 == m_options.sizes.size();
      results.push_back(run_one(m_options.sizes[index], static_cast<std::uint32_t>(index + 1), last, check_children));
      if (!results.back().error.empty()) {
        break;
      }
    }
    stop();
    return results;
  }

private:
  enum class Phase : std::uint8_t { Hello, Sending, Ending, Done };

  [[nodiscard]] bool safe() const noexcept { return m_options.backend.threads == ThreadSafetyModel::SAFE; }

  void start() {
    m_loop = std::make_shared<EpollEventLoop>();
    NetioPublisherConfig config;
    config.backend_type = m_options.backend.backend;
    config.backend_mode = m_options.backend.provider == "verbs" ? NetworkMode::RDMA : NetworkMode::TCP;
    if (m_options.backend.backend == NetworkType::LIBFABRIC) {
      config.provider = m_options.backend.provider;
    }
    config.thread_safety = m_options.backend.threads;
    config.method = m_options.method;
    config.buffersize = std::max(m_options.buffer_size, m_max_size + BufferFormatter::max_overhead);
    config.nbuffers = m_options.buffers;
    config.flush_interval = m_options.flush_interval;
    config.max_unsent_bytes = m_options.max_unsent_bytes;
    config.max_subscribers = std::max<std::size_t>(m_options.subscribers, 1024);
    if (m_options.method == SendMethod::ZERO_COPY) {
      config.mr_start = m_slot_memory.data();
      config.mr_size = m_slot_memory.size();
      config.max_pending_publishes = m_slot_count;
    }
    m_publisher =
        std::make_unique<NetioPublisher>(config, m_loop, EndPointAddress(m_options.listen_host, m_options.listen_port));
    m_address = m_publisher->address();
    if (m_options.method == SendMethod::ZERO_COPY) {
      m_publisher->set_on_publish_completed([this](std::uint64_t slot) {
        m_free_slots->push(static_cast<std::uint32_t>(slot));
        // Only the loop thread writes the counter: a plain load and store.
        m_completions.store(m_completions.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        if (!safe() && m_waiting_for_slot) {
          m_waiting_for_slot = false;
          m_pump_signal.fire();
        }
      });
    }
    m_reports = std::make_unique<ReportListener>(m_options.listen_host, m_options.report_port);
    m_task_signal = m_loop->create_signal([this] {
      std::vector<std::function<void()>> tasks;
      {
        const std::lock_guard lock(m_mutex);
        tasks.swap(m_tasks);
      }
      for (auto& task : tasks) {
        task();
      }
    });
    m_pump_signal = m_loop->create_signal([this] { on_pump_signal(); });
    m_pace_timer = m_loop->create_timer([this] { on_pace_timer(); });
    m_fallback_timer = m_loop->create_timer([this] {
      if (m_waiting_for_slot) {
        m_waiting_for_slot = false;
        on_pump_signal();
      }
    });
    m_loop_thread = std::thread([this] { m_loop->run(); });
    if (!m_options.quiet) {
      std::cerr << fmt::format("netio3-bench pubsub: publisher listening on {}, reports on port {}\n",
                               m_address.to_string(), m_reports->port());
    }
  }

  void stop() noexcept {
    if (m_loop_thread.joinable()) {
      m_loop->stop();
      m_loop_thread.join();
    }
    // The loop is not running: destroying from this thread is allowed in either model.
    m_publisher.reset();
    m_pace_timer.reset();
    m_fallback_timer.reset();
    m_pump_signal.reset();
    m_task_signal.reset();
  }

  /// Runs `task` where publisher calls are allowed (the loop thread in UNSAFE, here in SAFE).
  template <typename Task>
  auto in_publisher_context(Task&& task) -> decltype(task()) {
    if (safe()) {
      return task();
    }
    using Result = decltype(task());
    std::optional<Result> result;
    std::exception_ptr error;
    bool done = false;
    {
      const std::lock_guard lock(m_mutex);
      m_tasks.emplace_back([&] {
        try {
          result.emplace(task());
        } catch (...) {
          error = std::current_exception();
        }
        const std::lock_guard inner(m_mutex);
        done = true;
        m_changed.notify_all();
      });
    }
    m_task_signal.fire();
    std::unique_lock lock(m_mutex);
    if (!m_changed.wait_for(lock, kControlTimeout, [&] { return done; })) {
      throw std::runtime_error("the event loop did not run a task within 60 s");
    }
    lock.unlock();
    if (error) {
      std::rethrow_exception(error);
    }
    return std::move(*result);
  }

  void wait_for_subscribers(const std::function<void()>& check_children) {
    const auto deadline = Clock::now() + kControlTimeout;
    while (true) {
      const std::size_t complete = in_publisher_context([this] {
        std::size_t fewest = SIZE_MAX;
        for (std::uint64_t i = 0; i < m_options.tags; ++i) {
          fewest = std::min(fewest, m_publisher->subscriber_count(m_options.first_tag + i));
        }
        return fewest;
      });
      if (complete >= m_options.subscribers) {
        return;
      }
      check_children();
      if (Clock::now() > deadline) {
        throw std::runtime_error(fmt::format("timed out after {} s waiting for {} subscriber(s) on each of {} tag(s) "
                                             "(the fewest any tag has: {})",
                                             kControlTimeout.count() / 1000, m_options.subscribers, m_options.tags,
                                             complete));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
  }

  PubSubResult run_one(std::size_t size, std::uint32_t run_id, bool last, const std::function<void()>& check_children) {
    PubSubResult result;
    result.size = size;
    try {
      const std::size_t minimum = m_options.test == PubSubTest::Latency ? kMinLatencyPayload : kMinPayload;
      if (size < minimum) {
        throw std::runtime_error(fmt::format("message size {} is below the minimum of {} bytes", size, minimum));
      }
      in_publisher_context([&] {
        prepare(size, run_id, last);
        return 0;
      });
      const auto limit = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::duration<double>(m_duration_mode ? m_options.duration_s : 0.0)) +
                         std::chrono::milliseconds{600000};
      if (!safe()) {
        m_pump_signal.fire();
        std::unique_lock lock(m_mutex);
        if (!m_changed.wait_for(lock, limit, [this] { return m_finished || !m_failure.empty(); })) {
          throw std::runtime_error("the publisher did not finish in time");
        }
      } else {
        publish_from_this_thread(limit);
      }
      {
        const std::lock_guard lock(m_mutex);
        if (!m_failure.empty()) {
          throw std::runtime_error(m_failure);
        }
      }
      result.publisher = publisher_figures();
      const auto deadline = Clock::now() + kControlTimeout;
      while (result.subscribers.size() < m_options.subscribers) {
        const std::optional<std::string> text =
            m_reports->next(std::min(deadline, Clock::now() + std::chrono::seconds{1}));
        if (!text) {
          check_children();
          if (Clock::now() >= deadline) {
            throw std::runtime_error(fmt::format("{} of {} subscriber report(s) arrived within {} s",
                                                 result.subscribers.size(), m_options.subscribers,
                                                 kControlTimeout.count() / 1000));
          }
          continue;
        }
        try {
          SubscriberFigures figures = subscriber_figures_from_json(nlohmann::json::parse(*text));
          if (figures.run_id == run_id) {
            result.subscribers.push_back(std::move(figures));
          }
        } catch (const std::exception& error) {
          throw std::runtime_error(std::string("a subscriber's report cannot be read: ") + error.what());
        }
      }
    } catch (const std::exception& error) {
      result.error = error.what();
      result.publisher = publisher_figures();
    }
    return result;
  }

  void prepare(std::size_t size, std::uint32_t run_id, bool last) {
    m_size = size;
    m_run_id = run_id;
    m_last = last;
    m_phase = Phase::Hello;
    m_duration_mode = !m_options.messages.has_value();
    m_quota = m_options.messages.value_or(0);
    if (m_options.test == PubSubTest::Latency && m_duration_mode) {
      // The latency test sends one message per gap: a duration is a count.
      m_quota =
          std::max<std::uint64_t>(1, static_cast<std::uint64_t>(m_options.duration_s * 1e6 /
                                                                static_cast<double>(m_options.latency_gap.count())));
      m_duration_mode = false;
    }
    m_total = m_quota;
    m_warm_count = m_duration_mode
                       ? 0
                       : std::max<std::uint64_t>(
                             1, static_cast<std::uint64_t>(static_cast<double>(m_quota) * m_options.warmup_fraction));
    std::fill(m_next_sequence.begin(), m_next_sequence.end(), 0);
    m_cursor = 0;
    m_end_cursor = 0;
    m_sent = 0;
    m_no_resources = 0;
    m_completions.store(0);
    m_started = false;
    m_warmed = false;
    m_data_finished = false;
    m_waiting_for_slot = false;
    const std::lock_guard lock(m_mutex);
    m_finished = false;
  }

  void publish_from_this_thread(std::chrono::milliseconds limit) {
    Backoff backoff;
    const auto give_up = Clock::now() + limit;
    if (m_options.test == PubSubTest::Latency) {
      while (m_phase == Phase::Hello) {
        if (!pump()) {
          backoff.wait();
        }
      }
      auto next = Clock::now();
      while (m_phase == Phase::Sending) {
        next += m_options.latency_gap;
        std::this_thread::sleep_until(next);
        publish_lone();
        if (has_failed()) {
          return;
        }
      }
    }
    while (m_phase != Phase::Done) {
      if (has_failed()) {
        return;
      }
      if (pump()) {
        backoff.reset();
      } else {
        if (Clock::now() > give_up) {
          throw std::runtime_error("the publisher made no progress before the time limit");
        }
        backoff.wait();
      }
    }
  }

  [[nodiscard]] bool has_failed() {
    const std::lock_guard lock(m_mutex);
    return !m_failure.empty();
  }

  void fail(std::string reason) {
    const std::lock_guard lock(m_mutex);
    if (m_failure.empty()) {
      m_failure = std::move(reason);
    }
    m_changed.notify_all();
  }

  void finish() {
    const std::lock_guard lock(m_mutex);
    m_finished = true;
    m_changed.notify_all();
  }

  PublisherFigures publisher_figures() {
    PublisherFigures figures;
    figures.messages = m_sent;
    figures.seconds = m_started ? std::chrono::duration<double>(m_last_publish - m_first_publish).count() : 0.0;
    figures.no_resources = m_no_resources;
    figures.completions = m_completions.load();
    if (m_warmed && m_data_finished && m_sent > m_sent_at_warm) {
      figures.allocations_per_message = static_cast<double>(m_allocations_at_end - m_allocations_at_warm) /
                                        static_cast<double>(m_sent - m_sent_at_warm);
    }
    return figures;
  }

  // --- publishing (the publisher context) -------------------------------------------------------

  /// Publishes `message` on `tag`; with ZERO_COPY from a slot it is copied into (the publisher
  /// reads a zero-copy payload until the completion, whose key frees the slot).
  NetioPublisherStatus publish_bytes(std::uint64_t tag, std::span<const std::uint8_t> message) {
    if (m_options.method != SendMethod::ZERO_COPY) {
      return m_publisher->publish(tag, message);
    }
    std::uint8_t* const slot = spare_slot();
    if (slot == nullptr) {
      return NetioPublisherStatus::NO_RESOURCES;
    }
    std::memcpy(slot, message.data(), message.size());
    return publish_spare_slot(tag, message.size());
  }

  /// Publishes `payload` (the scratch buffer or a zero-copy slot, header written) on `tag`.
  NetioPublisherStatus publish_payload(std::uint64_t tag, std::size_t size, const PubSubHeader& header,
                                       std::int64_t timestamp = 0) {
    std::uint8_t* const payload = m_options.method == SendMethod::ZERO_COPY ? spare_slot() : m_scratch.data();
    if (payload == nullptr) {
      return NetioPublisherStatus::NO_RESOURCES;
    }
    std::memcpy(payload, &header, sizeof(header));
    if (timestamp != 0) {
      std::memcpy(payload + sizeof(header), &timestamp, sizeof(timestamp));
    }
    if (m_options.method != SendMethod::ZERO_COPY) {
      return m_publisher->publish(tag, std::span<const std::uint8_t>(payload, size));
    }
    return publish_spare_slot(tag, size);
  }

  /// The zero-copy slot the next publish uses (kept when a publish is refused), or nullptr when
  /// every slot is in flight.
  std::uint8_t* spare_slot() noexcept {
    if (!m_has_spare_slot) {
      if (!m_free_slots->pop(m_spare_slot)) {
        return nullptr;
      }
      m_has_spare_slot = true;
    }
    return m_slot_memory.data() + std::size_t{m_spare_slot} * m_slot_size;
  }

  /// Publishes the first `size` bytes of the spare slot, its number as the key.
  NetioPublisherStatus publish_spare_slot(std::uint64_t tag, std::size_t size) {
    const NetioPublisherStatus status = m_publisher->publish(
        tag, std::span<const std::uint8_t>(m_slot_memory.data() + std::size_t{m_spare_slot} * m_slot_size, size), 0,
        m_spare_slot);
    if (status == NetioPublisherStatus::OK) {
      m_has_spare_slot = false; // back through the completion callback
    }
    return status;
  }

  /// Publishes what the current phase wants, within a budget; true when anything was accepted.
  bool pump() {
    bool progress = false;
    if (m_phase == Phase::Hello) {
      PubSubHello hello;
      hello.message_size = m_size;
      hello.expected_messages = m_total;
      hello.duration_s = m_duration_mode ? m_options.duration_s : 0.0;
      hello.warmup_fraction = m_options.warmup_fraction;
      hello.report_port = m_reports->port();
      hello.test = m_options.test;
      std::uint8_t message[kHelloPayload];
      const PubSubHeader header{kPubSubMagic, PubSubKind::Hello, 0, m_run_id, 0};
      std::memcpy(message, &header, sizeof(header));
      std::memcpy(message + sizeof(header), &hello, sizeof(hello));
      const NetioPublisherStatus status = publish_bytes(m_options.first_tag, message);
      if (status == NetioPublisherStatus::NO_RESOURCES) {
        return false;
      }
      if (status != NetioPublisherStatus::OK) {
        fail(fmt::format("publishing the hello on tag {} failed: {}", m_options.first_tag, to_string(status)));
        return false;
      }
      m_phase = Phase::Sending;
      m_started = true;
      m_first_publish = Clock::now();
      m_deadline = m_first_publish +
                   std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(m_options.duration_s));
      if (m_options.test == PubSubTest::Latency) {
        return true; // paced by the timer (UNSAFE) or the publishing thread (SAFE)
      }
      progress = true;
    }
    if (m_phase == Phase::Sending) {
      if (m_duration_mode) {
        const auto now = Clock::now();
        if (now >= m_deadline) {
          finish_data();
        } else if (!m_warmed && now - m_first_publish >=
                                    std::chrono::duration<double>(m_options.duration_s * m_options.warmup_fraction)) {
          note_warm();
        }
      }
    }
    if (m_phase == Phase::Sending) {
      std::uint64_t budget = std::clamp<std::uint64_t>(kBytesPerPump / m_size, 1, kMessagesPerPump);
      if (!m_duration_mode) {
        budget = std::min(budget, m_quota);
      }
      std::uint64_t sent = 0;
      const std::uint64_t tags = m_options.tags;
      for (; sent < budget; ++sent) {
        const std::uint64_t index = m_cursor;
        const PubSubHeader header{kPubSubMagic, PubSubKind::Data, 0, m_run_id, m_next_sequence[index]};
        const NetioPublisherStatus status = publish_payload(m_options.first_tag + index, m_size, header);
        if (status != NetioPublisherStatus::OK) [[unlikely]] {
          if (status == NetioPublisherStatus::NO_RESOURCES) {
            ++m_no_resources;
            break;
          }
          fail(fmt::format("publishing a {}-byte message on tag {} failed: {}", m_size, m_options.first_tag + index,
                           to_string(status)));
          return false;
        }
        ++m_next_sequence[index];
        m_cursor = index + 1 == tags ? 0 : index + 1;
      }
      if (sent > 0) {
        progress = true;
        note_sent(sent);
        if (!m_duration_mode) {
          m_quota -= sent;
          if (m_quota == 0) {
            finish_data();
          }
        }
      }
    }
    if (m_phase == Phase::Ending) {
      progress = publish_ends() || progress;
    }
    return progress;
  }

  /// The latency test: one message, alone (the previous one was flushed long ago).
  void publish_lone() {
    const std::uint64_t index = m_cursor;
    const PubSubHeader header{kPubSubMagic, PubSubKind::Data, 0, m_run_id, m_next_sequence[index]};
    const NetioPublisherStatus status = publish_payload(m_options.first_tag + index, m_size, header, now_ns());
    if (status == NetioPublisherStatus::NO_RESOURCES) {
      ++m_no_resources; // tried again at the next tick
      return;
    }
    if (status != NetioPublisherStatus::OK) {
      fail(fmt::format("publishing a {}-byte message on tag {} failed: {}", m_size, m_options.first_tag + index,
                       to_string(status)));
      return;
    }
    ++m_next_sequence[index];
    m_cursor = index + 1 == m_options.tags ? 0 : index + 1;
    note_sent(1);
    if (--m_quota == 0) {
      finish_data();
    }
  }

  void note_sent(std::uint64_t count) {
    m_sent += count;
    if (!m_warmed && m_warm_count != 0 && m_sent >= m_warm_count) {
      note_warm();
    }
  }

  void note_warm() {
    m_warmed = true;
    m_allocations_at_warm = allocation_count();
    m_sent_at_warm = m_sent;
  }

  void finish_data() {
    m_last_publish = Clock::now();
    m_allocations_at_end = allocation_count();
    m_data_finished = true;
    m_phase = Phase::Ending;
  }

  /// Publishes the end of every tag; true when any was accepted.
  bool publish_ends() {
    bool progress = false;
    while (m_end_cursor < m_options.tags) {
      const std::uint64_t index = m_end_cursor;
      const PubSubHeader header{kPubSubMagic, PubSubKind::End, static_cast<std::uint8_t>(m_last ? 1 : 0), m_run_id,
                                m_next_sequence[index]};
      const NetioPublisherStatus status = publish_payload(m_options.first_tag + index, sizeof(header), header);
      if (status == NetioPublisherStatus::NO_RESOURCES) {
        return progress;
      }
      if (status != NetioPublisherStatus::OK) {
        fail(fmt::format("publishing the end of tag {} failed: {}", m_options.first_tag + index, to_string(status)));
        return false;
      }
      ++m_end_cursor;
      progress = true;
    }
    m_publisher->flush(); // what the backend cannot take now follows on the flush timer
    m_phase = Phase::Done;
    if (!safe()) {
      finish();
    }
    return true;
  }

  void on_pump_signal() {
    if (m_phase == Phase::Done || has_failed()) {
      return;
    }
    if (m_options.test == PubSubTest::Latency && m_phase == Phase::Sending) {
      return; // the pace timer publishes
    }
    const bool progress = pump();
    if (m_phase == Phase::Done || has_failed()) {
      return;
    }
    if (m_options.test == PubSubTest::Latency && m_phase == Phase::Sending) {
      m_pace_timer.start(m_options.latency_gap);
      return;
    }
    if (!progress && m_options.method == SendMethod::ZERO_COPY) {
      // Out of slots: a completion fires the pump (the timer in case it came already).
      m_waiting_for_slot = true;
      m_fallback_timer.start_once(std::chrono::milliseconds{1});
      return;
    }
    // Buffers come back without a callback: poll through the loop, which writes in between.
    m_pump_signal.fire();
  }

  void on_pace_timer() {
    if (m_phase != Phase::Sending) {
      return;
    }
    publish_lone();
    if (m_phase != Phase::Sending) {
      m_pace_timer.stop();
      m_pump_signal.fire();
    }
  }

  PubSubOptions m_options;
  std::size_t m_max_size{0};
  std::vector<std::uint8_t> m_scratch;

  std::shared_ptr<EpollEventLoop> m_loop;
  std::unique_ptr<NetioPublisher> m_publisher;
  EndPointAddress m_address;
  std::unique_ptr<ReportListener> m_reports;
  std::thread m_loop_thread;
  EventSignalHandle m_task_signal;
  EventSignalHandle m_pump_signal;
  EventTimerHandle m_pace_timer;
  EventTimerHandle m_fallback_timer;

  std::mutex m_mutex;
  std::condition_variable m_changed;
  std::vector<std::function<void()>> m_tasks;
  std::string m_failure;
  bool m_finished{false};

  // ZERO_COPY payload slots.
  std::size_t m_slot_count{0};
  std::size_t m_slot_size{0}; // bytes per slot
  std::vector<std::uint8_t> m_slot_memory;
  std::unique_ptr<SlotRing> m_free_slots;
  std::uint32_t m_spare_slot{0};
  bool m_has_spare_slot{false};
  bool m_waiting_for_slot{false};
  std::atomic<std::uint64_t> m_completions{0};

  // The current run (publisher context).
  std::size_t m_size{0};
  std::uint32_t m_run_id{0};
  bool m_last{false};
  Phase m_phase{Phase::Done};
  bool m_duration_mode{false};
  std::uint64_t m_quota{0};
  std::uint64_t m_total{0};
  std::uint64_t m_warm_count{0};
  std::vector<std::uint64_t> m_next_sequence;
  std::uint64_t m_cursor{0};
  std::uint64_t m_end_cursor{0};
  std::uint64_t m_sent{0};
  std::uint64_t m_no_resources{0};
  bool m_started{false};
  bool m_warmed{false};
  bool m_data_finished{false};
  Clock::time_point m_first_publish{};
  Clock::time_point m_last_publish{};
  Clock::time_point m_deadline{};
  std::uint64_t m_allocations_at_warm{0};
  std::uint64_t m_allocations_at_end{0};
  std::uint64_t m_sent_at_warm{0};
};

} // namespace

std::vector<PubSubResult> run_publisher(const PubSubOptions& options,
                                        const std::function<void(const std::string&, std::uint16_t)>& on_listening,
                                        const std::function<void()>& check_children) {
  Publisher publisher(options);
  return publisher.run(on_listening, check_children);
}

} // namespace netio3::bench::pubsub
