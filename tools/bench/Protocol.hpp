#pragma once

// The benchmark's own message format, carried inside netio3 messages.
//
// Every benchmark message starts with a 16-byte `WireHeader`. Data messages are exactly the run's
// message size (header included), so "64-byte messages" are 64 bytes on the netio3 API, the same
// payload a peer program sends. In buffered mode one netio3 message (one buffer) carries many
// benchmark messages back to back. Control messages (hello, ready, end, result) travel alone.
// Integers are in host byte order: both ends run the same binary on machines of one kind.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace netio3::bench {

/// Marks a benchmark message; anything else on the wire is counted as an error.
inline constexpr std::uint16_t kWireMagic = 0x4e33;

/// What a benchmark message is.
enum class MessageKind : std::uint8_t {
  Hello = 1,  ///< client -> server, on every data connection before a run: the run's parameters.
  Ready = 2,  ///< server -> client, on the reply connection: every hello of the run arrived.
  Data = 3,   ///< client -> server: one counted message of the run's size.
  End = 4,    ///< client -> server, on every data connection after a run: how many were sent.
  Ping = 5,   ///< latency test: client -> server, echoed back unchanged on the reply connection.
  Result = 6, ///< server -> client: the receiver's figures of the run, as JSON text.
};

/// The first 16 bytes of every benchmark message.
struct WireHeader {
  std::uint16_t magic{kWireMagic};
  MessageKind kind{MessageKind::Data};
  std::uint8_t reserved{0};
  std::uint32_t connection{0}; ///< Index of the client's data connection (0 .. connections-1).
  std::uint64_t sequence{0};   ///< Per connection, from 0, for data and ping messages.
};
static_assert(sizeof(WireHeader) == 16);

/// The smallest message size the benchmark can send (its header).
inline constexpr std::size_t kMinMessageSize = sizeof(WireHeader);

/// Which measurement a run makes.
enum class TestKind : std::uint8_t { Throughput = 0, Latency = 1 };
/// How the client hands messages to netio3.
enum class SendMode : std::uint8_t { Copy = 0, ZeroCopy = 1, Buffered = 2 };

/// Body of a hello: what the receiver needs to know about the run.
struct HelloBody {
  std::uint32_t run_id{0};
  std::uint32_t connections{1};
  std::uint64_t message_size{0};
  std::uint64_t expected_messages{0}; ///< Total over all connections; 0 in duration mode.
  double duration_s{0.0};             ///< Duration mode: how long the client sends.
  double warmup_fraction{0.1};        ///< Share of the run excluded from allocation counting.
  std::uint16_t reply_port{0};        ///< The client's listen port for ready, pong and result.
  TestKind test{TestKind::Throughput};
  SendMode mode{SendMode::Copy};
  std::uint32_t reserved{0};
};

/// Body of an end message.
struct EndBody {
  std::uint32_t run_id{0};
  std::uint32_t reserved{0};
  std::uint64_t sent_messages{0}; ///< Data (or ping) messages sent on this connection in the run.
};

/// Body of a ready message.
struct ReadyBody {
  std::uint32_t run_id{0};
  std::uint32_t reserved{0};
};

inline constexpr std::size_t kHelloMessageSize = sizeof(WireHeader) + sizeof(HelloBody);
inline constexpr std::size_t kEndMessageSize = sizeof(WireHeader) + sizeof(EndBody);
inline constexpr std::size_t kReadyMessageSize = sizeof(WireHeader) + sizeof(ReadyBody);

/// Reads a header from possibly unaligned bytes (the caller checked that 16 bytes are there).
[[nodiscard]] inline WireHeader read_header(const std::uint8_t* bytes) noexcept {
  WireHeader header;
  std::memcpy(&header, bytes, sizeof(header));
  return header;
}

/// Reads a trivially copyable body that follows the header; false when the message is too short.
template <typename Body>
[[nodiscard]] bool read_body(std::span<const std::uint8_t> message, Body& body) noexcept {
  if (message.size() < sizeof(WireHeader) + sizeof(Body)) {
    return false;
  }
  std::memcpy(&body, message.data() + sizeof(WireHeader), sizeof(Body));
  return true;
}

/// Writes header and body into `out` (which must hold both); returns the bytes written.
template <typename Body>
std::size_t write_message(std::uint8_t* out, const WireHeader& header, const Body& body) noexcept {
  std::memcpy(out, &header, sizeof(header));
  std::memcpy(out + sizeof(header), &body, sizeof(body));
  return sizeof(header) + sizeof(body);
}

} // namespace netio3::bench
