#pragma once

/// @file
/// Two "hosts" on one machine for the fault tests: a pair of network namespaces joined by a veth
/// pair, with 10.231.X.1/24 on side A and 10.231.X.2/24 on side B (addresses that exist only inside
/// the namespaces), or, IPv6 only, fd31:231:X::1/64 and fd31:231:X::2/64 plus the link-local
/// fe80::a and fe80::b (all without duplicate address detection, so usable at once; no IPv4 on the
/// veth, only 127.0.0.1 on each loopback). Faults are injected inside a namespace with nftables (loss, cut) and tc
/// (rate limit). Needs root, iproute2, nftables.
///
/// Namespace names carry the creating process id ("n3f-PID-N-a"); the destructor deletes both
/// namespaces (which removes the veth pair and every rule), and each new pair first deletes
/// leftovers of processes that no longer exist (a test killed by a ctest timeout cannot clean up).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace netio3::faults {

/// Result of a helper command.
struct CommandResult {
  int wait_status{-1}; ///< Raw wait status (-1: could not run or timed out).
  std::string out;     ///< Its stdout.
  std::string err;     ///< Its stderr.
  [[nodiscard]] bool ok() const noexcept;
};

/// Runs `argv` to completion (at most 30 s) and returns its status and output.
CommandResult run_command(const std::vector<std::string>& argv);

/// Deletes namespaces named "n3f-PID-..." whose PID no longer runs (leftovers of killed tests).
void delete_stale_namespaces();

/// A pair of namespaces joined by a veth pair; see the file comment.
class NetnsPair {
public:
  enum class Side { a, b };
  /// How the veth pair is addressed (see the file comment).
  enum class Addressing { ipv4, ipv6_only };

  /// Why namespaces cannot be used here (not root, a tool missing, namespace creation refused), or
  /// nullopt when they can. Probes once per process.
  [[nodiscard]] static std::optional<std::string> unavailable_reason();

  /// Why IPv6 namespaces cannot be used here (those of unavailable_reason, or a kernel without
  /// IPv6), or nullopt when they can.
  [[nodiscard]] static std::optional<std::string> ipv6_unavailable_reason();

  /// Creates the namespaces, the veth pair, addresses and routes; loopback up in both.
  /// Throws std::runtime_error with the failing command and its stderr (after cleaning up).
  explicit NetnsPair(Addressing addressing = Addressing::ipv4);
  NetnsPair(const NetnsPair&) = delete;
  NetnsPair& operator=(const NetnsPair&) = delete;
  NetnsPair(NetnsPair&&) = delete;
  NetnsPair& operator=(NetnsPair&&) = delete;
  /// Deletes both namespaces (and with them the veth pair and all rules).
  ~NetnsPair();

  [[nodiscard]] const std::string& name(Side side) const noexcept { return side == Side::a ? m_name_a : m_name_b; }
  [[nodiscard]] const std::string& address(Side side) const noexcept {
    return side == Side::a ? m_address_a : m_address_b;
  }
  [[nodiscard]] const std::string& device(Side side) const noexcept {
    return side == Side::a ? m_device_a : m_device_b;
  }
  /// IPv6-only pairs: the link-local address of `target` as `from` writes it, with `from`'s
  /// interface as zone ("fe80::b%n3f123x0a").
  [[nodiscard]] std::string link_local(Side target, Side from) const;
  /// IPv6-only pairs: the global address `index` of `side` (1: address(side); more with
  /// add_address).
  [[nodiscard]] std::string ipv6_address(Side side, unsigned index) const;
  /// Adds ipv6_address(side, index) to `side`'s veth (nodad: usable at once).
  void add_address(Side side, unsigned index) const;
  /// Gives `side` its own /etc/hosts (`ip netns exec` mounts /etc/netns/NAME/hosts over it), so
  /// that host names resolve there as the test wants. Removed with the namespace.
  void set_hosts(Side side, const std::string& content) const;
  /// Makes `side` drop every incoming TCP connection request (SYN without ACK): connections it
  /// opens still work, connections to it never get an answer. Lifted by heal.
  void refuse_incoming_connections(Side side) const;

  /// {"ip", "netns", "exec", NAME}: prefix a command line with it to run it inside `side`.
  [[nodiscard]] std::vector<std::string> exec_prefix(Side side) const;

  /// Runs `command` inside `side`; throws std::runtime_error with its stderr when it fails.
  std::string run_in(Side side, const std::vector<std::string>& command) const;

  /// Drops `percent` % of the packets leaving `side`, at random (nftables numgen), counted.
  void add_random_loss(Side side, unsigned percent) const;
  /// Makes TCP build packets of at most one MTU on `side` (gso_max_size 1500), so that the loss
  /// rule drops wire-sized packets rather than 64 KiB segmentation-offload super-packets.
  void use_wire_sized_packets(Side side) const;
  /// Drops every packet entering or leaving `side` (the link is cut, silently).
  void cut(Side side) const;
  /// Removes the rules of `cut`.
  void heal(Side side) const;
  /// Limits the rate of the packets leaving `side` with a token bucket (tc tbf), e.g. "20mbit";
  /// `burst` must hold at least one timer tick's worth of bytes at that rate (tc syntax, "64kb").
  void limit_rate(Side side, const std::string& rate, const std::string& burst = "64kb") const;
  /// Packets dropped so far by the loss and cut rules of `side` (nftables counters).
  [[nodiscard]] std::uint64_t dropped_packets(Side side) const;

private:
  void destroy() noexcept;

  std::string m_name_a;
  std::string m_name_b;
  std::string m_device_a;
  std::string m_device_b;
  std::string m_address_a;
  std::string m_address_b;
  std::string m_ipv6_prefix; ///< "fd31:231:X::" (IPv6-only pairs)
};

} // namespace netio3::faults
