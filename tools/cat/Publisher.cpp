#include "Publisher.hpp"

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <mutex>
#include <poll.h>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "Parse.hpp"
#include "netio3/BufferFormatter.hpp"
#include "netio3/EpollEventLoop.hpp"
#include "netio3/NetioPublisher.hpp"

namespace netio3::cat {

namespace {

using Clock = std::chrono::steady_clock;

/// How often the loop thread looks at the subscriber count (to print its changes).
constexpr std::chrono::milliseconds monitor_period{100};
/// How often the main thread looks again while it waits for subscribers to come or go.
constexpr std::chrono::milliseconds subscriber_poll{20};
/// How long a publish that met backpressure (NO_RESOURCES) waits before it tries again.
constexpr std::chrono::microseconds backpressure_wait{50};
/// ZERO_COPY: messages whose memory the publisher may hold at once.
constexpr std::size_t zero_copy_slots{64};

/// The event loop on a thread of its own, for the lifetime of this object.
class LoopThread {
public:
  LoopThread() : m_loop{std::make_shared<EpollEventLoop>()}, m_thread{[this] { m_loop->run(); }} {
    // stop() before run() has started is not remembered: make sure it runs.
    while (!m_loop->is_running()) {
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
  }
  ~LoopThread() {
    m_loop->stop();
    m_thread.join();
  }
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;
  LoopThread(LoopThread&&) = delete;
  LoopThread& operator=(LoopThread&&) = delete;

  [[nodiscard]] const std::shared_ptr<EpollEventLoop>& loop() const { return m_loop; }

private:
  std::shared_ptr<EpollEventLoop> m_loop;
  std::thread m_thread;
};

/// A pipe the stop signals write to, so that waits end at once on Ctrl-C.
class StopPipe {
public:
  StopPipe() {
    if (pipe2(m_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
      throw std::runtime_error(std::string{"cannot create a pipe: "} + error_text(errno));
    }
  }
  ~StopPipe() {
    close(m_fds[0]);
    close(m_fds[1]);
  }
  StopPipe(const StopPipe&) = delete;
  StopPipe& operator=(const StopPipe&) = delete;
  StopPipe(StopPipe&&) = delete;
  StopPipe& operator=(StopPipe&&) = delete;

  [[nodiscard]] int read_end() const { return m_fds[0]; }
  [[nodiscard]] int write_end() const { return m_fds[1]; }

private:
  int m_fds[2]{-1, -1};
};

/// Waits until `fd` is readable (when not -1), a stop signal arrives, or `timeout` passes.
/// Returns true when `fd` is readable.
bool wait_for_input(int fd, int stop_fd, std::chrono::nanoseconds timeout) {
  pollfd fds[2]{{stop_fd, POLLIN, 0}, {fd, POLLIN, 0}};
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(timeout);
  const timespec limit{static_cast<time_t>(seconds.count()), static_cast<long>((timeout - seconds).count())};
  const int ready = ppoll(fds, fd >= 0 ? 2 : 1, timeout.count() < 0 ? nullptr : &limit, nullptr);
  return ready > 0 && fd >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

/// Lines of standard input, read as they come (interactive input is published line by line).
class LineReader {
public:
  LineReader(int stop_fd, std::size_t max_line) : m_stop_fd{stop_fd}, m_max_line{max_line} {
    m_buffer.reserve(std::size_t{64} << 10U);
  }

  enum class Result { line, too_long, end, stopped };

  /// The next line, without its newline (valid until the next call). A last line without a
  /// newline counts. Lines longer than `max_line` are skipped (`too_long`, with their length).
  Result next(std::string_view& line, std::size_t& long_length) {
    for (;;) {
      if (m_consumed > 0) {
        m_buffer.erase(0, m_consumed);
        m_consumed = 0;
      }
      const std::size_t newline = m_buffer.find('\n', m_scanned);
      if (newline != std::string::npos) {
        m_consumed = newline + 1;
        m_scanned = 0;
        if (m_skipping || newline > m_max_line) {
          long_length = m_skipped + newline;
          m_skipping = false;
          m_skipped = 0;
          return Result::too_long;
        }
        line = std::string_view{m_buffer}.substr(0, newline);
        return Result::line;
      }
      m_scanned = m_buffer.size();
      if (m_eof) {
        if (m_buffer.empty() && !m_skipping) {
          return Result::end;
        }
        m_consumed = m_buffer.size();
        if (m_skipping || m_buffer.size() > m_max_line) {
          long_length = m_skipped + m_buffer.size();
          m_skipping = false;
          m_skipped = 0;
          return Result::too_long;
        }
        line = m_buffer;
        return Result::line;
      }
      if (m_buffer.size() > m_max_line) {
        // Longer than any message: forget it as it comes, so that memory stays bounded.
        m_skipped += m_buffer.size();
        m_skipping = true;
        m_buffer.clear();
        m_scanned = 0;
      }
      if (!fill()) {
        return Result::stopped;
      }
    }
  }

private:
  bool fill() {
    while (!stop_requested()) {
      // Wait first: a read of a terminal would outlast Ctrl-C (the handlers restart system calls).
      if (!wait_for_input(STDIN_FILENO, m_stop_fd, std::chrono::nanoseconds{-1})) {
        continue;
      }
      char chunk[16384];
      const ssize_t got = read(STDIN_FILENO, chunk, sizeof(chunk));
      if (got > 0) {
        m_buffer.append(chunk, static_cast<std::size_t>(got));
        return true;
      }
      if (got == 0) {
        m_eof = true;
        return true;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        throw std::runtime_error(std::string{"cannot read standard input: "} + error_text(errno));
      }
    }
    return false;
  }

  int m_stop_fd;
  std::size_t m_max_line;
  std::string m_buffer;
  std::size_t m_consumed{0};
  std::size_t m_scanned{0};
  bool m_eof{false};
  bool m_skipping{false};
  std::size_t m_skipped{0};
};

/// Fills `out` with a recognisable, printable message: "#SEQUENCE " then letters.
void fill_generated(std::span<std::uint8_t> out, std::uint64_t sequence) {
  char head[32];
  const std::size_t head_size = fmt::format_to_n(head, sizeof(head), "#{} ", sequence).size;
  for (std::size_t index = 0; index < out.size(); ++index) {
    out[index] = index < head_size ? static_cast<std::uint8_t>(head[index])
                                   : static_cast<std::uint8_t>('a' + (index - head_size) % 26);
  }
}

class PublishRun {
public:
  explicit PublishRun(const PublishOptions& options)
    : m_options{options}, m_max_payload{options.buffer_size - BufferFormatter::max_overhead} {}

  int run() {
    NetioPublisherConfig config;
    config.backend_type = m_options.backend.type;
    config.backend_mode = m_options.backend.mode;
    config.provider = m_options.backend.provider;
    config.thread_safety = ThreadSafetyModel::SAFE; // publish from this thread, the loop on its own
    config.method = m_options.method;
    config.buffersize = m_options.buffer_size;
    config.nbuffers = m_options.buffers;
    config.flush_interval = m_options.flush_interval;
    if (m_options.method == SendMethod::ZERO_COPY) {
      m_region.resize(zero_copy_slots * m_max_payload);
      config.mr_start = m_region.data();
      config.mr_size = m_region.size();
      config.max_pending_publishes = zero_copy_slots;
      for (std::uint64_t slot = 0; slot < zero_copy_slots; ++slot) {
        m_free_slots.push_back(zero_copy_slots - 1 - slot);
      }
    } else {
      m_scratch.resize(m_max_payload);
    }

    LoopThread loop_thread;
    m_publisher = std::make_unique<NetioPublisher>(config, loop_thread.loop(), m_options.listen);
    m_publisher->set_on_publish_completed([this](std::uint64_t slot) { release_slot(slot); });
    // After the backend exists: libraries loaded on the way (libfabric's providers) may install
    // signal handlers of their own.
    install_stop_handlers(m_stop.write_end());
    notef("listening on {}", m_publisher->address().to_string());
    EventTimerHandle monitor = loop_thread.loop()->create_timer([this] { print_subscriber_changes(); });
    monitor.start(monitor_period);

    int status = 0;
    try {
      status = publish_all();
    } catch (...) {
      monitor.reset();
      m_publisher.reset();
      throw;
    }
    print_subscriber_changes();
    monitor.reset();
    m_publisher.reset(); // closes every connection, while the loop still runs
    if (!m_options.quiet) {
      notef("published {}, {} bytes, to tag{} {}{}{}{}", messages_text(m_published), m_bytes,
            m_options.tags.size() == 1 ? "" : "s", describe_tags(m_options.tags),
            m_dropped > 0 ? fmt::format("; {} dropped (no subscriber)", m_dropped) : std::string{},
            m_too_long > 0 ? fmt::format("; {} lines too long for a message", m_too_long) : std::string{},
            m_too_large > 0 ? fmt::format("; {} too large for a subscriber", m_too_large) : std::string{});
    }
    return status;
  }

private:
  // --- the input ------------------------------------------------------------------------------

  int publish_all() {
    if (!wait_for_subscribers()) {
      return 0; // Ctrl-C
    }
    m_started = Clock::now();
    const bool generated = m_options.size.has_value();
    if (!generated && isatty(STDIN_FILENO) == 1 && !m_options.quiet) {
      note("publishing each line you type (Ctrl-D ends the input, Ctrl-C quits)");
    }
    LineReader reader{m_stop.read_end(), m_max_payload};
    std::uint64_t offered = 0;
    while (m_options.count == 0 || offered < m_options.count) {
      if (stop_requested() || !pace(offered)) {
        return 0;
      }
      const std::uint64_t tag = m_options.tags[offered % m_options.tags.size()];
      std::span<std::uint8_t> memory = message_memory();
      if (memory.data() == nullptr) {
        return 0; // stopped while waiting for a zero-copy slot
      }
      std::size_t length = 0;
      if (generated) {
        length = *m_options.size;
        fill_generated(memory.first(length), offered);
      } else {
        std::string_view line;
        std::size_t long_length = 0;
        const LineReader::Result result = reader.next(line, long_length);
        if (result == LineReader::Result::stopped) {
          return 0;
        }
        if (result == LineReader::Result::end) {
          break;
        }
        if (result == LineReader::Result::too_long) {
          ++m_too_long;
          ++offered;
          notef("line {}: {} bytes is longer than the largest message ({} bytes: --buffer-size minus {}); skipped",
                offered, long_length, m_max_payload, BufferFormatter::max_overhead);
          give_back(memory);
          continue;
        }
        length = line.size();
        std::memcpy(memory.data(), line.data(), length);
      }
      ++offered;
      const Outcome outcome = publish_one(tag, memory.first(length), generated);
      if (outcome == Outcome::failed) {
        return exit_failure;
      }
      if (outcome == Outcome::stopped) {
        return 0;
      }
    }
    m_publisher->flush();
    return wait_for_subscribers_to_leave();
  }

  /// Before the first message: until `wait_for` subscribers hold subscriptions to our tags.
  bool wait_for_subscribers() {
    if (m_options.wait_for == 0) {
      return true;
    }
    bool told = false;
    while (!stop_requested()) {
      if (enough_subscribers()) {
        print_subscriber_changes();
        return true;
      }
      if (!told && !m_options.quiet) {
        notef("waiting for {} subscriber{} of tag{} {} (--wait-for)", m_options.wait_for,
              m_options.wait_for == 1 ? "" : "s", m_options.tags.size() == 1 ? "" : "s", describe_tags(m_options.tags));
        told = true;
      }
      (void)wait_for_input(-1, m_stop.read_end(), subscriber_poll);
    }
    return false;
  }

  [[nodiscard]] bool enough_subscribers() const {
    if (m_publisher->subscriber_count() < m_options.wait_for) {
      return false;
    }
    std::size_t subscriptions = 0;
    for (const std::uint64_t tag : m_options.tags) {
      subscriptions += m_publisher->subscriber_count(tag);
      if (subscriptions >= m_options.wait_for) {
        return true;
      }
    }
    return false;
  }

  int wait_for_subscribers_to_leave() {
    std::size_t subscribers = m_publisher->subscriber_count();
    if (subscribers > 0 && !m_options.quiet) {
      notef("end of input: serving until the {} subscriber{} leave{} (Ctrl-C quits now)", subscribers,
            subscribers == 1 ? "" : "s", subscribers == 1 ? "s" : "");
    }
    while (subscribers > 0 && !stop_requested()) {
      (void)wait_for_input(-1, m_stop.read_end(), subscriber_poll);
      subscribers = m_publisher->subscriber_count();
    }
    print_subscriber_changes();
    return 0;
  }

  /// --rate: waits until message `index` is due. False on Ctrl-C.
  bool pace(std::uint64_t index) {
    if (m_options.rate <= 0.0) {
      return true;
    }
    const auto due = m_started + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(static_cast<double>(index) / m_options.rate));
    for (Clock::time_point now = Clock::now(); now < due; now = Clock::now()) {
      if (stop_requested()) {
        return false;
      }
      (void)wait_for_input(-1, m_stop.read_end(), due - now);
    }
    return !stop_requested();
  }

  // --- publishing -----------------------------------------------------------------------------

  enum class Outcome { published, dropped, stopped, failed };

  Outcome publish_one(std::uint64_t tag, std::span<const std::uint8_t> data, bool generated) {
    const std::uint64_t key = m_options.method == SendMethod::ZERO_COPY
                                  ? static_cast<std::uint64_t>(data.data() - m_region.data()) / m_max_payload
                                  : 0;
    for (;;) {
      const NetioPublisherStatus status = m_publisher->publish(tag, data, 0, key);
      switch (status) {
      case NetioPublisherStatus::OK:
        ++m_published;
        m_bytes += data.size();
        m_told_paused = false;
        return Outcome::published;
      case NetioPublisherStatus::NO_RESOURCES:
        // Backpressure from the slowest subscriber: nothing was sent; the same message again.
        if (stop_requested()) {
          return Outcome::stopped;
        }
        (void)wait_for_input(-1, m_stop.read_end(), backpressure_wait);
        continue;
      case NetioPublisherStatus::NO_SUBSCRIBERS:
        if (generated && m_publisher->subscriber_count() == 0) {
          // Nobody at all: the generator waits for someone rather than spinning.
          print_subscriber_changes();
          if (!m_told_paused && !m_options.quiet) {
            note("no subscribers: generating paused until one subscribes");
            m_told_paused = true;
          }
          while (m_publisher->subscriber_count() == 0) {
            if (stop_requested()) {
              return Outcome::stopped;
            }
            (void)wait_for_input(-1, m_stop.read_end(), subscriber_poll);
          }
          continue;
        }
        drop(tag, data);
        if (!m_told_dropping && !m_options.quiet) {
          notef("no subscriber to tag {}: message dropped (further drops are only counted)", tag);
          m_told_dropping = true;
        }
        return Outcome::dropped;
      case NetioPublisherStatus::MESSAGE_TOO_LARGE:
        drop(tag, data);
        --m_dropped;
        ++m_too_large;
        if (!m_told_too_large) {
          notef("a message of {} bytes is larger than a subscriber of tag {} accepts (its --max-size): dropped "
                "(further ones are only counted)",
                data.size(), tag);
          m_told_too_large = true;
        }
        return Outcome::dropped;
      case NetioPublisherStatus::OUTSIDE_REGISTERED_REGION:
      case NetioPublisherStatus::INVALID_ARGUMENT:
      case NetioPublisherStatus::FAILED:
        notef("publishing to tag {} failed: {}", tag, to_string(status));
        return Outcome::failed;
      }
    }
  }

  void drop(std::uint64_t /*tag*/, std::span<const std::uint8_t> data) {
    ++m_dropped;
    if (m_options.method == SendMethod::ZERO_COPY) {
      release_slot(static_cast<std::uint64_t>(data.data() - m_region.data()) / m_max_payload);
    }
  }

  // --- message memory -------------------------------------------------------------------------

  /// Where the next message is written: the scratch buffer (copied by publish), or a free
  /// zero-copy slot (waited for; empty span on Ctrl-C).
  std::span<std::uint8_t> message_memory() {
    if (m_options.method != SendMethod::ZERO_COPY) {
      return m_scratch;
    }
    std::unique_lock lock{m_slots_mutex};
    while (m_free_slots.empty()) {
      if (stop_requested()) {
        return {};
      }
      m_slot_freed.wait_for(lock, subscriber_poll);
    }
    const std::uint64_t slot = m_free_slots.back();
    m_free_slots.pop_back();
    return std::span<std::uint8_t>{m_region}.subspan(slot * m_max_payload, m_max_payload);
  }

  /// A message memory that was not published (skipped line) goes back.
  void give_back(std::span<std::uint8_t> memory) {
    if (m_options.method == SendMethod::ZERO_COPY) {
      release_slot(static_cast<std::uint64_t>(memory.data() - m_region.data()) / m_max_payload);
    }
  }

  void release_slot(std::uint64_t slot) {
    {
      const std::lock_guard lock{m_slots_mutex};
      m_free_slots.push_back(slot);
    }
    m_slot_freed.notify_one();
  }

  // --- the loop thread ------------------------------------------------------------------------

  /// Loop thread (the monitor timer) and main thread (while it waits for subscribers).
  void print_subscriber_changes() {
    const std::lock_guard lock{m_shown_mutex};
    const std::size_t subscribers = m_publisher->subscriber_count();
    if (subscribers != m_shown_subscribers && !m_options.quiet) {
      notef("subscribers: {}", subscribers);
    }
    m_shown_subscribers = subscribers;
  }

  const PublishOptions& m_options;
  const std::size_t m_max_payload;
  StopPipe m_stop;
  std::unique_ptr<NetioPublisher> m_publisher;

  std::vector<std::uint8_t> m_scratch;
  std::vector<std::uint8_t> m_region; // ZERO_COPY: zero_copy_slots slots of m_max_payload bytes
  std::mutex m_slots_mutex;
  std::condition_variable m_slot_freed;
  std::vector<std::uint64_t> m_free_slots; // slots mutex

  Clock::time_point m_started;
  std::uint64_t m_published{0};
  std::uint64_t m_bytes{0};
  std::uint64_t m_dropped{0};
  std::uint64_t m_too_long{0};
  std::uint64_t m_too_large{0};
  bool m_told_paused{false};
  bool m_told_dropping{false};
  bool m_told_too_large{false};
  std::mutex m_shown_mutex;
  std::size_t m_shown_subscribers{0}; // shown mutex
};

} // namespace

int run_publish(const PublishOptions& options) {
  PublishRun run{options};
  return run.run();
}

} // namespace netio3::cat
