#pragma once

// The subscription protocol between NetioSubscriber and NetioPublisher (private; docs/frontend.md):
// one JSON object per line over a TCP control connection. These are pure functions: the parser
// takes untrusted input and never throws on it, and it bounds what it accepts.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace netio3::detail::subscription {

/// The protocol version carried by `Hello`; a publisher refuses any other.
constexpr std::uint64_t protocol_version{1};
/// The longest line either side accepts (without its newline); a longer one ends the connection.
constexpr std::size_t max_line_size{4096};
/// The longest reason text a reply may carry.
constexpr std::size_t max_reason_size{1024};

// Subscriber -> publisher.
/// The first request: where the publisher opens the data connection, and the largest message
/// the subscriber's data listener accepts.
struct Hello {
  std::string data_host;
  std::uint16_t data_port{0};
  std::uint64_t receive_limit{0};
  friend bool operator==(const Hello&, const Hello&) = default;
};
struct Subscribe {
  std::uint64_t tag{0};
  friend bool operator==(const Subscribe&, const Subscribe&) = default;
};
struct Unsubscribe {
  std::uint64_t tag{0};
  friend bool operator==(const Unsubscribe&, const Unsubscribe&) = default;
};
using Request = std::variant<Hello, Subscribe, Unsubscribe>;

// Publisher -> subscriber.
struct Subscribed {
  std::uint64_t tag{0};
  friend bool operator==(const Subscribed&, const Subscribed&) = default;
};
struct Unsubscribed {
  std::uint64_t tag{0};
  friend bool operator==(const Unsubscribed&, const Unsubscribed&) = default;
};
/// One subscription refused; the connection goes on.
struct Refused {
  std::uint64_t tag{0};
  std::string reason;
  friend bool operator==(const Refused&, const Refused&) = default;
};
/// The publisher ends the connection after this.
struct Error {
  std::string reason;
  friend bool operator==(const Error&, const Error&) = default;
};
using Reply = std::variant<Subscribed, Unsubscribed, Refused, Error>;

/// A parsed line: the message, or why the line is not one.
template <typename Message>
struct Parsed {
  std::optional<Message> message;
  std::string error;
};

/// Parses one request line (without its newline). Never throws on bad input.
[[nodiscard]] Parsed<Request> parse_request(std::string_view line);
/// Parses one reply line (without its newline). Never throws on bad input.
[[nodiscard]] Parsed<Reply> parse_reply(std::string_view line);

/// The line of a message, without the newline.
[[nodiscard]] std::string format(const Request& request);
[[nodiscard]] std::string format(const Reply& reply);

} // namespace netio3::detail::subscription
