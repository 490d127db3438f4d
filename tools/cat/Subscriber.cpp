#include "Subscriber.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>

#include "Format.hpp"
#include "Parse.hpp"
#include "netio3/EpollEventLoop.hpp"
#include "netio3/NetioSubscriber.hpp"

namespace netio3::cat {

namespace {

using Clock = std::chrono::steady_clock;

/// Up to this many tags, each subscription event gets a line of its own; beyond, one line sums up.
constexpr std::size_t max_event_lines{8};
/// Up to this many tags, stopping unsubscribes explicitly and waits for the acknowledgements (so
/// that the user sees them); beyond, the destructor's best-effort unsubscribe does it.
constexpr std::size_t max_explicit_unsubscribes{4096};
/// How long stopping waits for those acknowledgements before closing anyway.
constexpr std::chrono::seconds unsubscribe_wait{5};
constexpr std::chrono::milliseconds flush_period{100};
constexpr std::chrono::seconds live_period{1};

struct TagCount {
  std::uint64_t messages{0};
  std::uint64_t bytes{0};
};

class SubscribeRun {
public:
  explicit SubscribeRun(const SubscribeOptions& options)
    : m_options{options}, m_loop{std::make_shared<EpollEventLoop>()}, m_live{!options.quiet && stderr_is_terminal() &&
                                                                             (options.format == OutputFormat::count ||
                                                                              isatty(STDOUT_FILENO) != 1)} {}

  int run() {
    NetioSubscriberConfig config;
    config.backend_type = m_options.backend.type;
    config.backend_mode = m_options.backend.mode;
    config.provider = m_options.backend.provider;
    config.on_data_cb = [this](std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t status) {
      on_data(tag, data, status);
    };
    config.on_subscribed_cb = [this](std::uint64_t tag, const EndPointAddress&) { on_subscribed(tag); };
    config.on_unsubscribed_cb = [this](std::uint64_t tag, const EndPointAddress&) { on_unsubscribed(tag); };
    config.on_subscription_refused_cb = [this](std::uint64_t tag, const EndPointAddress&, const std::string& reason) {
      on_refused(tag, reason);
    };
    config.on_publisher_lost_cb = [this](const EndPointAddress&, const std::vector<std::uint64_t>&) { on_lost(); };
    m_subscriber = std::make_unique<NetioSubscriber>(config, m_loop, m_options.local_ip);

    m_stop_signal = m_loop->create_signal([this] { request_stop(0); });
    m_subscribe_pump = m_loop->create_signal([this] { subscribe_some(); });
    m_flush_timer = m_loop->create_timer([this] { flush_output(); });
    m_flush_timer.start(flush_period);
    if (m_live) {
      m_live_timer = m_loop->create_timer([this] { draw_live_line(); });
      m_live_timer.start(live_period);
    }
    m_deadline_timer = m_loop->create_timer([this] {
      note("no unsubscribe acknowledgement from the publisher in time; closing anyway");
      m_loop->stop();
    });

    // Before the loop runs, so that the first requests leave together with the hello.
    subscribe_some();
    // After the first subscribe has created the data backend: libraries loaded on the way (libfabric's
    // providers) may install signal handlers of their own.
    install_stop_handlers(m_stop_signal.fd());
    m_live_since = Clock::now();
    m_loop->run();

    // The destructor unsubscribes from whatever is left (best effort) and closes the connections.
    m_subscriber.reset();
    m_flush_timer.reset();
    m_live_timer.reset();
    m_deadline_timer.reset();
    m_subscribe_pump.reset();
    live_line("");
    flush_output();
    finish_report();
    return m_exit_code;
  }

private:
  // --- subscribing ----------------------------------------------------------------------------

  void subscribe_some() {
    const ConnectionParametersRecv params{m_options.max_size};
    while (m_next_to_subscribe < m_options.tags.size() && !m_stopping) {
      const NetioStatus status =
          m_subscriber->subscribe(m_options.tags[m_next_to_subscribe], m_options.publisher, params);
      if (status == NetioStatus::NO_RESOURCES) {
        m_subscribe_pump.fire(); // its queue is full: again once the loop has taken some
        return;
      }
      m_active.insert(m_options.tags[m_next_to_subscribe]);
      ++m_next_to_subscribe;
    }
  }

