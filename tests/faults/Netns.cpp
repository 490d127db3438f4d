#include "Netns.hpp"

#include <atomic>
#include <csignal>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <sys/wait.h>
#include <unistd.h>

#include "ChildProcess.hpp"

namespace netio3::faults {

namespace {

constexpr const char* name_prefix = "n3f-";
constexpr const char* nft_table = "netio3_faults";

std::string describe(const std::vector<std::string>& argv) {
  std::string text;
  for (const auto& arg : argv) {
    if (!text.empty()) {
      text += ' ';
    }
    text += arg;
  }
  return text;
}

CommandResult run_or_throw(const std::vector<std::string>& argv) {
  auto result = run_command(argv);
  if (!result.ok()) {
    throw std::runtime_error("command failed: " + describe(argv) + ": " +
                             (result.wait_status < 0 ? std::string("could not run or timed out")
                                                     : ChildProcess::describe_status(result.wait_status)) +
                             ": " + result.err);
  }
  return result;
}

std::atomic<unsigned> pair_counter{0};

} // namespace

bool CommandResult::ok() const noexcept {
  return wait_status >= 0 && ChildProcess::exited_cleanly(wait_status);
}

CommandResult run_command(const std::vector<std::string>& argv) {
  CommandResult result;
  try {
    ChildProcess child(argv, {"LC_ALL=C"});
    const auto deadline = Clock::now() + std::chrono::seconds{30};
    while (auto line = child.read_line(deadline)) {
      result.out += *line;
      result.out += '\n';
    }
    const auto status = child.wait_exit(deadline);
    result.wait_status = status.value_or(-1);
    result.err = child.stderr_text();
  } catch (const std::exception& error) {
    result.err = error.what();
  }
  return result;
}

void delete_stale_namespaces() {
  const auto listing = run_command({"ip", "netns", "list"});
  std::istringstream lines(listing.out);
  std::string line;
  while (std::getline(lines, line)) {
    const auto name = line.substr(0, line.find(' '));
    if (name.rfind(name_prefix, 0) != 0) {
      continue;
    }
    const auto pid_text = name.substr(4, name.find('-', 4) - 4);
    pid_t pid = 0;
    try {
      pid = static_cast<pid_t>(std::stol(pid_text));
    } catch (const std::exception&) {
      continue;
    }
    if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) {
      (void)run_command({"ip", "netns", "del", name});
      (void)run_command({"rm", "-rf", "/etc/netns/" + name});
    }
  }
}

std::optional<std::string> NetnsPair::unavailable_reason() {
  static std::once_flag once;
  static std::optional<std::string> reason;
  std::call_once(once, [] {
    if (geteuid() != 0) {
      reason = "needs root to create network namespaces (running as uid " + std::to_string(geteuid()) + ")";
      return;
    }
    if (!run_command({"ip", "-V"}).ok()) {
      reason = "the ip command (iproute2) is missing";
      return;
    }
    if (!run_command({"nft", "--version"}).ok()) {
      reason = "the nft command (nftables) is missing";
      return;
    }
    if (!run_command({"tc", "-V"}).ok()) {
      reason = "the tc command (iproute2) is missing";
      return;
    }
    const std::string probe = std::string(name_prefix) + std::to_string(getpid()) + "-probe";
    const auto created = run_command({"ip", "netns", "add", probe});
    if (!created.ok()) {
      reason = "cannot create a network namespace: " + created.err;
      return;
    }
    (void)run_command({"ip", "netns", "del", probe});
  });
  return reason;
}

std::optional<std::string> NetnsPair::ipv6_unavailable_reason() {
  if (auto reason = unavailable_reason()) {
    return reason;
  }
  if (::access("/proc/sys/net/ipv6", F_OK) != 0) {
    return std::string("this kernel has no IPv6 (/proc/sys/net/ipv6 is missing)");
  }
  return std::nullopt;
}

