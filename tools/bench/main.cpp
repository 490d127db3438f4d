// netio3-bench: throughput and latency of netio3 between two processes.
//
//   netio3-bench server [options]              the receiving side
//   netio3-bench client --connect H:P [opts]   the sending side; prints the table
//   netio3-bench run [options]                 both on loopback: starts a server child, runs the client
//   netio3-bench pubsub [options]              NetioPublisher -> NetioSubscriber processes (PubSub.hpp)

#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>
#include <optional>
#include <poll.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "Client.hpp"
#include "Options.hpp"
#include "Plot.hpp"
#include "PubSub.hpp"
#include "Results.hpp"
#include "Server.hpp"

extern char** environ;

namespace netio3::bench {
namespace {

constexpr const char* kDescription = R"(netio3-bench measures netio3 between two processes: receiver-side throughput
(messages/s, MB/s) or ping-pong latency (median, p99, p99.9 of the one-way time, taken as half the
round trip), for any backend, send mode, message size and number of connections. It also counts heap
allocations per message after warm-up, in the sender and in the receiver. A message of size S is S bytes
on the netio3 API, including the benchmark's 16-byte header (so the minimum size is 16).

Roles:
  run      starts a server child on loopback and runs the client against it (one command)
  server   the receiving side; prints "listening on ADDRESS:PORT"
  client   the sending side; connects to a server and prints the results
  pubsub   the frontend's publish/subscribe: NetioPublisher to NetioSubscriber processes (its own --help)

Addresses: IPv4 or IPv6 literals or host names ("--host ::1", "--connect [::1]:5555",
"--connect [fe80::1%eth0]:5555", "--connect localhost:5555": each address of a name is tried in
turn). The server sends its replies (ready, pongs, results) over a connection of its own back to the
client's reply listener, at the address it sees the client's data connection come from: the client
listens on 127.0.0.1 and/or ::1 for a loopback server, else on :: (and 0.0.0.0), in the families of
the server's addresses. A reply connection that cannot connect ends the run within seconds at both
ends, each saying what could not reach what.

Examples:
  netio3-bench run --sizes 64,4k,64k,1m --duration 1
  netio3-bench run --mode buffered --size 64 --messages 5000000
  netio3-bench run --test latency --size 64 --messages 20000
  netio3-bench run --backend libfabric --provider tcp --mode zerocopy --size 1m --json
  netio3-bench run --connections 1000 --size 64 --duration 2
  netio3-bench server --port 5555 --once      and elsewhere:
  netio3-bench client --connect 127.0.0.1:5555 --threads safe --size 64)";

struct Arguments {
  std::string backend{"asyncmsg"};
  std::string provider{"tcp"};
  std::string threads{"unsafe"};
  std::string test{"throughput"};
  std::string mode{"copy"};
  std::string size;
  std::string sizes;
  std::uint64_t messages{0};
  double duration{0.0};
  std::size_t connections{1};
  std::string buffer_size{"64k"};
  std::size_t buffers{0};
  double warmup{0.1};
  std::string max_unsent{"8m"};
  std::int64_t receive_poll_us{NetworkConfig{}.receive_poll.count()};
  bool json{false};
  std::string plot;
  bool quiet{false};
  std::string connect;
  std::string host{"127.0.0.1"};
  std::uint16_t port{0};
  bool once{false};
  std::string max_size{"1m"};
  std::size_t recv_buffers{0};
};

void add_backend_options(CLI::App& app, Arguments& arguments) {
  app.add_option("--backend", arguments.backend,
                 "Which netio3 backend: asyncmsg (TCP sockets) or libfabric. Example: --backend libfabric")
      ->check(CLI::IsMember({"asyncmsg", "libfabric"}))
      ->capture_default_str();
  app.add_option("--provider", arguments.provider,
                 "libfabric provider: tcp, sockets or verbs (RDMA). Ignored by asyncmsg. Example: --provider sockets")
      ->check(CLI::IsMember({"tcp", "sockets", "verbs"}))
      ->capture_default_str();
  app.add_option("--threads", arguments.threads,
                 "Thread-safety model. unsafe: the client sends from the event-loop thread (no locks); safe: it "
                 "sends from an application thread while the loop runs in another. Example: --threads safe")
      ->check(CLI::IsMember({"safe", "unsafe"}))
      ->capture_default_str();
  app.add_option("--receive-poll", arguments.receive_poll_us,
                 "libfabric only: NetworkConfig::receive_poll in microseconds, how long a receiving connection "
                 "keeps reading its queue after a wake-up that completed nothing (0: never). Example: "
                 "--receive-poll 0")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1000000}))
      ->capture_default_str();
}

