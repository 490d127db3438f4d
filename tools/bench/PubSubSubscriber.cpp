// The subscriber side of `netio3-bench pubsub` (see PubSub.hpp): subscribes to every tag, checks
// and counts each message on the loop thread, and sends its figures of each run to the publisher's
// report port from the main thread.

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <iostream>
#include <mutex>
#include <netdb.h>
#include <stdexcept>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include <fmt/format.h>

#include "AllocationCounter.hpp"
#include "PubSub.hpp"
#include "Results.hpp"
#include "netio3/EpollEventLoop.hpp"
#include "netio3/NetioSubscriber.hpp"

namespace netio3::bench::pubsub {

namespace {

using Clock = std::chrono::steady_clock;

/// Subscriptions requested per loop turn (the rest follow on the next turn).
constexpr std::uint64_t kSubscriptionsPerTurn = 4096;
constexpr std::chrono::milliseconds kControlTimeout{60000};

/// Sends `text` to host:port over a new TCP connection.
void send_report(const std::string& host, std::uint16_t port, const std::string& text) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int error = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); error != 0) {
    throw std::runtime_error(
        fmt::format("cannot resolve the publisher's report address {}: {}", host, gai_strerror(error)));
  }
  const int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
    const int error = errno;
    freeaddrinfo(found);
    if (fd >= 0) {
      ::close(fd);
    }
    throw std::runtime_error(
        fmt::format("cannot connect to the publisher's report port {}:{}: {}", host, port, std::strerror(error)));
  }
  freeaddrinfo(found);
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t done = ::write(fd, text.data() + written, text.size() - written);
    if (done <= 0) {
      const int error = errno;
      ::close(fd);
      throw std::runtime_error(fmt::format("writing the report to {}:{} failed: {}", host, port, std::strerror(error)));
    }
    written += static_cast<std::size_t>(done);
  }
  ::close(fd);
}

class Subscriber {
public:
  explicit Subscriber(const PubSubOptions& options) : m_options{options}, m_next_sequence(options.tags, 0) {}
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;
  Subscriber(Subscriber&&) = delete;
  Subscriber& operator=(Subscriber&&) = delete;
  ~Subscriber() { stop(); }

  int run() {
    start();
    while (true) {
      std::unique_lock lock(m_mutex);
      // Between runs the wait is long: the publisher may measure other subscribers or sizes first.
      m_changed.wait(lock, [this] { return !m_finished_runs.empty() || !m_failure.empty(); });
      if (m_finished_runs.empty()) {
        const std::string failure = m_failure;
        lock.unlock();
        std::cerr << "netio3-bench pubsub subscriber: " << failure << '\n';
        SubscriberFigures figures;
        figures.run_id = m_run_id_for_error;
        figures.error = failure;
        try {
          if (m_report_port != 0) {
            send_report(m_options.connect_host, m_report_port, to_json(figures).dump() + "\n");
          }
        } catch (const std::exception&) { // the publisher is gone as well
        }
        stop();
        return 1;
      }
      auto [figures, last] = m_finished_runs.front();
      m_finished_runs.pop_front();
      const std::uint16_t port = m_report_port;
      lock.unlock();
      send_report(m_options.connect_host, port, to_json(figures).dump() + "\n");
      if (last) {
        break;
      }
    }
    stop();
    return 0;
  }

private:
  void start() {
    m_loop = std::make_shared<EpollEventLoop>();
    NetioSubscriberConfig config;
    config.backend_type = m_options.backend.backend;
    config.backend_mode = m_options.backend.provider == "verbs" ? NetworkMode::RDMA : NetworkMode::TCP;
    if (m_options.backend.backend == NetworkType::LIBFABRIC) {
      config.provider = m_options.backend.provider;
    }
    config.thread_safety = m_options.backend.threads;
    config.on_data_cb = [this](std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t) {
      on_message(tag, data);
    };
    config.on_subscription_refused_cb = [this](std::uint64_t tag, const EndPointAddress&, const std::string& reason) {
      fail(fmt::format("the publisher refused the subscription to tag {}: {}", tag, reason));
    };
    config.on_publisher_lost_cb = [this](const EndPointAddress& publisher, const std::vector<std::uint64_t>&) {
      fail(fmt::format("the publisher {} was lost", publisher.to_string()));
    };
    const EndPointAddress publisher(m_options.connect_host, m_options.connect_port);
    m_subscriber = std::make_unique<NetioSubscriber>(
        config, m_loop, m_options.connect_host.find(':') != std::string::npos ? "::" : "0.0.0.0");
    m_receive.buf_size = m_options.receive_size;
    m_receive.num_buf = m_options.receive_buffers;
    m_subscribe_signal = m_loop->create_signal([this, publisher] { subscribe_some(publisher); });
    m_loop_thread = std::thread([this] { m_loop->run(); });
    m_subscribe_signal.fire();
  }

