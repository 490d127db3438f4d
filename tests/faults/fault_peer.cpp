// netio3-fault-peer: the sender or receiver process of the fault tests (and of manual long runs).
//
//   netio3-fault-peer recv --listen 127.0.0.1 --expect-finished 4
//   netio3-fault-peer send --connect 127.0.0.1 --port PORT --connections 4 --messages 100000
//
// It speaks a line protocol on stdout that the tests read: "READY port=N" (receiver listening),
// "ESTABLISHED ...", "CLOSED ...", "REFUSED ...", "MILESTONE ...", "STALLED", "PROGRESS ...", and
// a final "RESULT key=value ..." line with every figure (plus "ERROR text" lines for the first
// contract violation found). Exit status 0 when it ran to its end (whatever the figures say; the
// tests judge them), 2 for bad arguments, 3 when set-up failed, 4 when its own timeout expired.

#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "FaultProtocol.hpp"
#include "ProcessStats.hpp"
#include "TrafficReceiver.hpp"
#include "TrafficSender.hpp"

namespace {

using namespace netio3;
using namespace netio3::faults;
using SteadyClock = std::chrono::steady_clock;

std::mutex output_mutex;

/// One protocol line on stdout, flushed at once (the test reads it while we run).
void say(const std::string& line) {
  const std::lock_guard lock(output_mutex);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

/// Waits up to `slice` for SIGTERM/SIGINT (blocked in every thread, see main); true when one came.
bool termination_requested(std::chrono::milliseconds slice) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(slice);
  const timespec timeout{static_cast<time_t>(seconds.count()),
                         static_cast<long>(std::chrono::nanoseconds(slice - seconds).count())};
  return sigtimedwait(&signals, nullptr, &timeout) > 0;
}

NetworkType parse_backend(const std::string& name) {
  if (name == "asyncmsg") {
    return NetworkType::ASYNCMSG;
  }
  if (name == "libfabric") {
    return NetworkType::LIBFABRIC;
  }
  throw CLI::ValidationError("--backend", "must be asyncmsg or libfabric, not '" + name + "'");
}

ThreadSafetyModel parse_thread_safety(const std::string& name) {
  if (name == "safe") {
    return ThreadSafetyModel::SAFE;
  }
  if (name == "unsafe") {
    return ThreadSafetyModel::UNSAFE;
  }
  throw CLI::ValidationError("--thread-safety", "must be safe or unsafe, not '" + name + "'");
}

struct CommonArgs {
  std::string backend{"asyncmsg"};
  std::string provider{};
  std::string thread_safety{"safe"};
  unsigned peer_timeout_ms{10000};
  double timeout_s{600};
};

void add_common(CLI::App& command, CommonArgs& args) {
  command.add_option("--backend", args.backend, "asyncmsg or libfabric")->capture_default_str();
  command.add_option("--provider", args.provider, "libfabric provider, e.g. tcp (default: the backend's)");
  command
      .add_option("--thread-safety", args.thread_safety,
                  "safe: the application calls from its own thread; unsafe: everything on the loop thread")
      ->capture_default_str();
  command.add_option("--peer-timeout-ms", args.peer_timeout_ms, "NetworkConfig::peer_timeout")->capture_default_str();
  command.add_option("--timeout-s", args.timeout_s, "give up (exit 4) after this long")->capture_default_str();
}

// --- receiver -------------------------------------------------------------------------------------

struct RecvArgs {
  CommonArgs common;
  std::string listen{"127.0.0.1"};
  unsigned port{0};
  std::size_t max_message{(std::size_t{1} << 20U) + 64U};
  std::size_t num_buf{16};
  std::size_t max_connections{0};
  std::uint64_t expect_finished{0};
  std::uint64_t stall_after{0};
  unsigned report_ms{0};
  double warmup_s{1};
};

int run_receiver(const RecvArgs& args) {
  ReceiverOptions options;
  options.type = parse_backend(args.common.backend);
  options.provider = args.common.provider;
  options.thread_safety = parse_thread_safety(args.common.thread_safety);
  options.listen = EndPointAddress(args.listen, static_cast<std::uint16_t>(args.port));
  options.max_message = args.max_message;
  options.num_buf = args.num_buf;
  options.peer_timeout = std::chrono::milliseconds{args.common.peer_timeout_ms};
  options.max_connections = args.max_connections;
  options.stall_after = args.stall_after;

  const auto rss_begin = resident_kib();
  std::optional<TrafficReceiver> receiver;
  try {
    receiver.emplace(options);
  } catch (const std::exception& error) {
    say(std::string("SETUP_FAILED reason=") + error.what());
    return 3;
  }
  say("READY address=" + receiver->address().address() + " port=" + std::to_string(receiver->address().port()));

  const auto started = SteadyClock::now();
  const auto deadline =
      started + std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(args.common.timeout_s));
  auto next_report = started + std::chrono::milliseconds{args.report_ms};
  std::uint64_t rss_warm = 0;
  std::uint64_t last_closed = 0;
  bool stalled_reported = false;
  int exit_code = 0;
  for (;;) {
    if (termination_requested(std::chrono::milliseconds{10})) {
      break;
    }
    const auto now = SteadyClock::now();
    const auto figures = receiver->snapshot();
    if (rss_warm == 0 && now - started > std::chrono::duration<double>(args.warmup_s) && figures.totals.messages > 0) {
      rss_warm = resident_kib();
    }
    for (; last_closed < figures.closed; ++last_closed) {
      say("CLOSED count=" + std::to_string(last_closed + 1));
    }
    if (args.stall_after != 0 && !stalled_reported && figures.totals.messages >= args.stall_after) {
      stalled_reported = true;
      say("STALLED messages=" + std::to_string(figures.totals.messages));
    }
    if (args.report_ms != 0 && now >= next_report) {
      next_report = now + std::chrono::milliseconds{args.report_ms};
      say("PROGRESS messages=" + std::to_string(figures.totals.messages) +
          " finished=" + std::to_string(figures.totals.streams_finished) +
          " errors=" + std::to_string(figures.totals.errors()) + " rss_kib=" + std::to_string(resident_kib()));
    }
    if (args.expect_finished != 0 && figures.totals.streams_finished >= args.expect_finished) {
      break;
    }
    if (now >= deadline) {
      exit_code = 4;
      break;
    }
  }
  const auto rss_end = resident_kib();
  receiver->stop();
  const auto figures = receiver->snapshot();
  const auto& totals = figures.totals;
  if (!figures.first_error.empty()) {
    say("ERROR " + figures.first_error);
  }
  say("RESULT role=recv messages=" + std::to_string(totals.messages) + " bytes=" + std::to_string(totals.bytes) +
      " in_order=" + std::to_string(totals.in_order) + " lost=" + std::to_string(totals.lost) +
      " duplicated=" + std::to_string(totals.duplicated) + " corrupted=" + std::to_string(totals.corrupted) +
      " after_last=" + std::to_string(totals.after_last) + " streams_seen=" + std::to_string(totals.streams_seen) +
      " streams_finished=" + std::to_string(totals.streams_finished) +
      " established=" + std::to_string(figures.established) + " closed=" + std::to_string(figures.closed) +
      " rejected=" + std::to_string(figures.rejected) + " protocol_errors=" + std::to_string(figures.protocol_errors) +
      " rss_begin_kib=" + std::to_string(rss_begin) + " rss_warm_kib=" + std::to_string(rss_warm) +
      " rss_end_kib=" + std::to_string(rss_end) + " hwm_kib=" + std::to_string(peak_resident_kib()) +
      " seconds=" + std::to_string(std::chrono::duration<double>(SteadyClock::now() - started).count()) +
      " timed_out=" + (exit_code == 4 ? "1" : "0"));
  return exit_code;
}