void add_server_options(CLI::App& app, Arguments& arguments) {
  app.add_option("--max-size", arguments.max_size,
                 "Largest message the server accepts per connection (k, m suffixes). run sets it from the sizes. "
                 "Example: --max-size 4m")
      ->capture_default_str();
  app.add_option("--recv-buffers", arguments.recv_buffers,
                 "Receive buffers per accepted connection: the libfabric backend's receive window and credits "
                 "(0: 16). Example: --recv-buffers 64");
}

void add_client_options(CLI::App& app, Arguments& arguments) {
  app.add_option("--test", arguments.test,
                 "throughput: the client streams messages, the server counts them; latency: ping-pong of one "
                 "message at a time on one connection. Example: --test latency")
      ->check(CLI::IsMember({"throughput", "latency"}))
      ->capture_default_str();
  app.add_option("--mode", arguments.mode,
                 "How messages are handed to netio3. copy: send_data_copy; zerocopy: send_data from memory that "
                 "stays untouched (registered on RDMA); buffered: get_buffer/send_buffer, many messages packed "
                 "per buffer (see --buffer-size). Example: --mode buffered")
      ->check(CLI::IsMember({"copy", "zerocopy", "buffered"}))
      ->capture_default_str();
  auto* size = app.add_option("--size", arguments.size,
                              "Message size in bytes, at least 16 (k, m suffixes: binary). Default 64. Example: "
                              "--size 4k");
  auto* sizes = app.add_option("--sizes", arguments.sizes,
                               "A sweep: comma-separated sizes, one run each. Example: --sizes 64,4k,64k,1m");
  size->excludes(sizes);
  auto* messages = app.add_option("--messages", arguments.messages,
                                  "Messages per size (total over all connections; round trips in the latency "
                                  "test). Example: --messages 1000000");
  auto* duration = app.add_option("--duration", arguments.duration,
                                  "Seconds per size instead of a message count (default 2 when neither is "
                                  "given). Example: --duration 0.5");
  messages->excludes(duration);
  app.add_option("--connections", arguments.connections,
                 "Data connections (throughput test). Connection i goes to the server address + i (an IPv4 or IPv6 "
                 "literal; IPv6 counts up its last 32 bits), so "
                 "with more than one the server must listen on 0.0.0.0 or :: and have those addresses (run does that "
                 "on 127.0.0.x). Example: "
                 "--connections 1000")
      ->check(CLI::Range(std::size_t{1}, std::size_t{60000}))
      ->capture_default_str();
  app.add_option("--buffer-size", arguments.buffer_size,
                 "Buffered mode: bytes packed into one buffer (at least one message). Example: --buffer-size 256k")
      ->capture_default_str();
  app.add_option("--buffers", arguments.buffers,
                 "Buffered mode: buffers in each send endpoint's pool (0: 64, fewer with many connections). "
                 "Example: --buffers 128");
  app.add_option("--warmup", arguments.warmup,
                 "Share of each run excluded from the allocation count and the latency figures. Example: "
                 "--warmup 0.2")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  app.add_option("--max-unsent", arguments.max_unsent,
                 "NetworkConfig::max_unsent_bytes of the client: unsent bytes per connection before sends return "
                 "NO_RESOURCES. Example: --max-unsent 32m")
      ->capture_default_str();
  app.add_flag("--json", arguments.json,
               "Print the results as one JSON document on stdout instead of the table. Example: --json");
  app.add_option("--plot", arguments.plot,
                 "Also draw the results as a PNG with gnuplot (Debian: gnuplot-nox): message rate and Gbit/s "
                 "(throughput) or one-way latency (latency) against the message size. Example: --sizes "
                 "64,4k,64k,1m --plot sweep.png");
}

