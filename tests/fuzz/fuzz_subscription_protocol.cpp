// libFuzzer target: the frontend's subscription protocol parser, which reads lines from anyone who
// connects to a publisher (requests) or from a publisher (replies). Any line must parse or be
// rejected with a reason, never crash or throw; whatever parses must format to a line that parses
// back to the same message.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "frontend/SubscriptionProtocol.hpp"

using namespace netio3::detail::subscription;

namespace {

void check(bool condition) {
  if (!condition) {
    std::abort();
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view line{reinterpret_cast<const char*>(data), size};
  const Parsed<Request> request = parse_request(line);
  check(request.message.has_value() != !request.error.empty());
  if (request.message) {
    const Parsed<Request> again = parse_request(format(*request.message));
    check(again.message.has_value() && *again.message == *request.message);
  }
  const Parsed<Reply> reply = parse_reply(line);
  check(reply.message.has_value() != !reply.error.empty());
  if (reply.message) {
    const std::string formatted = format(*reply.message);
    check(formatted.find('\n') == std::string::npos);
    const Parsed<Reply> again = parse_reply(formatted);
    check(again.message.has_value() && *again.message == *reply.message);
  }
  return 0;
}
