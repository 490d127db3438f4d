// The other side of the conformance suite's multi-process tests (started by the tests, not by
// hand). It runs one backend in one role and talks to the test through its standard output, one
// line per event:
//
//   --role recv: listens on --address port 0, prints "READY <port>", checks every message of
//                stream --stream (order, length, every byte), prints "RECEIVED <n>" once n reaches
//                --report-after, and after --count messages and the sender's close prints
//                "DONE <messages> <problems>" (exit 0 when there were none). --count 0: receives
//                until killed.
//   --role send: connects to --address:--port, prints "CONNECTED", sends --count messages of
//                stream --stream in every send mode (sizes up to --max-payload), prints
//                "SENT <n>" once n reaches --report-after, closes, prints "DONE <messages>".
//                --count 0: sends until killed.
//
// Errors go to standard error with a non-zero exit code.

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <string>
#include <sys/prctl.h>
#include <unistd.h>

#include "conformance/Node.hpp"
#include "conformance/Support.hpp"
#include "conformance/Traffic.hpp"

namespace netio3::conformance {
namespace {

struct PeerOptions {
  std::string backend{"asyncmsg"};
  std::string role;
  std::string address{"127.0.0.1"};
  std::uint16_t port{0};
  std::uint64_t count{0};
  std::uint32_t stream{1};
  std::size_t max_payload{16U << 10U};
  std::uint64_t report_after{0};
};

void say(const std::string& line) {
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
}

[[noreturn]] void fail(int code, const std::string& message) {
  std::fprintf(stderr, "conformance peer: %s\n", message.c_str());
  std::exit(code);
}

PeerOptions parse(int argc, char** argv) {
  std::map<std::string, std::string> values;
  for (int i = 1; i + 1 < argc; i += 2) {
    values[argv[i]] = argv[i + 1];
  }
  if (argc % 2 == 0) {
    fail(2, std::string{"option without a value: "} + argv[argc - 1]);
  }
  PeerOptions options;
  for (const auto& [name, value] : values) {
    if (name == "--backend") {
      options.backend = value;
    } else if (name == "--role") {
      options.role = value;
    } else if (name == "--address") {
      options.address = value;
    } else if (name == "--port") {
      options.port = static_cast<std::uint16_t>(std::stoul(value));
    } else if (name == "--count") {
      options.count = std::stoull(value);
    } else if (name == "--stream") {
      options.stream = static_cast<std::uint32_t>(std::stoul(value));
    } else if (name == "--max-payload") {
      options.max_payload = std::stoull(value);
    } else if (name == "--report-after") {
      options.report_after = std::stoull(value);
    } else {
      fail(2, "unknown option " + name);
    }
  }
  if (options.role != "recv" && options.role != "send") {
    fail(2, "--role must be recv or send");
  }
  return options;
}

int check_contract(Node& node) {
  if (node.recorder().violation_count() != 0) {
    std::fprintf(stderr, "conformance peer: callback contract violations:\n%s",
                 node.recorder().violations_text().c_str());
    return 1;
  }
  return 0;
}

int run_receiver(const BackendUnderTest& backend, const PeerOptions& options) {
  Node node{backend};
  ConnectionParametersRecv params;
  params.buf_size = options.max_payload + message_header_size;
  params.num_buf = 16;
  const EndPointAddress listening = node.backend().open_listen_endpoint(EndPointAddress{options.address, 0}, params);
  say("READY " + std::to_string(listening.port()));

  const auto deadline = std::chrono::steady_clock::now() + test_environment().deadline * (options.count == 0 ? 10 : 2);
  bool reported = options.report_after == 0;
  for (;;) {
    const auto [progress, closed] = node.recorder().inspect([&](const RecorderState& s) {
      return std::pair{s.stream_progress(options.stream), s.closed.size()};
    });
    if (!reported && progress >= options.report_after) {
      say("RECEIVED " + std::to_string(progress));
      reported = true;
    }
    if (options.count != 0 && progress >= options.count && closed > 0) {
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      fail(3, "receiver: deadline passed with " + std::to_string(progress) + " messages in order, " +
                  std::to_string(closed) + " closes; data errors:\n" + node.recorder().data_errors_text());
    }
    node.recorder().wait_for_progress(std::chrono::milliseconds{100});
  }
  const std::size_t problems = node.recorder().data_error_count() + node.recorder().violation_count();
  const std::size_t messages = node.recorder().inspect([](const RecorderState& s) { return s.messages; });
  if (node.recorder().data_error_count() != 0) {
    std::fprintf(stderr, "conformance peer: data errors:\n%s", node.recorder().data_errors_text().c_str());
  }
  say("DONE " + std::to_string(messages) + " " + std::to_string(problems));
  return problems == 0 && messages == options.count ? check_contract(node) : 1;
}

int run_sender(const BackendUnderTest& backend, const PeerOptions& options) {
  // The zero-copy region outlives the backend, which may read it until it is destroyed.
  AlignedMemory region{64 * options.max_payload};
  Node node{backend};
  const EndPointAddress destination{options.address, options.port};
  ConnectionParameters params;
  params.buf_size = options.max_payload + message_header_size;
  params.num_buf = 8;
  params.mr_start = region.data();
  params.mr_size = region.size();
  if (!node.connect(destination, params)) {
    fail(5, "sender: no connection to " + destination.to_string());
  }
  say("CONNECTED");
  StreamSender stream{node, destination, options.stream, region.span(), options.max_payload};
  for (std::uint64_t seq = 0; options.count == 0 || seq < options.count; ++seq) {
    const SendMode mode = all_send_modes[seq % all_send_modes.size()];
    const std::size_t size = seq % 50 == 0 ? options.max_payload : (seq * 7919U) % (options.max_payload + 1);
    const NetioStatus status = stream.send(mode, size);
    if (status != NetioStatus::OK) {
      fail(6, "sender: " + std::string{to_string(mode)} + " message " + std::to_string(seq) + " returned " +
                  std::string{to_string(status)});
    }
    if (options.report_after != 0 && seq + 1 == options.report_after) {
      say("SENT " + std::to_string(seq + 1));
    }
  }
  if (!node.recorder().wait([&](const RecorderState& s) { return keys_reported(s) >= stream.keyed_sends(); })) {
    fail(7, "sender: not every send key was reported");
  }
  node.backend().close_send_endpoint(destination);
  if (!node.wait_closed(destination)) {
    fail(8, "sender: no on_connection_closed_cb after close_send_endpoint");
  }
  const auto problems = node.recorder().inspect(
      [&](const RecorderState& s) { return key_problems(s, stream.zero_copy_keys(), stream.copy_keys(), false); });
  if (!problems.empty()) {
    fail(9, "sender: key problems:\n" + join_lines(problems));
  }
  say("DONE " + std::to_string(stream.sent()));
  return check_contract(node);
}

} // namespace
} // namespace netio3::conformance

int main(int argc, char** argv) {
  using namespace netio3::conformance;
  // Die with the test process, also when it is killed or ends without stopping this peer.
  const pid_t parent = ::getppid();
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) {
    return 10; // the parent was already gone
  }
  prepare_process_environment();
  const PeerOptions options = parse(argc, argv);
  try {
    const BackendUnderTest& backend = backend_by_name(options.backend);
    return options.role == "recv" ? run_receiver(backend, options) : run_sender(backend, options);
  } catch (const std::exception& error) {
    fail(4, std::string{options.role} + ": " + error.what());
  }
}