void add_quiet(CLI::App& app, Arguments& arguments) {
  app.add_flag("--quiet,-q", arguments.quiet,
               "No progress line and no start-up notes on stderr (the progress line only ever appears when "
               "stderr is a terminal). Example: --quiet");
}

BackendOptions backend_options(const Arguments& arguments) {
  BackendOptions options;
  options.backend = arguments.backend == "libfabric" ? NetworkType::LIBFABRIC : NetworkType::ASYNCMSG;
  options.provider = arguments.provider;
  options.threads = arguments.threads == "safe" ? ThreadSafetyModel::SAFE : ThreadSafetyModel::UNSAFE;
  options.receive_poll = std::chrono::microseconds{arguments.receive_poll_us};
  return options;
}

ClientOptions client_options(const Arguments& arguments) {
  ClientOptions options;
  options.backend = backend_options(arguments);
  options.test = arguments.test == "latency" ? TestKind::Latency : TestKind::Throughput;
  options.mode = arguments.mode == "zerocopy"   ? SendMode::ZeroCopy
                 : arguments.mode == "buffered" ? SendMode::Buffered
                                                : SendMode::Copy;
  if (!arguments.sizes.empty()) {
    options.sizes = parse_sizes(arguments.sizes);
  } else if (!arguments.size.empty()) {
    options.sizes = {parse_size(arguments.size)};
  }
  for (const std::size_t size : options.sizes) {
    if (size < kMinMessageSize) {
      throw std::invalid_argument(fmt::format("message size {} is below the minimum of {} bytes (the benchmark's "
                                              "header)",
                                              size, kMinMessageSize));
    }
  }
  if (arguments.messages != 0) {
    options.messages = arguments.messages;
  }
  if (arguments.duration > 0.0) {
    options.duration_s = arguments.duration;
  }
  options.connections = arguments.connections;
  if (options.test == TestKind::Latency && options.connections != 1) {
    throw std::invalid_argument("the latency test uses one connection; drop --connections");
  }
  options.buffer_size = parse_size(arguments.buffer_size);
  options.buffers = arguments.buffers;
  options.warmup_fraction = arguments.warmup;
  options.max_unsent_bytes = parse_size(arguments.max_unsent);
  options.json = arguments.json;
  options.quiet = arguments.quiet;
  if (!arguments.plot.empty()) {
    check_plot_path(arguments.plot);
  }
  return options;
}

/// Splits "host:port", "[v6]:port" or "[v6%zone]:port" (EndPointAddress::parse's rules).
std::pair<std::string, std::uint16_t> split_host_port(const std::string& text) {
  EndPointAddress address;
  try {
    address = EndPointAddress::parse(text);
  } catch (const InvalidEndpointAddress& error) {
    throw std::invalid_argument(std::string("--connect: ") + error.what());
  }
  if (address.port() == 0) {
    throw std::invalid_argument("--connect: port 0 in '" + text + "' is not a server's port");
  }
  return {address.address(), address.port()};
}

int print_results(const ClientOptions& options, const std::vector<RunResult>& results, const std::string& plot) {
  if (options.json) {
    std::cout << report_json(options, results).dump(2) << std::endl;
  } else {
    print_table(std::cout, options, results);
  }
  bool ok = !results.empty();
  for (const RunResult& result : results) {
    if (!result.all_arrived()) {
      ok = false;
      if (!options.json) {
        std::cerr << fmt::format("netio3-bench: {} run: {}\n", format_size(result.size),
                                 result.error.empty()
                                     ? fmt::format("{} sent, {} received, {} out of sequence", result.sender.messages,
                                                   result.receiver.messages, result.receiver.sequence_errors)
                                     : result.error);
      }
    }
  }
  if (!plot.empty()) {
    try {
      write_plot(plot, options, results);
      if (!options.quiet) {
        std::cerr << "netio3-bench: plot written to " << plot << '\n';
      }
    } catch (const std::runtime_error& error) {
      std::cerr << "netio3-bench: " << error.what() << '\n';
      ok = false;
    }
  }
  return ok ? 0 : 1;
}

