#pragma once

/// @file
/// Shared pieces of the conformance suite and its peer program: which backends exist, the test
/// environment (scale, address, deadlines), the self-checking message format, and small
/// process-level helpers. Nothing here depends on GoogleTest.

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "netio3/Netio3Backend.hpp"

namespace netio3::conformance {

/// One backend (with its provider) that the suite is instantiated for.
struct BackendUnderTest {
  /// Readable name, used in test names and in `NETIO3_CONFORMANCE_BACKENDS`.
  std::string name;
  NetworkType type{NetworkType::ASYNCMSG};
  NetworkMode mode{NetworkMode::TCP};
  /// libfabric provider ("" for the TCP backend).
  std::string provider;
  /// Message and connection counts are divided by this: libfabric's legacy `sockets` provider
  /// moves messages several times slower than the others and runs threads per backend.
  std::size_t slowness{1};
};

/// Prints the name (GoogleTest uses it in failure messages).
std::ostream& operator<<(std::ostream& out, const BackendUnderTest& backend);

/// Every backend the suite knows: asyncmsg, libfabric_tcp, libfabric_sockets, libfabric_verbs.
[[nodiscard]] const std::vector<BackendUnderTest>& all_backends();

/// The backends named in `NETIO3_CONFORMANCE_BACKENDS` (comma-separated), or all but
/// `libfabric_verbs` when it is unset. An unknown name ends the process with a message listing the
/// known ones (a typo must not silently run nothing).
[[nodiscard]] std::vector<BackendUnderTest> selected_backends();

/// The backend called `name`; ends the process with a message when there is none.
[[nodiscard]] const BackendUnderTest& backend_by_name(std::string_view name);

/// Settings read once from the environment.
struct TestEnvironment {
  /// `NETIO3_TEST_SCALE=small`: sizes and counts scaled down (slow VM), deadlines longer.
  bool small_scale{false};
  /// `NETIO3_TEST_ADDRESS` (default 127.0.0.1): where listeners listen and senders connect.
  std::string address{"127.0.0.1"};
  /// How long any single wait for a condition may take before the test fails (not a timing
  /// assertion: only a guard against hangs).
  std::chrono::milliseconds deadline{std::chrono::seconds{30}};
  /// True when the address is in 127.0.0.0/8, so that 127.0.0.x aliases reach a listener on 0.0.0.0.
  bool loopback{true};
};

/// The environment of this process (parsed on first use).
[[nodiscard]] const TestEnvironment& test_environment();

/// True in builds with the address or thread sanitizer (counts are scaled down there too).
[[nodiscard]] bool sanitized_build() noexcept;

/// `normal` scaled for the environment: divided for `NETIO3_TEST_SCALE=small` and for sanitizer
/// builds, never below `minimum`.
[[nodiscard]] std::size_t scaled(std::size_t normal, std::size_t minimum = 1);

/// A point in time one deadline from now.
[[nodiscard]] std::chrono::steady_clock::time_point deadline_from_now();

/// Sets what the process needs before any backend initialises: `FI_SOCKETS_PE_WAITTIME=0` (the
/// libfabric sockets provider's progress thread otherwise spins 10 ms per wake-up) and the soft
/// file-descriptor limit raised to the hard one (hundreds of connections). Idempotent; called from
/// a static initialiser of the support library, so it runs before `main`.
void prepare_process_environment();

// --- the self-checking message format ------------------------------------------------------------

/// Every test message is `header_data` (16 bytes: stream, payload size, sequence number, in host
/// byte order) followed by a payload whose bytes are a function of (stream, sequence, position), so
/// that the receiver can check each message on its own: its length, every byte, and its place in
/// its stream.
inline constexpr std::size_t message_header_size = 16;

/// The 16-byte header of message `seq` of `stream` with `payload_size` payload bytes.
[[nodiscard]] std::array<std::uint8_t, message_header_size> make_message_header(std::uint32_t stream, std::uint64_t seq,
                                                                                std::size_t payload_size);

/// Fills `payload` with the pattern of message (`stream`, `seq`), starting at payload byte
/// `first_index` (to write a piece of a payload).
void fill_payload(std::span<std::uint8_t> payload, std::uint32_t stream, std::uint64_t seq,
                  std::size_t first_index = 0) noexcept;

/// Byte `index` of the payload of message (`stream`, `seq`).
[[nodiscard]] std::uint8_t payload_byte(std::uint32_t stream, std::uint64_t seq, std::size_t index) noexcept;

/// The parts of a received message.
struct DecodedMessage {
  std::uint32_t stream{0};
  std::uint64_t seq{0};
  std::size_t payload_size{0};
};

/// Checks a received message (header followed by payload). Returns an empty string when it is
/// intact (and fills `decoded`), else what is wrong with it.
[[nodiscard]] std::string check_message(std::span<const std::uint8_t> message, DecodedMessage& decoded);

/// A whole expected message (header followed by payload), for tests that compare byte for byte.
[[nodiscard]] std::vector<std::uint8_t> make_message(std::uint32_t stream, std::uint64_t seq, std::size_t payload_size,
                                                     bool with_header);

/// The key that the tests give to send (`stream`, `seq`): unique per stream and sequence number.
[[nodiscard]] constexpr std::uint64_t message_key(std::uint32_t stream, std::uint64_t seq) noexcept {
  return (static_cast<std::uint64_t>(stream) << 40U) | seq;
}

/// Whether libfabric offers `provider` with `FI_EP_MSG` endpoints on `address` (asked with
/// `fi_getinfo`, the way an application would); nothing when the suite was built without libfabric.
[[nodiscard]] std::optional<bool> libfabric_provider_available(const std::string& provider, const std::string& address);

/// Why `backend` cannot run here, for a skip: not in this build (`NetworkBackend::create` throws
/// `UnsupportedConfiguration`) or its libfabric provider is missing (`fi_getinfo` says so).
/// Nothing when it is available: a probe backend opened a listen endpoint on the test address.
/// @throws std::runtime_error when it should run but does not (a failure, not a skip): the TCP
///         backend is missing, or a provider that libfabric offers fails to listen.
[[nodiscard]] std::optional<std::string> backend_unavailable(const BackendUnderTest& backend);

// --- process helpers -----------------------------------------------------------------------------

/// Resident set size of this process in bytes (from /proc/self/statm).
[[nodiscard]] std::size_t resident_bytes();

/// A TCP socket bound to `address` on a free port without listening, so that connecting to that
/// port is refused (and no other test can take the port meanwhile). Closes the socket on
/// destruction.
class BoundPortWithoutListener {
public:
  /// @throws std::runtime_error if the socket cannot be created or bound (errno text in the message)
  explicit BoundPortWithoutListener(const std::string& address);
  ~BoundPortWithoutListener();
  BoundPortWithoutListener(const BoundPortWithoutListener&) = delete;
  BoundPortWithoutListener& operator=(const BoundPortWithoutListener&) = delete;
  BoundPortWithoutListener(BoundPortWithoutListener&&) = delete;
  BoundPortWithoutListener& operator=(BoundPortWithoutListener&&) = delete;

