// ZeroMQ peer: PUSH/PULL throughput, REQ/REP latency and PUB/SUB delivery between processes on
// loopback, written on libzmq's public C API the way its own perf tools (local_thr/remote_thr) do
// it: one zmq_send per message; ZeroMQ batches the writes in its I/O thread.
//
//   peer-zmq --test throughput --size 64 --duration 1
//   peer-zmq --test latency --size 64 --messages 20000
//   peer-zmq --test pubsub --size 64 --tags 1 --subscribers 1 --duration 1

#include <cstring>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>
#include <zmq.h>

#include "PeerCommon.hpp"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    peer::die(std::string("peer-zmq: ") + what + ": " + zmq_strerror(zmq_errno()));
  }
}

/// Binds `socket` to a free loopback port and returns the endpoint text.
std::string bind_any(void* socket) {
  check(zmq_bind(socket, "tcp://127.0.0.1:*") == 0, "zmq_bind");
  char endpoint[256];
  std::size_t length = sizeof(endpoint);
  check(zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, endpoint, &length) == 0, "ZMQ_LAST_ENDPOINT");
  return endpoint;
}

/// The sending process: PUSH `size`-byte messages, then one empty message as the end mark.
void run_pusher(const peer::Settings& settings, const std::string& endpoint) {
  void* context = zmq_ctx_new();
  void* socket = zmq_socket(context, ZMQ_PUSH);
  check(zmq_connect(socket, endpoint.c_str()) == 0, "zmq_connect");
  std::vector<char> payload(settings.size, 'z');
  const auto deadline = peer::Clock::now() + std::chrono::duration_cast<peer::Clock::duration>(
                                                 std::chrono::duration<double>(settings.duration));
  for (std::uint64_t sent = 0;; ++sent) {
    if (settings.messages != 0 ? sent >= settings.messages : (sent % 1024 == 0 && peer::Clock::now() >= deadline)) {
      break;
    }
    check(zmq_send(socket, payload.data(), payload.size(), 0) >= 0, "zmq_send");
  }
  check(zmq_send(socket, nullptr, 0, 0) == 0, "zmq_send (end mark)");
  int linger = -1; // deliver everything before closing
  zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_close(socket);
  zmq_ctx_term(context);
}