// --- sender ---------------------------------------------------------------------------------------

struct SendArgs {
  CommonArgs common;
  std::string connect{"127.0.0.1"};
  unsigned port{0};
  std::size_t connections{1};
  std::size_t backends{0};
  std::uint64_t messages{10000};
  double duration_s{0};
  std::string modes{"all"};
  std::size_t min_size{0};
  std::size_t max_size{4096};
  std::size_t window{4096};
  std::size_t zerocopy_bytes{4U << 20U};
  std::size_t buffer_count{32};
  std::uint64_t rate{0};
  unsigned stream_base{1};
  unsigned connect_timeout_ms{10000};
  std::size_t max_unsent_bytes{8U << 20U};
  std::uint64_t reconnect_messages{0};
  std::uint64_t milestone{0};
  double linger_s{30};
  double warmup_s{-1};
  unsigned report_ms{0};
};

int run_sender(const SendArgs& args) {
  SenderOptions options;
  options.type = parse_backend(args.common.backend);
  options.provider = args.common.provider;
  options.thread_safety = parse_thread_safety(args.common.thread_safety);
  options.backends = args.backends != 0 ? args.backends : args.connections;
  options.profile.modes = parse_send_modes(args.modes);
  options.profile.min_size = args.min_size;
  options.profile.max_size = args.max_size;
  options.profile.window = args.window;
  options.profile.zerocopy_bytes = args.zerocopy_bytes;
  options.profile.buffer_count = args.buffer_count;
  options.profile.rate = args.rate;
  options.peer_timeout = std::chrono::milliseconds{args.common.peer_timeout_ms};
  options.connect_timeout = std::chrono::milliseconds{args.connect_timeout_ms};
  options.max_unsent_bytes = args.max_unsent_bytes;
  const EndPointAddress target(args.connect, static_cast<std::uint16_t>(args.port));

  // Reconnection (link-cut tests): a stream that closes before its last message is followed by a
  // new stream (id + connections) that retries until it is established, then sends
  // `reconnect_messages` messages and ends.
  TrafficSender* sender_ptr = nullptr;
  std::atomic<std::uint64_t> reconnects{0};
  std::mutex reconnect_mutex;
  std::set<std::uint16_t> reconnect_streams;
  const auto on_ended = [&](const StreamStats& stats) {
    if (args.reconnect_messages == 0 || sender_ptr == nullptr) {
      return;
    }
    const std::lock_guard lock(reconnect_mutex);
    const bool is_retry = reconnect_streams.count(stats.stream) != 0;
    if (is_retry && stats.established) {
      return; // the replacement stream itself ended after doing its work (or failing): no more
    }
    if (!is_retry && stats.done_sending) {
      return; // the stream was complete: nothing to replace
    }
    const auto next =
        static_cast<std::uint16_t>(is_retry ? stats.stream + 1000U : stats.stream + args.connections + 1000U);
    reconnect_streams.insert(next);
    reconnects.fetch_add(1);
    sender_ptr->add_stream(next, stats.target, args.reconnect_messages, std::chrono::milliseconds{200});
  };

  const auto rss_begin = resident_kib();
  std::optional<TrafficSender> sender;
  try {
    sender.emplace(options, say, on_ended);
  } catch (const std::exception& error) {
    say(std::string("SETUP_FAILED reason=") + error.what());
    return 3;
  }
  sender_ptr = &*sender;
  const std::uint64_t per_stream = args.duration_s > 0 ? 0 : args.messages;
  for (std::size_t i = 0; i < args.connections; ++i) {
    sender->add_stream(static_cast<std::uint16_t>(args.stream_base + i), target, per_stream);
  }
  sender->start();

  const auto started = SteadyClock::now();
  const auto deadline =
      started + std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(args.common.timeout_s));
  const auto finish_at =
      started + std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(args.duration_s));
  // Warm-up figure: by default half-way through a timed run (at most after 60 s), else after 1 s.
  const double warmup_s =
      args.warmup_s >= 0 ? args.warmup_s : (args.duration_s > 0 ? std::min(args.duration_s / 2, 60.0) : 1.0);
  const auto warm_at =
      started + std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(warmup_s));
  bool finishing = args.duration_s <= 0;
  bool milestone_said = args.milestone == 0;
  auto next_report = started + std::chrono::milliseconds{args.report_ms};
  // Since when everything was sent and completed (time_point{} while not).
  SteadyClock::time_point drained_since{};
  std::uint64_t rss_warm = 0;
  std::uint64_t rss_end = 0;
  int exit_code = 0;
  for (;;) {
    if (termination_requested(std::chrono::milliseconds{10})) {
      break;
    }
    const auto now = SteadyClock::now();
    const auto totals = sender->totals();
    if (rss_warm == 0 && now >= warm_at && totals.sent > 0) {
      rss_warm = resident_kib();
    }
    if (args.report_ms != 0 && now >= next_report) {
      next_report = now + std::chrono::milliseconds{args.report_ms};
      say("PROGRESS sent=" + std::to_string(totals.sent) + " completed=" + std::to_string(totals.completed) +
          " no_resources=" + std::to_string(totals.no_resources) + " rss_kib=" + std::to_string(resident_kib()));
    }
    if (!milestone_said && totals.completed >= args.milestone) {
      milestone_said = true;
      say("MILESTONE completed=" + std::to_string(totals.completed) + " sent=" + std::to_string(totals.sent));
    }
    if (!finishing && now >= finish_at) {
      finishing = true;
      rss_end = resident_kib(); // the end of steady sending, before any connection closes
      sender->finish_all();
    }
    if (rss_end == 0 && finishing && totals.done_sending == totals.streams) {
      rss_end = resident_kib();
    }
    // Done when every stream ended (the receiver closes after the last messages) or, once all was
    // sent and completed, after `linger` without the close.
    if (finishing && sender->quiescent()) {
      const bool all_ended = [&] {
        for (const auto& stats : sender->all_stats()) {
          if (!stats.audited) {
            return false;
          }
        }
        return true;
      }();
      if (all_ended) {
        break;
      }
      if (drained_since == SteadyClock::time_point{}) {
        drained_since = now;
      } else if (now - drained_since > std::chrono::duration<double>(args.linger_s)) {
        break;
      }
    } else {
      drained_since = SteadyClock::time_point{};
    }
    if (now >= deadline) {
      exit_code = 4;
      break;
    }
  }
  if (rss_end == 0) {
    rss_end = resident_kib();
  }
  sender->stop();
  const auto totals = sender->totals();
  std::uint64_t reconnected = 0;
  for (const auto& stats : sender->all_stats()) {
    const std::lock_guard lock(reconnect_mutex);
    if (reconnect_streams.count(stats.stream) != 0 && stats.established) {
      ++reconnected;
    }
  }
  if (const auto error = sender->first_error(); !error.empty()) {
    say("ERROR " + error);
  }
  say("RESULT role=send sent=" + std::to_string(totals.sent) + " keyed_sent=" + std::to_string(totals.keyed_sent) +
      " completed=" + std::to_string(totals.completed) +
      " pending_returned=" + std::to_string(totals.pending_returned) +
      " no_resources=" + std::to_string(totals.no_resources) + " failed_sends=" + std::to_string(totals.failed_sends) +
      " unexpected_status=" + std::to_string(totals.unexpected_status) + " key_errors=" +
      std::to_string(totals.key_errors) + " unreported_zero_copy=" + std::to_string(totals.unreported_zero_copy) +
      " dropped_copy_keys=" + std::to_string(totals.dropped_copy_keys) +
      " outstanding=" + std::to_string(totals.outstanding) + " streams=" + std::to_string(totals.streams) +
      " established=" + std::to_string(totals.established) + " refused=" + std::to_string(totals.refused) +
      " closed=" + std::to_string(totals.closed) + " done_sending=" + std::to_string(totals.done_sending) +
      " reconnects=" + std::to_string(reconnects.load()) + " reconnected=" + std::to_string(reconnected) +
      " rss_begin_kib=" + std::to_string(rss_begin) + " rss_warm_kib=" + std::to_string(rss_warm) +
      " rss_end_kib=" + std::to_string(rss_end) + " hwm_kib=" + std::to_string(peak_resident_kib()) +
      " seconds=" + std::to_string(std::chrono::duration<double>(SteadyClock::now() - started).count()) +
      " timed_out=" + (exit_code == 4 ? "1" : "0"));
  return exit_code;
}

} // namespace