  // The acknowledgement travels on the control connection, the data on the data connection: the
  // first messages of a tag may come before it (and, with --count, the end too).
  void on_subscribed(std::uint64_t tag) {
    ++m_acknowledged;
    if (m_options.quiet) {
      return;
    }
    if (m_options.tags.size() <= max_event_lines) {
      notef("subscribed to tag {} at {}", tag, m_options.publisher.to_string());
    } else if (m_acknowledged + m_refused == m_options.tags.size()) {
      notef("subscribed to {} of {} tags ({}) at {}", m_acknowledged, m_options.tags.size(),
            describe_tags(m_options.tags), m_options.publisher.to_string());
    }
  }

  void on_refused(std::uint64_t tag, const std::string& reason) {
    ++m_refused;
    m_active.erase(tag);
    if (m_refused <= max_event_lines) {
      notef("the publisher at {} refused tag {}: {}", m_options.publisher.to_string(), tag, reason);
    } else if (m_refused == max_event_lines + 1) {
      note("(further refusals are counted, not printed)");
    }
    if (m_refused == m_options.tags.size() && !m_stopping) {
      note("every subscription was refused: nothing to receive (a publisher with another --backend, or one that "
           "cannot reach this --local-ip, says 'cannot connect to its data listener')");
      request_stop(exit_failure);
    }
  }

  void on_unsubscribed(std::uint64_t tag) {
    if (!m_stopping || m_active.erase(tag) == 0) {
      return;
    }
    ++m_unsubscribed;
    if (m_options.tags.size() <= max_event_lines && !m_options.quiet) {
      notef("unsubscribed from tag {}", tag);
    }
    if (m_active.empty()) {
      if (m_options.tags.size() > max_event_lines && !m_options.quiet) {
        notef("unsubscribed from {} tags", m_unsubscribed);
      }
      m_loop->stop();
    }
  }

  void on_lost() {
    m_lost = true;
    if (m_stopping) {
      m_loop->stop();
      return;
    }
    flush_output(); // what arrived before comes first
    const std::string publisher = m_options.publisher.to_string();
    const bool heard_from = m_acknowledged > 0 || m_received > 0;
    if (!heard_from && m_refused == 0) {
      notef("cannot reach the publisher at {} (the netio3 warning above says why): is 'netio3-cat publish' running "
            "there, with the same --backend?",
            publisher);
    } else if (!heard_from) {
      notef("the publisher at {} refused the subscription and closed the connection", publisher);
    } else {
      notef("lost the publisher at {} after {}: it ended, was killed, or the network failed", publisher,
            messages_text(m_received));
    }
    request_stop(exit_failure);
  }

  // --- stopping -------------------------------------------------------------------------------

  void request_stop(int exit_code) {
    if (m_stopping) {
      return;
    }
    m_stopping = true;
    m_exit_code = exit_code;
    if (m_lost || m_active.empty() || m_active.size() > max_explicit_unsubscribes) {
      m_loop->stop();
      return;
    }
    // Every tag asked for, acknowledged or not: an unsubscribe is acknowledged in either case (and
    // a subscription acknowledged after it is not reported), so the stop always sees its end.
    for (const std::uint64_t tag : m_active) {
      if (m_subscriber->unsubscribe(tag, m_options.publisher) != NetioStatus::OK) {
        m_loop->stop(); // the destructor unsubscribes the rest
        return;
      }
    }
    m_deadline_timer.start_once(unsubscribe_wait);
  }

  // --- data -----------------------------------------------------------------------------------

  void on_data(std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t status) {
    if (m_stopping) {
      return;
    }
    const Clock::time_point now = Clock::now();
    if (m_received == 0) {
      m_first = now;
    }
    m_last = now;
    ++m_received;
    m_bytes += data.size();
    switch (m_options.format) {
    case OutputFormat::text:
      m_line.clear();
      if (m_options.show_tag) {
        append_tag(tag, status);
        m_line += ": ";
      }
      append_escaped(m_line, data);
      m_line += '\n';
      write_output();
      break;
    case OutputFormat::hex:
      m_line.clear();
      fmt::format_to(std::back_inserter(m_line), "message {}: ", m_received);
      append_tag(tag, status);
      fmt::format_to(std::back_inserter(m_line), ", {} bytes\n", data.size());
      append_hex_dump(m_line, data);
      write_output();
      break;
    case OutputFormat::count: {
      if (m_cached == nullptr || m_cached_tag != tag) {
        m_cached = &m_per_tag[tag];
        m_cached_tag = tag;
      }
      ++m_cached->messages;
      m_cached->bytes += data.size();
      break;
    }
    }
    if (m_options.count != 0 && m_received == m_options.count) {
      request_stop(0);
    }
  }

  void append_tag(std::uint64_t tag, std::uint8_t status) {
    fmt::format_to(std::back_inserter(m_line), "tag {}", tag);
    if (status != 0) {
      fmt::format_to(std::back_inserter(m_line), " status {}", status);
    }
  }