NetnsPair::NetnsPair(Addressing addressing) {
  delete_stale_namespaces();
  const unsigned index = pair_counter.fetch_add(1);
  const std::string pid = std::to_string(getpid());
  const std::string tag = pid + "-" + std::to_string(index);
  m_name_a = name_prefix + tag + "-a";
  m_name_b = name_prefix + tag + "-b";
  // veth names: at most 15 characters ("n3f" + pid (<= 7 digits) + "x" + index + side).
  m_device_a = "n3f" + pid + "x" + std::to_string(index % 100U) + "a";
  m_device_b = "n3f" + pid + "x" + std::to_string(index % 100U) + "b";
  // Each pair is isolated (its own veth), so concurrent pairs may even share a subnet; the pid
  // and index only make the addresses easy to tell apart in traces.
  const std::string subnet = "10.231." + std::to_string((static_cast<unsigned>(getpid()) + index) % 250U + 1U);
  m_address_a = subnet + ".1";
  m_address_b = subnet + ".2";
  const bool ipv6_only = addressing == Addressing::ipv6_only;
  if (ipv6_only) {
    m_ipv6_prefix = "fd31:231:" + std::to_string((static_cast<unsigned>(getpid()) + index) % 250U + 1U) + "::";
    m_address_a = ipv6_address(Side::a, 1);
    m_address_b = ipv6_address(Side::b, 1);
  }
  try {
    run_or_throw({"ip", "netns", "add", m_name_a});
    run_or_throw({"ip", "netns", "add", m_name_b});
    run_or_throw({"ip", "link", "add", m_device_a, "netns", m_name_a, "type", "veth", "peer", "name", m_device_b,
                  "netns", m_name_b});
    if (ipv6_only) {
      // Our own link-local addresses instead of the generated ones, which would be tentative
      // (duplicate address detection) for a second or more after the link comes up.
      for (const auto side : {Side::a, Side::b}) {
        run_or_throw({"ip", "-n", name(side), "link", "set", "dev", device(side), "addrgenmode", "none"});
        add_address(side, 1);
        run_or_throw({"ip", "-n", name(side), "addr", "add",
                      std::string(side == Side::a ? "fe80::a" : "fe80::b") + "/64", "dev", device(side), "nodad"});
      }
    } else {
      run_or_throw({"ip", "-n", m_name_a, "addr", "add", m_address_a + "/24", "dev", m_device_a});
      run_or_throw({"ip", "-n", m_name_b, "addr", "add", m_address_b + "/24", "dev", m_device_b});
    }
    for (const auto* name : {&m_name_a, &m_name_b}) {
      run_or_throw({"ip", "-n", *name, "link", "set", "lo", "up"});
    }
    run_or_throw({"ip", "-n", m_name_a, "link", "set", m_device_a, "up"});
    run_or_throw({"ip", "-n", m_name_b, "link", "set", m_device_b, "up"});
    for (const auto side : {Side::a, Side::b}) {
      run_in(side, {"nft", "add", "table", "inet", nft_table});
      run_in(side, {"nft", "add", "chain", "inet", nft_table, "loss_out",
                    "{ type filter hook output priority 0; policy accept; }"});
      run_in(side, {"nft", "add", "chain", "inet", nft_table, "cut_out",
                    "{ type filter hook output priority 1; policy accept; }"});
      run_in(side, {"nft", "add", "chain", "inet", nft_table, "cut_in",
                    "{ type filter hook input priority 1; policy accept; }"});
    }
  } catch (...) {
    destroy();
    throw;
  }
}

NetnsPair::~NetnsPair() {
  destroy();
}

void NetnsPair::destroy() noexcept {
  for (const auto* name : {&m_name_a, &m_name_b}) {
    if (!name->empty()) {
      (void)run_command({"ip", "netns", "del", *name});
      (void)run_command({"rm", "-rf", "/etc/netns/" + *name});
    }
  }
}

std::string NetnsPair::link_local(Side target, Side from) const {
  return std::string(target == Side::a ? "fe80::a" : "fe80::b") + "%" + device(from);
}

std::string NetnsPair::ipv6_address(Side side, unsigned index) const {
  // A: ::1, ::11, ::21, ...; B: ::2, ::12, ::22, ... (index 1 is the pair's main address).
  return m_ipv6_prefix + std::to_string((index - 1) * 10 + (side == Side::a ? 1 : 2));
}

void NetnsPair::add_address(Side side, unsigned index) const {
  run_or_throw(
      {"ip", "-n", name(side), "addr", "add", ipv6_address(side, index) + "/64", "dev", device(side), "nodad"});
}

void NetnsPair::set_hosts(Side side, const std::string& content) const {
  const std::string folder = "/etc/netns/" + name(side);
  run_or_throw({"mkdir", "-p", folder});
  // Through a shell so that the content needs no temporary file of ours; printf keeps it as is.
  run_or_throw({"sh", "-c", "printf '%s' \"$1\" > \"$2\"", "sh", content, folder + "/hosts"});
}

void NetnsPair::refuse_incoming_connections(Side side) const {
  run_in(side, {"nft", "add", "rule", "inet", nft_table, "cut_in", "tcp", "flags", "&", "(syn|ack)", "==", "syn",
                "counter", "drop"});
}

std::vector<std::string> NetnsPair::exec_prefix(Side side) const {
  return {"ip", "netns", "exec", name(side)};
}

std::string NetnsPair::run_in(Side side, const std::vector<std::string>& command) const {
  auto argv = exec_prefix(side);
  argv.insert(argv.end(), command.begin(), command.end());
  return run_or_throw(argv).out;
}

void NetnsPair::add_random_loss(Side side, unsigned percent) const {
  run_in(side, {"nft", "add", "rule", "inet", nft_table, "loss_out", "numgen", "random", "mod", "100", "<",
                std::to_string(percent), "counter", "drop"});
}

void NetnsPair::use_wire_sized_packets(Side side) const {
  run_or_throw({"ip", "-n", name(side), "link", "set", "dev", device(side), "gso_max_size", "1500"});
}

void NetnsPair::cut(Side side) const {
  run_in(side, {"nft", "add", "rule", "inet", nft_table, "cut_out", "counter", "drop"});
  run_in(side, {"nft", "add", "rule", "inet", nft_table, "cut_in", "counter", "drop"});
}

void NetnsPair::heal(Side side) const {
  run_in(side, {"nft", "flush", "chain", "inet", nft_table, "cut_out"});
  run_in(side, {"nft", "flush", "chain", "inet", nft_table, "cut_in"});
}

void NetnsPair::limit_rate(Side side, const std::string& rate, const std::string& burst) const {
  run_in(side,
         {"tc", "qdisc", "add", "dev", device(side), "root", "tbf", "rate", rate, "burst", burst, "latency", "50ms"});
}

std::uint64_t NetnsPair::dropped_packets(Side side) const {
  const auto listing = run_in(side, {"nft", "list", "table", "inet", nft_table});
  std::uint64_t total = 0;
  std::size_t pos = 0;
  const std::string marker = "counter packets ";
  while ((pos = listing.find(marker, pos)) != std::string::npos) {
    pos += marker.size();
    total += std::stoull(listing.substr(pos, listing.find(' ', pos) - pos));
  }
  return total;
}

} // namespace netio3::faults