int main(int argc, char** argv) {
  // SIGTERM/SIGINT are taken synchronously by the main thread (sigtimedwait): blocked here, before
  // any thread starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  CLI::App app{"netio3-fault-peer: sender or receiver of verifiable test traffic for the netio3 fault tests"};
  app.require_subcommand(1);

  RecvArgs recv_args;
  auto* recv = app.add_subcommand("recv", "listen, verify every message, report figures");
  add_common(*recv, recv_args.common);
  recv->add_option("--listen", recv_args.listen, "address to listen on")->capture_default_str();
  recv->add_option("--port", recv_args.port, "port (0: any free port, printed in READY)")->capture_default_str();
  recv->add_option("--max-message", recv_args.max_message, "largest message accepted (bytes)")->capture_default_str();
  recv->add_option("--num-buf", recv_args.num_buf, "receive buffers per connection")->capture_default_str();
  recv->add_option("--max-connections", recv_args.max_connections, "max_connections_per_listener (0: none)");
  recv->add_option("--expect-finished", recv_args.expect_finished,
                   "exit once this many streams delivered their last message (0: run until SIGTERM)");
  recv->add_option("--stall-after", recv_args.stall_after,
                   "stop reading (block the loop) after this many messages, until killed");
  recv->add_option("--report-ms", recv_args.report_ms, "print PROGRESS (with RSS) every this many ms (0: never)");
  recv->add_option("--warmup-s", recv_args.warmup_s, "take the warm-up RSS figure this long after the start")
      ->capture_default_str();

  SendArgs send_args;
  auto* send = app.add_subcommand("send", "connect, send verifiable messages, check every key");
  add_common(*send, send_args.common);
  send->add_option("--connect", send_args.connect, "receiver address")->capture_default_str();
  send->add_option("--port", send_args.port, "receiver port")->required();
  send->add_option("--connections", send_args.connections, "connections (streams)")->capture_default_str();
  send->add_option("--backends", send_args.backends, "backend instances (0: one per connection)");
  send->add_option("--messages", send_args.messages, "messages per connection")->capture_default_str();
  send->add_option("--duration-s", send_args.duration_s, "send for this long instead of --messages");
  send->add_option("--modes", send_args.modes, "copy,copy-iov,zerocopy,zerocopy-iov,buffered or all")
      ->capture_default_str();
  send->add_option("--min-size", send_args.min_size, "smallest payload (bytes)")->capture_default_str();
  send->add_option("--max-size", send_args.max_size, "largest payload (bytes)")->capture_default_str();
  send->add_option("--window", send_args.window, "most keyed sends in flight per connection")->capture_default_str();
  send->add_option("--zerocopy-bytes", send_args.zerocopy_bytes, "zero-copy region per connection (bytes)")
      ->capture_default_str();
  send->add_option("--buffer-count", send_args.buffer_count, "buffers per buffered pool")->capture_default_str();
  send->add_option("--rate", send_args.rate, "messages per second per connection (0: as fast as possible)");
  send->add_option("--stream-base", send_args.stream_base, "id of the first stream")->capture_default_str();
  send->add_option("--connect-timeout-ms", send_args.connect_timeout_ms, "NetworkConfig::connect_timeout")
      ->capture_default_str();
  send->add_option("--max-unsent-bytes", send_args.max_unsent_bytes, "NetworkConfig::max_unsent_bytes")
      ->capture_default_str();
  send->add_option("--reconnect-messages", send_args.reconnect_messages,
                   "after a connection is lost, reconnect (retrying) and send this many messages");
  send->add_option("--milestone", send_args.milestone, "print MILESTONE once this many sends completed");
  send->add_option("--report-ms", send_args.report_ms, "print PROGRESS (with RSS) every this many ms (0: never)");
  send->add_option("--warmup-s", send_args.warmup_s,
                   "take the warm-up RSS figure this long after the start (default: half of --duration-s, at most "
                   "60 s; 1 s without --duration-s)");
  send->add_option("--linger-s", send_args.linger_s,
                   "after everything completed, wait this long for the receiver to close")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error) == 0 ? 0 : 2;
  }
  try {
    if (recv->parsed()) {
      return run_receiver(recv_args);
    }
    return run_sender(send_args);
  } catch (const CLI::Error& error) {
    std::fprintf(stderr, "netio3-fault-peer: %s\n", error.what());
    return 2;
  } catch (const std::invalid_argument& error) {
    std::fprintf(stderr, "netio3-fault-peer: %s\n", error.what());
    return 2;
  } catch (const std::exception& error) {
    say(std::string("SETUP_FAILED reason=") + error.what());
    return 3;
  }
}
