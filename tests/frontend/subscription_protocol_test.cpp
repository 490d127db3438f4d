// The subscription protocol's parser: every request and reply round-trips; untrusted lines are
// rejected with a reason, never with an exception.

#include <gtest/gtest.h>

#include <string>

#include "frontend/SubscriptionProtocol.hpp"

namespace netio3::detail::subscription {
namespace {

TEST(SubscriptionProtocol, RequestsAndRepliesRoundTrip) {
  const std::vector<Request> requests{Hello{"10.1.2.3", 4567, 1U << 20U}, Hello{"fe80::1", 1, 1}, Subscribe{0},
                                      Subscribe{UINT64_MAX}, Unsubscribe{12345678901234ULL}};
  for (const Request& request : requests) {
    const std::string line = format(request);
    const Parsed<Request> parsed = parse_request(line);
    ASSERT_TRUE(parsed.message.has_value()) << line << ": " << parsed.error;
    EXPECT_EQ(*parsed.message, request) << line;
  }
  const std::vector<Reply> replies{Subscribed{7}, Unsubscribed{UINT64_MAX}, Refused{3, "too many tags"},
                                   Error{"bad request: \"x\"\n"}};
  for (const Reply& reply : replies) {
    const std::string line = format(reply);
    EXPECT_EQ(line.find('\n'), std::string::npos) << "a formatted line must not contain a newline: " << line;
    const Parsed<Reply> parsed = parse_reply(line);
    ASSERT_TRUE(parsed.message.has_value()) << line << ": " << parsed.error;
    EXPECT_EQ(*parsed.message, reply) << line;
  }
}

TEST(SubscriptionProtocol, RejectsGarbageWithAReason) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"", "not JSON"},
      {"\x01\x02garbage", "not JSON"},
      {"[1,2,3]", "a JSON array"},
      {R"({"tag":1})", "no \"op\""},
      {R"({"op":5})", "\"op\" is a number"},
      {R"({"op":"dance"})", "unknown op"},
      {R"({"op":"subscribe"})", "no \"tag\""},
      {R"({"op":"subscribe","tag":-1})", "not an unsigned integer"},
      {R"({"op":"subscribe","tag":1.5})", "not an unsigned integer"},
      {R"({"op":"subscribe","tag":"1"})", "not an unsigned integer"},
      {R"({"op":"subscribe","tag":18446744073709551616})", "not an unsigned integer"},
      {R"({"op":"hello","version":2,"data_host":"127.0.0.1","data_port":1,"receive_limit":1})", "version 2"},
      {R"({"op":"hello","version":1,"data_host":"127.0.0.1","data_port":0,"receive_limit":1})", "not a port"},
      {R"({"op":"hello","version":1,"data_host":"127.0.0.1","data_port":70000,"receive_limit":1})", "not a port"},
      {R"({"op":"hello","version":1,"data_host":"300.1.1.1","data_port":1,"receive_limit":1})", "data_host"},
      {R"({"op":"hello","version":1,"data_host":"127.0.0.1","data_port":1,"receive_limit":0})", "receive_limit"},
      {R"({"op":"hello","version":1,"data_host":"localhost","data_port":1,"receive_limit":1})", "not an IP address"},
      {std::string(max_line_size + 1, ' '), "longer than the limit"},
      {std::string(2000, '[') + std::string(2000, ']'), "a JSON array"},
  };
  for (const auto& [line, reason] : cases) {
    const Parsed<Request> parsed = parse_request(line);
    EXPECT_FALSE(parsed.message.has_value()) << line.substr(0, 80);
    EXPECT_NE(parsed.error.find(reason), std::string::npos)
        << line.substr(0, 80) << " -> " << parsed.error << " (expected it to say: " << reason << ")";
  }
  EXPECT_FALSE(parse_reply(R"({"op":"refused","tag":1})").message.has_value());
  EXPECT_FALSE(
      parse_reply(R"({"op":"error","reason":)" + std::string("\"") + std::string(max_reason_size + 1, 'x') + "\"}")
          .message.has_value());
}

TEST(SubscriptionProtocol, UnknownFieldsAreIgnoredForLaterVersions) {
  const Parsed<Request> parsed = parse_request(R"({"op":"subscribe","tag":9,"priority":"high"})");
  ASSERT_TRUE(parsed.message.has_value()) << parsed.error;
  EXPECT_EQ(std::get<Subscribe>(*parsed.message).tag, 9U);
}

} // namespace
} // namespace netio3::detail::subscription