  /// The bound port.
  [[nodiscard]] std::uint16_t port() const noexcept { return m_port; }

private:
  int m_fd{-1};
  std::uint16_t m_port{0};
};

/// Ends the process with a message (and exit code 3) if it is not destroyed within `limit`: a hung
/// backend (or a crash handler that deadlocks, as libfabric's psm library installs) must not stall
/// a whole CI run until ctest's timeout.
class Watchdog {
public:
  Watchdog(std::chrono::milliseconds limit, std::string what);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  Watchdog(Watchdog&&) = delete;
  Watchdog& operator=(Watchdog&&) = delete;

private:
  std::mutex m_mutex;
  std::condition_variable m_done_changed;
  bool m_done{false};
  std::thread m_thread;
};

/// Memory aligned to a page, for zero-copy regions (RDMA registers whole pages). Zero-filled.
class AlignedMemory {
public:
  explicit AlignedMemory(std::size_t size);
  ~AlignedMemory();
  AlignedMemory(const AlignedMemory&) = delete;
  AlignedMemory& operator=(const AlignedMemory&) = delete;
  AlignedMemory(AlignedMemory&&) = delete;
  AlignedMemory& operator=(AlignedMemory&&) = delete;

  [[nodiscard]] std::span<std::uint8_t> span() noexcept { return {m_data, m_size}; }
  [[nodiscard]] std::uint8_t* data() noexcept { return m_data; }
  [[nodiscard]] std::size_t size() const noexcept { return m_size; }

private:
  std::uint8_t* m_data{nullptr};
  std::size_t m_size{0};
};

} // namespace netio3::conformance