int throughput(const peer::Settings& settings) {
  int pipe_fds[2];
  check(pipe(pipe_fds) == 0, "pipe");
  const pid_t child = fork();
  if (child == 0) {
    close(pipe_fds[1]);
    char endpoint[256] = {};
    if (read(pipe_fds[0], endpoint, sizeof(endpoint) - 1) <= 0) {
      _exit(2);
    }
    run_pusher(settings, endpoint);
    _exit(0);
  }
  close(pipe_fds[0]);
  void* context = zmq_ctx_new();
  void* socket = zmq_socket(context, ZMQ_PULL);
  const std::string endpoint = bind_any(socket);
  check(write(pipe_fds[1], endpoint.c_str(), endpoint.size()) == static_cast<ssize_t>(endpoint.size()), "write");
  close(pipe_fds[1]);

  std::vector<char> buffer(settings.size + 1);
  std::uint64_t received = 0;
  peer::Clock::time_point first{};
  while (true) {
    const int got = zmq_recv(socket, buffer.data(), buffer.size(), 0);
    check(got >= 0, "zmq_recv");
    if (got == 0) {
      break; // the end mark
    }
    if (received == 0) {
      first = peer::Clock::now();
    }
    ++received;
  }
  const double seconds = std::chrono::duration<double>(peer::Clock::now() - first).count();
  int status = 0;
  waitpid(child, &status, 0);
  zmq_close(socket);
  zmq_ctx_term(context);
  peer::print_throughput("zeromq-push-pull", settings.size, received, seconds);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int latency(const peer::Settings& settings) {
  int pipe_fds[2];
  check(pipe(pipe_fds) == 0, "pipe");
  const pid_t child = fork();
  if (child == 0) {
    // The echo side: REP.
    close(pipe_fds[0]);
    void* context = zmq_ctx_new();
    void* socket = zmq_socket(context, ZMQ_REP);
    const std::string endpoint = bind_any(socket);
    if (write(pipe_fds[1], endpoint.c_str(), endpoint.size()) != static_cast<ssize_t>(endpoint.size())) {
      _exit(2);
    }
    close(pipe_fds[1]);
    std::vector<char> buffer(settings.size + 1);
    while (true) {
      const int got = zmq_recv(socket, buffer.data(), buffer.size(), 0);
      if (got < 0) {
        _exit(2);
      }
      if (zmq_send(socket, buffer.data(), static_cast<std::size_t>(got), 0) < 0) {
        _exit(2);
      }
      if (got == 0) {
        break;
      }
    }
    zmq_close(socket);
    zmq_ctx_term(context);
    _exit(0);
  }
  close(pipe_fds[1]);
  char endpoint[256] = {};
  check(read(pipe_fds[0], endpoint, sizeof(endpoint) - 1) > 0, "read endpoint");
  close(pipe_fds[0]);
  void* context = zmq_ctx_new();
  void* socket = zmq_socket(context, ZMQ_REQ);
  check(zmq_connect(socket, endpoint) == 0, "zmq_connect");
  std::vector<char> payload(settings.size, 'z');
  std::vector<char> buffer(settings.size + 1);
  const std::uint64_t total = settings.messages != 0 ? settings.messages : 20000;
  const std::uint64_t warmup = peer::warmup_count(total);
  std::vector<std::uint64_t> round_trips;
  round_trips.reserve(total);
  for (std::uint64_t i = 0; i < total; ++i) {
    const auto start = peer::Clock::now();
    check(zmq_send(socket, payload.data(), payload.size(), 0) >= 0, "zmq_send");
    check(zmq_recv(socket, buffer.data(), buffer.size(), 0) >= 0, "zmq_recv");
    if (i >= warmup) {
      round_trips.push_back(peer::nanoseconds(start, peer::Clock::now()));
    }
  }
  check(zmq_send(socket, nullptr, 0, 0) == 0, "zmq_send (end)");
  check(zmq_recv(socket, buffer.data(), buffer.size(), 0) >= 0, "zmq_recv (end)");
  zmq_close(socket);
  zmq_ctx_term(context);
  int status = 0;
  waitpid(child, &status, 0);
  peer::print_latency("zeromq-req-rep", settings.size, round_trips);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

// --- PUB/SUB ------------------------------------------------------------------------------------
//
// One topic per tag: each message is the 8-byte tag (ZeroMQ's subscription prefix) followed by
// `size` bytes of payload, one zmq_send per message, published round-robin over the tags. The
// publisher is an XPUB socket, so that it can wait for every subscription to arrive before it starts
// (ZMQ_XPUB_VERBOSE passes each subscriber's), and with ZMQ_XPUB_NODROP it blocks instead of dropping
// when a subscriber's high-water mark is reached: every message is delivered, as with netio3. At the
// end an 8-byte message (the tag alone) per tag. Each subscriber is a process of its own; it reports
// its count and time over a pipe, and the parent prints one line: the sum of the messages over the
// longest subscriber's time.

struct PubSubSettings {
  std::uint64_t tags{1};
  std::uint64_t subscribers{1};
};

void run_subscriber(const peer::Settings& settings, const PubSubSettings& pubsub, int endpoint_fd, int report_fd) {
  char endpoint[256] = {};
  if (read(endpoint_fd, endpoint, sizeof(endpoint) - 1) <= 0) {
    _exit(2);
  }
  void* context = zmq_ctx_new();
  void* socket = zmq_socket(context, ZMQ_SUB);
  // Subscriptions travel towards the publisher; a full pipe would drop them (10,000 tags are more
  // than the default high-water mark). Data in the other direction keeps ZeroMQ's defaults.
  const int unlimited = 0;
  check(zmq_setsockopt(socket, ZMQ_SNDHWM, &unlimited, sizeof(unlimited)) == 0, "ZMQ_SNDHWM (SUB)");
  check(zmq_connect(socket, endpoint) == 0, "zmq_connect (SUB)");
  for (std::uint64_t i = 0; i < pubsub.tags; ++i) {
    const std::uint64_t tag = i + 1;
    check(zmq_setsockopt(socket, ZMQ_SUBSCRIBE, &tag, sizeof(tag)) == 0, "ZMQ_SUBSCRIBE");
  }
  std::vector<char> buffer(settings.size + sizeof(std::uint64_t) + 1);
  std::uint64_t received = 0;
  std::uint64_t ends = 0;
  peer::Clock::time_point first{};
  while (ends < pubsub.tags) {
    const int got = zmq_recv(socket, buffer.data(), buffer.size(), 0);
    check(got >= 0, "zmq_recv (SUB)");
    if (got == static_cast<int>(sizeof(std::uint64_t))) {
      ++ends;
      continue;
    }
    if (received == 0) {
      first = peer::Clock::now();
    }
    ++received;
  }
  const double seconds = std::chrono::duration<double>(peer::Clock::now() - first).count();
  const std::string line = nlohmann::json{{"messages", received}, {"seconds", seconds}}.dump() + "\n";
  if (write(report_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    _exit(2);
  }
  zmq_close(socket);
  zmq_ctx_term(context);
  _exit(0);
}

int pubsub_throughput(const peer::Settings& settings, const PubSubSettings& pubsub) {
  std::vector<int> endpoint_pipes;
  std::vector<int> report_pipes;
  std::vector<pid_t> children;
  for (std::uint64_t i = 0; i < pubsub.subscribers; ++i) {
    int endpoint_fds[2];
    int report_fds[2];
    check(pipe(endpoint_fds) == 0 && pipe(report_fds) == 0, "pipe");
    const pid_t child = fork();
    check(child >= 0, "fork");
    if (child == 0) {
      close(endpoint_fds[1]);
      close(report_fds[0]);
      run_subscriber(settings, pubsub, endpoint_fds[0], report_fds[1]);
    }
    close(endpoint_fds[0]);
    close(report_fds[1]);
    endpoint_pipes.push_back(endpoint_fds[1]);
    report_pipes.push_back(report_fds[0]);
    children.push_back(child);
  }
  void* context = zmq_ctx_new();
  void* socket = zmq_socket(context, ZMQ_XPUB);
  const int yes = 1;
  check(zmq_setsockopt(socket, ZMQ_XPUB_VERBOSE, &yes, sizeof(yes)) == 0, "ZMQ_XPUB_VERBOSE");
  check(zmq_setsockopt(socket, ZMQ_XPUB_NODROP, &yes, sizeof(yes)) == 0, "ZMQ_XPUB_NODROP");
  const int unlimited = 0;
  check(zmq_setsockopt(socket, ZMQ_RCVHWM, &unlimited, sizeof(unlimited)) == 0, "ZMQ_RCVHWM (XPUB)");
  const int subscription_timeout_ms = 60000;
  check(zmq_setsockopt(socket, ZMQ_RCVTIMEO, &subscription_timeout_ms, sizeof(subscription_timeout_ms)) == 0,
        "ZMQ_RCVTIMEO (XPUB)");
  const std::string endpoint = bind_any(socket);
  for (const int fd : endpoint_pipes) {
    check(write(fd, endpoint.c_str(), endpoint.size()) == static_cast<ssize_t>(endpoint.size()), "write");
    close(fd);
  }
  // Every subscriber's every subscription has reached the publisher: nothing published is lost.
  char subscription[64];
  for (std::uint64_t wanted = pubsub.tags * pubsub.subscribers; wanted > 0;) {
    const int got = zmq_recv(socket, subscription, sizeof(subscription), 0);
    check(got >= 0, "zmq_recv (waiting for every subscription)");
    if (got > 0 && subscription[0] == 1) {
      --wanted;
    }
  }
  std::vector<char> message(sizeof(std::uint64_t) + settings.size, 'z');
  const auto deadline = peer::Clock::now() + std::chrono::duration_cast<peer::Clock::duration>(
                                                 std::chrono::duration<double>(settings.duration));
  std::uint64_t cursor = 0;
  for (std::uint64_t sent = 0;; ++sent) {
    if (settings.messages != 0 ? sent >= settings.messages : (sent % 1024 == 0 && peer::Clock::now() >= deadline)) {
      break;
    }
    const std::uint64_t tag = cursor + 1;
    std::memcpy(message.data(), &tag, sizeof(tag));
    cursor = cursor + 1 == pubsub.tags ? 0 : cursor + 1;
    check(zmq_send(socket, message.data(), message.size(), 0) >= 0, "zmq_send (PUB)");
  }
  for (std::uint64_t i = 0; i < pubsub.tags; ++i) {
    const std::uint64_t tag = i + 1;
    check(zmq_send(socket, &tag, sizeof(tag), 0) >= 0, "zmq_send (end)");
  }
  std::uint64_t messages = 0;
  double seconds = 0.0;
  bool ok = true;
  for (std::size_t i = 0; i < children.size(); ++i) {
    std::string text;
    char chunk[512];
    ssize_t got = 0;
    while ((got = read(report_pipes[i], chunk, sizeof(chunk))) > 0) {
      text.append(chunk, static_cast<std::size_t>(got));
    }
    close(report_pipes[i]);
    int status = 0;
    waitpid(children[i], &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || text.empty()) {
      ok = false;
      continue;
    }
    const nlohmann::json report = nlohmann::json::parse(text);
    messages += report.at("messages").get<std::uint64_t>();
    seconds = std::max(seconds, report.at("seconds").get<double>());
  }
  int linger = 0;
  zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_close(socket);
  zmq_ctx_term(context);
  const double rate = seconds > 0.0 ? static_cast<double>(messages) / seconds : 0.0;
  std::cout << nlohmann::json{{"system", "zeromq-pub-sub"},
                              {"test", "pubsub"},
                              {"size", settings.size},
                              {"tags", pubsub.tags},
                              {"subscribers", pubsub.subscribers},
                              {"messages", messages},
                              {"seconds", seconds},
                              {"messages_per_s", rate},
                              {"mb_per_s", rate * static_cast<double>(settings.size) / 1e6}}
                   .dump()
            << std::endl;
  return ok ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"ZeroMQ peer for bench/compare: PUSH/PULL throughput, REQ/REP latency (two processes), PUB/SUB "
               "(a publisher and subscriber processes), on loopback",
               "peer-zmq"};
  peer::Settings settings;
  peer::add_options(app, settings, {"throughput", "latency", "pubsub"});
  PubSubSettings pubsub;
  app.add_option("--tags", pubsub.tags,
                 "pubsub: topics (8-byte tags 1..N), published round-robin; every subscriber "
                 "subscribes to all")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1000000}))
      ->capture_default_str();
  app.add_option("--subscribers", pubsub.subscribers, "pubsub: subscriber processes")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{256}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (settings.test == "pubsub") {
    return pubsub_throughput(settings, pubsub);
  }
  return settings.test == "latency" ? latency(settings) : throughput(settings);
}