/// A server child process started by `run`.
class ServerChild {
public:
  ServerChild(const std::vector<std::string>& arguments) {
    int out[2];
    if (pipe(out) != 0) {
      throw std::runtime_error(std::string("pipe for the server's output failed: ") + std::strerror(errno));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    posix_spawn_file_actions_addclose(&actions, out[1]);
    std::vector<char*> argv;
    for (const std::string& argument : arguments) {
      argv.push_back(const_cast<char*>(argument.c_str()));
    }
    argv.push_back(nullptr);
    // The real path rather than /proc/self/exe, so that ps and perf show the server by its name.
    char self[4096] = {};
    const ssize_t length = readlink("/proc/self/exe", self, sizeof(self) - 1);
    const char* const program = length > 0 ? self : "/proc/self/exe";
    const int error = posix_spawn(&m_pid, program, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    if (error != 0) {
      close(out[0]);
      throw std::runtime_error(std::string("starting the server process failed: ") + std::strerror(error));
    }
    m_output = out[0];
  }
  ServerChild(const ServerChild&) = delete;
  ServerChild& operator=(const ServerChild&) = delete;
  ServerChild(ServerChild&&) = delete;
  ServerChild& operator=(ServerChild&&) = delete;
  ~ServerChild() {
    if (m_pid > 0) {
      kill(m_pid, SIGKILL);
      waitpid(m_pid, nullptr, 0);
    }
    if (m_output >= 0) {
      close(m_output);
    }
  }

  /// Reads the server's "listening on ADDRESS:PORT" line; returns the port.
  std::uint16_t wait_for_port(std::chrono::seconds timeout) {
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (line.find('\n') == std::string::npos) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd descriptor{m_output, POLLIN, 0};
      if (left.count() <= 0 || poll(&descriptor, 1, static_cast<int>(left.count())) <= 0) {
        throw std::runtime_error("the server process did not report its port in time");
      }
      char chunk[256];
      const ssize_t got = read(m_output, chunk, sizeof(chunk));
      if (got <= 0) {
        throw std::runtime_error("the server process exited before listening (see its message above)");
      }
      line.append(chunk, static_cast<std::size_t>(got));
    }
    const std::size_t end = line.find('\n');
    const std::size_t colon = line.rfind(':', end);
    if (line.find("listening on ") == std::string::npos || colon == std::string::npos) {
      throw std::runtime_error("unexpected output from the server process: " + line.substr(0, end));
    }
    return static_cast<std::uint16_t>(std::stoul(line.substr(colon + 1, end - colon - 1)));
  }

  /// Waits for the server to exit by itself (it does when the client disconnects); kills it after
  /// `timeout`. Returns its exit status (or -1 when it had to be killed).
  int wait_exit(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      const pid_t done = waitpid(m_pid, &status, WNOHANG);
      if (done == m_pid) {
        m_pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
    kill(m_pid, SIGTERM);
    waitpid(m_pid, nullptr, 0);
    m_pid = -1;
    return -1;
  }

private:
  pid_t m_pid{-1};
  int m_output{-1};
};

int run_server(const Arguments& arguments) {
  ServerOptions options;
  options.backend = backend_options(arguments);
  options.host = arguments.host;
  options.port = arguments.port;
  options.once = arguments.once;
  options.max_message = parse_size(arguments.max_size);
  options.recv_buffers = arguments.recv_buffers != 0 ? arguments.recv_buffers : 16;
  options.quiet = arguments.quiet;
  Server server(options);
  return server.run();
}

int run_client(const Arguments& arguments) {
  ClientOptions options = client_options(arguments);
  const auto [host, port] = split_host_port(arguments.connect);
  options.server_host = host;
  options.server_port = port;
  Client client(options);
  return print_results(options, client.run_all(), arguments.plot);
}

int run_both(const Arguments& arguments) {
  ClientOptions options = client_options(arguments);
  std::size_t largest = 0;
  for (const std::size_t size : options.sizes) {
    largest = std::max(largest, size);
  }
  if (options.mode == SendMode::Buffered) {
    largest = std::max(largest, options.buffer_size);
  }
  // The receive window (libfabric: posted receives and the sender's credits; asyncmsg ignores it):
  // as wide as the fi_msg_bw-style peer's for a few connections, small for many (memory).
  const std::size_t recv_buffers = arguments.recv_buffers != 0 ? arguments.recv_buffers
                                   : options.connections <= 16 ? 64
                                   : options.connections <= 64 ? 16
                                                               : 4;
  // Several connections need several server addresses (127.0.0.1 + i): listen on all of them.
  const std::string listen_host = options.connections > 1 ? "0.0.0.0" : "127.0.0.1";
  std::vector<std::string> server_arguments{"netio3-bench",   "server",
                                            "--once",         "--quiet",
                                            "--host",         listen_host,
                                            "--port",         "0",
                                            "--backend",      arguments.backend,
                                            "--provider",     arguments.provider,
                                            "--threads",      arguments.threads,
                                            "--receive-poll", std::to_string(arguments.receive_poll_us),
                                            "--max-size",     std::to_string(largest),
                                            "--recv-buffers", std::to_string(recv_buffers)};
  ServerChild server(server_arguments);
  options.server_host = "127.0.0.1";
  options.server_port = server.wait_for_port(std::chrono::seconds{30});
  std::vector<RunResult> results;
  {
    Client client(options);
    results = client.run_all();
  }
  const int server_status = server.wait_exit(std::chrono::seconds{30});
  const int status = print_results(options, results, arguments.plot);
  if (server_status != 0) {
    std::cerr << "netio3-bench: the server process ended with status " << server_status << '\n';
    return 1;
  }
  return status;
}

} // namespace
} // namespace netio3::bench

