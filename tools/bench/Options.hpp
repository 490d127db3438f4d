#pragma once

// Everything netio3-bench can be told on its command line, and the helpers that turn option text
// into values and back.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "Protocol.hpp"
#include "netio3/NetworkConfig.hpp"
#include "netio3/Types.hpp"

namespace netio3::bench {

/// Which backend, provider and thread-safety model a process uses.
struct BackendOptions {
  NetworkType backend{NetworkType::ASYNCMSG};
  std::string provider{"tcp"}; ///< libfabric only: tcp, sockets or verbs.
  ThreadSafetyModel threads{ThreadSafetyModel::UNSAFE};
  std::chrono::microseconds receive_poll{NetworkConfig{}.receive_poll}; ///< libfabric only.
};

/// The NetworkConfig both roles start from: backend, provider, threads, receive_poll.
[[nodiscard]] NetworkConfig make_config(const BackendOptions& backend);

/// Options of the `server` role.
struct ServerOptions {
  BackendOptions backend;
  std::string host{"127.0.0.1"};
  std::uint16_t port{0};
  bool once{false};                               ///< Exit after the first client has disconnected.
  std::size_t max_message{std::size_t{1} << 20U}; ///< Largest message accepted per connection.
  std::size_t recv_buffers{16};                   ///< Receive buffers per accepted connection.
  bool quiet{false};
};

/// Options of the `client` role (and the client half of `run`).
struct ClientOptions {
  BackendOptions backend;
  std::string server_host{"127.0.0.1"};
  std::uint16_t server_port{0};
  TestKind test{TestKind::Throughput};
  SendMode mode{SendMode::Copy};
  std::vector<std::size_t> sizes{64};
  std::optional<std::uint64_t> messages; ///< Total per size (over all connections); unset: duration.
  double duration_s{2.0};
  std::size_t connections{1};
  std::size_t buffer_size{std::size_t{64} << 10U}; ///< Buffered mode: bytes per buffer.
  std::size_t buffers{64};                         ///< Buffered mode: buffers per send endpoint.
  double warmup_fraction{0.1};
  std::size_t max_unsent_bytes{std::size_t{8} << 20U}; ///< NetworkConfig::max_unsent_bytes.
  bool json{false};
  bool quiet{false};
};

/// Parses "64", "4k", "64KiB", "1m", "1MiB", "2g" (binary multiples). Throws std::invalid_argument.
[[nodiscard]] std::size_t parse_size(std::string_view text);
/// Parses a comma-separated list of sizes.
[[nodiscard]] std::vector<std::size_t> parse_sizes(std::string_view text);
/// "64 B", "4 KiB", "1 MiB" when exact, otherwise bytes.
[[nodiscard]] std::string format_size(std::size_t bytes);

[[nodiscard]] std::string_view to_string(TestKind test) noexcept;
[[nodiscard]] std::string_view to_string(SendMode mode) noexcept;
/// "asyncmsg" or "libfabric".
[[nodiscard]] std::string_view backend_name(NetworkType type) noexcept;
/// "safe" or "unsafe".
[[nodiscard]] std::string_view threads_name(ThreadSafetyModel model) noexcept;

} // namespace netio3::bench
