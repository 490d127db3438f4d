#pragma once

/// @file
/// A plain TCP client socket for bad-input and admission tests: connects (optionally from a chosen
/// local address), writes arbitrary bytes, and tells whether and how the other side closed.

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "netio3/EndPointAddress.hpp"

namespace netio3::faults {

/// See the file comment. Blocking socket with deadlines (poll); closed by the destructor.
class RawSocket {
public:
  /// How a wait for the peer's close ended.
  enum class Outcome {
    eof,       ///< The peer closed (read returned 0).
    reset,     ///< The peer reset the connection (ECONNRESET/EPIPE).
    still_open ///< The deadline passed with the connection open.
  };

  /// Connects to `target` (IPv4 or IPv6 literal), from `local_address` if not empty. Throws
  /// std::runtime_error naming the address and errno text when the connect fails.
  explicit RawSocket(const EndPointAddress& target, const std::string& local_address = {});
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;
  RawSocket(RawSocket&& other) noexcept;
  RawSocket& operator=(RawSocket&& other) noexcept;
  ~RawSocket();

  /// Writes all of `bytes`; false when the peer has closed (EPIPE/ECONNRESET) or the socket buffer
  /// stays full past `timeout`.
  bool write_all(std::span<const std::uint8_t> bytes, std::chrono::milliseconds timeout = std::chrono::seconds{10});
  /// Reads exactly `count` bytes, or nullopt on close, error or deadline.
  std::optional<std::vector<std::uint8_t>> read_exact(std::size_t count, std::chrono::milliseconds timeout);
  /// Reads and discards until the peer closes or `timeout` passes.
  Outcome wait_closed(std::chrono::milliseconds timeout);
  /// Half-closes: no more bytes from us (the peer reads EOF).
  void shutdown_write() noexcept;
  /// Our local port (as the listener sees us).
  [[nodiscard]] std::uint16_t local_port() const noexcept;
  /// The file descriptor.
  [[nodiscard]] int fd() const noexcept { return m_fd; }

private:
  int m_fd{-1};
};

/// "eof" / "reset" / "still open".
[[nodiscard]] const char* to_string(RawSocket::Outcome outcome) noexcept;

} // namespace netio3::faults
