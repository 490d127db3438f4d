// ZeroMQ peer: PUSH/PULL throughput and REQ/REP latency between two processes on loopback, written
// on libzmq's public C API the way its own perf tools (local_thr/remote_thr) do it: one zmq_send
// per message; ZeroMQ batches the writes in its I/O thread.
//
//   peer-zmq --test throughput --size 64 --duration 1
//   peer-zmq --test latency --size 64 --messages 20000

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

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"ZeroMQ peer for bench/compare: PUSH/PULL throughput, REQ/REP latency (two processes, loopback)",
               "peer-zmq"};
  peer::Settings settings;
  peer::add_options(app, settings);
  CLI11_PARSE(app, argc, argv);
  return settings.test == "latency" ? latency(settings) : throughput(settings);
}