  void stop() noexcept {
    if (m_loop_thread.joinable()) {
      m_loop->stop();
      m_loop_thread.join();
    }
    m_subscriber.reset();
    m_subscribe_signal.reset();
  }

  /// Loop thread: subscribes to the next tags (both thread models allow it there).
  void subscribe_some(const EndPointAddress& publisher) {
    try {
      for (std::uint64_t done = 0; done < kSubscriptionsPerTurn && m_subscribed < m_options.tags; ++done) {
        if (m_subscriber->subscribe(m_options.first_tag + m_subscribed, publisher, m_receive) != NetioStatus::OK) {
          break; // too many requests waiting: the rest on the next turn
        }
        ++m_subscribed;
      }
    } catch (const std::exception& error) {
      fail(std::string("subscribing failed: ") + error.what());
      return;
    }
    if (m_subscribed < m_options.tags) {
      m_subscribe_signal.fire();
    }
  }

  void fail(std::string reason) {
    const std::lock_guard lock(m_mutex);
    if (m_done) {
      return; // the publisher going away after the last run is expected
    }
    if (m_failure.empty()) {
      m_failure = std::move(reason);
    }
    m_changed.notify_all();
  }

  // --- the data path (loop thread) ----------------------------------------------------------------

  void on_message(std::uint64_t tag, std::span<const std::uint8_t> data) {
    if (data.size() < sizeof(PubSubHeader)) [[unlikely]] {
      ++m_protocol_errors;
      return;
    }
    PubSubHeader header;
    std::memcpy(&header, data.data(), sizeof(header));
    if (header.magic != kPubSubMagic) [[unlikely]] {
      ++m_protocol_errors;
      return;
    }
    const std::uint64_t index = tag - m_options.first_tag;
    if (header.kind == PubSubKind::Data) [[likely]] {
      if (!m_active || data.size() != m_size || header.run_id != m_run_id || index >= m_next_sequence.size())
          [[unlikely]] {
        ++m_protocol_errors;
        return;
      }
      count(index, header, data);
      return;
    }
    if (header.kind == PubSubKind::Hello) {
      on_hello(header, data);
    } else if (header.kind == PubSubKind::End) {
      on_end(index, header);
    } else {
      ++m_protocol_errors;
    }
  }

  void count(std::uint64_t index, const PubSubHeader& header, std::span<const std::uint8_t> data) {
    std::uint64_t& next = m_next_sequence[index];
    if (header.sequence != next) [[unlikely]] {
      ++m_sequence_errors;
    }
    next = header.sequence + 1;
    if (!m_started) [[unlikely]] {
      m_started = true;
      m_first_data = Clock::now();
    }
    ++m_received;
    if (m_test == PubSubTest::Latency) {
      std::int64_t published = 0;
      std::memcpy(&published, data.data() + sizeof(PubSubHeader), sizeof(published));
      const std::int64_t now =
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
      if (m_received > m_warm_count && m_samples.size() < m_samples.capacity()) {
        m_samples.push_back(static_cast<std::uint64_t>(std::max<std::int64_t>(now - published, 0)));
      }
    }
    if (!m_warmed) [[unlikely]] {
      // Duration mode looks at the clock only every few messages.
      const bool warm = m_warm_count != 0
                            ? m_received >= m_warm_count
                            : (m_received % m_warm_check_interval == 0 && Clock::now() - m_first_data >= m_warm_time);
      if (warm) {
        m_warmed = true;
        m_allocations_at_warm = allocation_count();
        m_received_at_warm = m_received;
      }
    }
  }