int main(int argc, char** argv) {
  using namespace netio3::bench;
  // A vanished peer must show up as a closed connection, not kill the benchmark.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{kDescription, "netio3-bench"};
  app.require_subcommand(1);
  app.footer("Run 'netio3-bench ROLE --help' for the options of each role. Exit status: 0 when every message "
             "arrived, 1 otherwise.");
  Arguments arguments;

  CLI::App* run = app.add_subcommand("run", "Start a server child on loopback and run the client against it");
  add_backend_options(*run, arguments);
  add_client_options(*run, arguments);
  run->add_option("--recv-buffers", arguments.recv_buffers,
                  "Receive buffers per accepted connection on the server: the libfabric backend's receive window "
                  "and credits (0: 64 up to 16 connections, 16 up to 64, else 4). Example: --recv-buffers 32");
  add_quiet(*run, arguments);
  run->footer("Example: netio3-bench run --sizes 64,4k,64k,1m --duration 1");

  CLI::App* server = app.add_subcommand("server", "The receiving side: listen, count, echo pings, report back");
  add_backend_options(*server, arguments);
  server
      ->add_option("--host", arguments.host,
                   "Address to listen on: an IPv4 or IPv6 literal or a host name (0.0.0.0 or :: for every interface; "
                   ":: takes IPv4 too where net.ipv6.bindv6only is 0; needed for --connections > 1). Example: "
                   "--host 0.0.0.0")
      ->capture_default_str();
  server->add_option("--port", arguments.port, "Port to listen on (0: any free port, printed). Example: --port 5555")
      ->capture_default_str();
  server->add_flag("--once", arguments.once, "Exit when the first client has disconnected. Example: --once");
  add_server_options(*server, arguments);
  add_quiet(*server, arguments);
  server->footer("Example: netio3-bench server --host 0.0.0.0 --port 5555");

  CLI::App* client = app.add_subcommand("client", "The sending side: connect to a server, run, print the results");
  add_backend_options(*client, arguments);
  client
      ->add_option("--connect", arguments.connect,
                   "The server's HOST:PORT, an IPv6 address in brackets ([::1]:5555, [fe80::1%eth0]:5555); a host name "
                   "is tried at each of its addresses in turn. Example: --connect 127.0.0.1:5555")
      ->required();
  add_client_options(*client, arguments);
  add_quiet(*client, arguments);
  client->footer("Example: netio3-bench client --connect 127.0.0.1:5555 --sizes 64,1m --duration 1");

  pubsub::PubSubCommand pubsub_command;
  CLI::App* pubsub = pubsub_command.add_to(app);

  CLI11_PARSE(app, argc, argv);
  try {
    if (pubsub->parsed()) {
      return pubsub_command.run();
    }
    if (run->parsed()) {
      return run_both(arguments);
    }
    if (server->parsed()) {
      return run_server(arguments);
    }
    return run_client(arguments);
  } catch (const std::exception& error) {
    std::cerr << "netio3-bench: " << error.what() << '\n';
    return 2;
  }
}