  void write_output() {
    if (m_output_failed) {
      return;
    }
    if (std::fwrite(m_line.data(), 1, m_line.size(), stdout) != m_line.size()) {
      output_failed(errno);
    }
  }

  void flush_output() {
    if (!m_output_failed && std::fflush(stdout) != 0) {
      output_failed(errno);
    }
  }

  void output_failed(int error) {
    m_output_failed = true;
    if (error == EPIPE) {
      request_stop(0); // the reader is gone (| head): the end the user asked for
      return;
    }
    notef("cannot write to standard output: {}", error_text(error));
    request_stop(exit_failure);
  }

  void draw_live_line() {
    const Clock::time_point now = Clock::now();
    const double seconds = std::chrono::duration<double>(now - m_live_since).count();
    const double rate = static_cast<double>(m_received - m_live_messages) / seconds;
    const double megabytes = static_cast<double>(m_bytes - m_live_bytes) / seconds / 1e6;
    live_line(fmt::format("{} messages/s, {:.1f} MB/s  (total {} messages, {} bytes)", human_count(rate), megabytes,
                          m_received, m_bytes));
    m_live_since = now;
    m_live_messages = m_received;
    m_live_bytes = m_bytes;
  }

  void finish_report() {
    if (m_options.format == OutputFormat::count) {
      const std::map<std::uint64_t, TagCount> sorted(m_per_tag.begin(), m_per_tag.end());
      for (const auto& [tag, counted] : sorted) {
        std::printf("tag %llu: %llu messages, %llu bytes\n", static_cast<unsigned long long>(tag),
                    static_cast<unsigned long long>(counted.messages), static_cast<unsigned long long>(counted.bytes));
      }
      flush_output();
    }
    if (m_options.quiet) {
      return;
    }
    if (m_options.tags.size() > max_event_lines && m_acknowledged + m_refused < m_options.tags.size() && !m_lost) {
      // Acknowledgements travel on the control connection, data on the data connection: with many
      // tags the data may be through before the last acknowledgement.
      notef("{} of {} subscriptions had been acknowledged when it ended", m_acknowledged, m_options.tags.size());
    }
    if (m_received == 0) {
      note("received no messages");
      return;
    }
    const double seconds = std::chrono::duration<double>(m_last - m_first).count();
    if (seconds < 0.01) {
      // Everything in a buffer or two: a rate over so short a time would mean nothing.
      notef("received {}, {} bytes", messages_text(m_received), m_bytes);
      return;
    }
    // N messages from the first to the last are N - 1 intervals.
    const double intervals = static_cast<double>(m_received - 1);
    const double bytes = static_cast<double>(m_bytes) * intervals / static_cast<double>(m_received);
    notef("received {}, {} bytes in {:.3f} s ({} messages/s, {:.1f} MB/s)", messages_text(m_received), m_bytes, seconds,
          human_count(intervals / seconds), bytes / seconds / 1e6);
  }

  const SubscribeOptions& m_options;
  std::shared_ptr<EpollEventLoop> m_loop;
  const bool m_live;
  std::unique_ptr<NetioSubscriber> m_subscriber;
  EventSignalHandle m_stop_signal;
  EventSignalHandle m_subscribe_pump;
  EventTimerHandle m_flush_timer;
  EventTimerHandle m_live_timer;
  EventTimerHandle m_deadline_timer;

  // Everything below: the loop thread (or the main thread before and after the loop runs).
  std::size_t m_next_to_subscribe{0};
  std::unordered_set<std::uint64_t> m_active; // asked for, not refused, not unsubscribed
  std::size_t m_acknowledged{0};
  std::size_t m_refused{0};
  std::size_t m_unsubscribed{0};
  bool m_lost{false};
  bool m_stopping{false};
  int m_exit_code{0};
  bool m_output_failed{false};

  std::string m_line; // reused for every message
  std::uint64_t m_received{0};
  std::uint64_t m_bytes{0};
  Clock::time_point m_first;
  Clock::time_point m_last;
  std::unordered_map<std::uint64_t, TagCount> m_per_tag;
  std::uint64_t m_cached_tag{0};
  TagCount* m_cached{nullptr};
  Clock::time_point m_live_since;
  std::uint64_t m_live_messages{0};
  std::uint64_t m_live_bytes{0};
};

} // namespace

int run_subscribe(const SubscribeOptions& options) {
  SubscribeRun run{options};
  return run.run();
}

} // namespace netio3::cat