  void on_hello(const PubSubHeader& header, std::span<const std::uint8_t> data) {
    PubSubHello hello;
    if (data.size() < kHelloPayload) {
      ++m_protocol_errors;
      return;
    }
    std::memcpy(&hello, data.data() + sizeof(header), sizeof(hello));
    m_active = true;
    m_run_id = header.run_id;
    m_size = hello.message_size;
    m_test = hello.test;
    std::fill(m_next_sequence.begin(), m_next_sequence.end(), 0);
    m_received = 0;
    m_expected = 0;
    m_ends = 0;
    m_sequence_errors = 0;
    m_protocol_errors = 0;
    m_started = false;
    m_warmed = false;
    m_ended = false;
    m_warm_count =
        hello.expected_messages != 0
            ? std::max<std::uint64_t>(
                  1, static_cast<std::uint64_t>(static_cast<double>(hello.expected_messages) * hello.warmup_fraction))
            : 0;
    m_warm_check_interval =
        std::clamp<std::uint64_t>((std::uint64_t{64} << 10U) / std::max<std::size_t>(m_size, 1), 1, 1024);
    m_warm_time = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(hello.duration_s * hello.warmup_fraction));
    m_samples.clear();
    if (m_test == PubSubTest::Latency) {
      m_samples.reserve(hello.expected_messages); // no allocation while the samples come in
    }
    const std::lock_guard lock(m_mutex);
    m_report_port = hello.report_port;
    m_run_id_for_error = header.run_id;
  }

  void on_end(std::uint64_t index, const PubSubHeader& header) {
    if (!m_active || header.run_id != m_run_id || index >= m_next_sequence.size()) {
      ++m_protocol_errors;
      return;
    }
    if (!m_ended) {
      m_ended = true;
      m_allocations_at_end = allocation_count(); // before anything here allocates
    }
    m_expected += header.sequence;
    if (++m_ends < m_options.tags) {
      return;
    }
    const auto finished = Clock::now();
    SubscriberFigures figures;
    figures.run_id = m_run_id;
    figures.messages = m_received;
    figures.bytes = m_received * m_size;
    figures.expected = m_expected;
    figures.seconds = m_started ? std::chrono::duration<double>(finished - m_first_data).count() : 0.0;
    figures.sequence_errors = m_sequence_errors;
    figures.protocol_errors = m_protocol_errors;
    if (m_warmed && m_received > m_received_at_warm) {
      figures.allocations_per_message = static_cast<double>(m_allocations_at_end - m_allocations_at_warm) /
                                        static_cast<double>(m_received - m_received_at_warm);
    }
    if (m_test == PubSubTest::Latency) {
      // summarize_round_trips halves round trips: give it twice the one-way times.
      std::vector<std::uint64_t> doubled;
      doubled.reserve(m_samples.size());
      for (const std::uint64_t sample : m_samples) {
        doubled.push_back(sample * 2);
      }
      const LatencyFigures latency = summarize_round_trips(doubled);
      figures.latency_samples = latency.samples;
      figures.latency_median_us = latency.one_way_median_us;
      figures.latency_p99_us = latency.one_way_p99_us;
      figures.latency_p999_us = latency.one_way_p999_us;
      figures.latency_min_us = latency.one_way_min_us;
      figures.latency_max_us = latency.one_way_max_us;
    }
    m_active = false;
    const std::lock_guard lock(m_mutex);
    if (header.last != 0) {
      m_done = true;
    }
    m_finished_runs.emplace_back(std::move(figures), header.last != 0);
    m_changed.notify_all();
  }

  PubSubOptions m_options;
  std::shared_ptr<EpollEventLoop> m_loop;
  std::unique_ptr<NetioSubscriber> m_subscriber;
  std::thread m_loop_thread;
  EventSignalHandle m_subscribe_signal;
  ConnectionParametersRecv m_receive;
  std::uint64_t m_subscribed{0};

  std::mutex m_mutex;
  std::condition_variable m_changed;
  std::deque<std::pair<SubscriberFigures, bool>> m_finished_runs;
  std::string m_failure;
  bool m_done{false};
  std::uint16_t m_report_port{0};
  std::uint32_t m_run_id_for_error{0};

  // The current run (loop thread).
  bool m_active{false};
  std::uint32_t m_run_id{0};
  std::size_t m_size{0};
  PubSubTest m_test{PubSubTest::Throughput};
  std::vector<std::uint64_t> m_next_sequence;
  std::uint64_t m_received{0};
  std::uint64_t m_expected{0};
  std::uint64_t m_ends{0};
  std::uint64_t m_sequence_errors{0};
  std::uint64_t m_protocol_errors{0};
  bool m_started{false};
  bool m_warmed{false};
  bool m_ended{false};
  Clock::time_point m_first_data{};
  std::uint64_t m_warm_count{0};
  std::uint64_t m_warm_check_interval{1024};
  Clock::duration m_warm_time{};
  std::uint64_t m_allocations_at_warm{0};
  std::uint64_t m_allocations_at_end{0};
  std::uint64_t m_received_at_warm{0};
  std::vector<std::uint64_t> m_samples; ///< One-way nanoseconds (latency test).
};

} // namespace

int run_subscriber(const PubSubOptions& options) {
  Subscriber subscriber(options);
  return subscriber.run();
}

} // namespace netio3::bench::pubsub
