#include "frontend/SubscriptionProtocol.hpp"

#include <nlohmann/json.hpp>

#include "netio3/EndPointAddress.hpp"
#include "netio3/Exceptions.hpp"

namespace netio3::detail::subscription {

namespace {

using Json = nlohmann::json;

std::optional<Json> parse_object(std::string_view line, std::string& error) {
  if (line.size() > max_line_size) {
    error =
        "line of " + std::to_string(line.size()) + " bytes, longer than the limit of " + std::to_string(max_line_size);
    return std::nullopt;
  }
  Json value = Json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    error = "not JSON";
    return std::nullopt;
  }
  if (!value.is_object()) {
    error = std::string{"a JSON "} + value.type_name() + " where an object was expected";
    return std::nullopt;
  }
  return value;
}

std::optional<std::uint64_t> unsigned_field(const Json& object, const char* name, std::string& error) {
  const auto found = object.find(name);
  if (found == object.end()) {
    error = std::string{"no \""} + name + "\" field";
    return std::nullopt;
  }
  if (!found->is_number_unsigned()) {
    error = std::string{"\""} + name + "\" is a " + found->type_name() + ", not an unsigned integer";
    return std::nullopt;
  }
  return found->get<std::uint64_t>();
}

std::optional<std::string> string_field(const Json& object, const char* name, std::size_t max_size,
                                        std::string& error) {
  const auto found = object.find(name);
  if (found == object.end()) {
    error = std::string{"no \""} + name + "\" field";
    return std::nullopt;
  }
  if (!found->is_string()) {
    error = std::string{"\""} + name + "\" is a " + found->type_name() + ", not a string";
    return std::nullopt;
  }
  const auto& text = found->get_ref<const std::string&>();
  if (text.size() > max_size) {
    error = std::string{"\""} + name + "\" is longer than " + std::to_string(max_size) + " bytes";
    return std::nullopt;
  }
  return text;
}

std::optional<Hello> parse_hello(const Json& object, std::string& error) {
  const std::optional<std::uint64_t> version = unsigned_field(object, "version", error);
  if (!version) {
    return std::nullopt;
  }
  if (*version != protocol_version) {
    error = "protocol version " + std::to_string(*version) + " (this publisher speaks version " +
            std::to_string(protocol_version) + ")";
    return std::nullopt;
  }
  std::optional<std::string> host = string_field(object, "data_host", 255, error);
  const std::optional<std::uint64_t> port = host ? unsigned_field(object, "data_port", error) : std::nullopt;
  const std::optional<std::uint64_t> limit = port ? unsigned_field(object, "receive_limit", error) : std::nullopt;
  if (!limit) {
    return std::nullopt;
  }
  if (*port == 0 || *port > 65535) {
    error = "data_port " + std::to_string(*port) + " is not a port (1 to 65535)";
    return std::nullopt;
  }
  if (*limit == 0) {
    error = "receive_limit is 0";
    return std::nullopt;
  }
  try {
    // A literal: the publisher must not block its loop resolving a name a subscriber sent.
    if (!EndPointAddress{*host, static_cast<std::uint16_t>(*port)}.is_literal()) {
      error = "data_host \"" + *host + "\" is not an IP address";
      return std::nullopt;
    }
  } catch (const InvalidEndpointAddress& invalid) {
    error = std::string{"data_host: "} + invalid.what();
    return std::nullopt;
  }
  return Hello{std::move(*host), static_cast<std::uint16_t>(*port), *limit};
}

template <typename Message>
Parsed<Message> failed(std::string error) {
  return Parsed<Message>{std::nullopt, std::move(error)};
}

template <typename... Alternatives>
struct Overloaded : Alternatives... {
  using Alternatives::operator()...;
};
template <typename... Alternatives>
Overloaded(Alternatives...) -> Overloaded<Alternatives...>;

} // namespace

Parsed<Request> parse_request(std::string_view line) {
  std::string error;
  const std::optional<Json> object = parse_object(line, error);
  if (!object) {
    return failed<Request>(std::move(error));
  }
  const std::optional<std::string> op = string_field(*object, "op", 32, error);
  if (!op) {
    return failed<Request>(std::move(error));
  }
  if (*op == "hello") {
    std::optional<Hello> hello = parse_hello(*object, error);
    return hello ? Parsed<Request>{Request{std::move(*hello)}, {}} : failed<Request>("hello: " + error);
  }
  if (*op == "subscribe" || *op == "unsubscribe") {
    const std::optional<std::uint64_t> tag = unsigned_field(*object, "tag", error);
    if (!tag) {
      return failed<Request>(*op + ": " + error);
    }
    return *op == "subscribe" ? Parsed<Request>{Request{Subscribe{*tag}}, {}}
                              : Parsed<Request>{Request{Unsubscribe{*tag}}, {}};
  }
  return failed<Request>("unknown op \"" + *op + "\"");
}

Parsed<Reply> parse_reply(std::string_view line) {
  std::string error;
  const std::optional<Json> object = parse_object(line, error);
  if (!object) {
    return failed<Reply>(std::move(error));
  }
  const std::optional<std::string> op = string_field(*object, "op", 32, error);
  if (!op) {
    return failed<Reply>(std::move(error));
  }
  if (*op == "error") {
    std::optional<std::string> reason = string_field(*object, "reason", max_reason_size, error);
    return reason ? Parsed<Reply>{Reply{Error{std::move(*reason)}}, {}} : failed<Reply>("error: " + error);
  }
  if (*op != "subscribed" && *op != "unsubscribed" && *op != "refused") {
    return failed<Reply>("unknown op \"" + *op + "\"");
  }
  const std::optional<std::uint64_t> tag = unsigned_field(*object, "tag", error);
  if (!tag) {
    return failed<Reply>(*op + ": " + error);
  }
  if (*op == "subscribed") {
    return Parsed<Reply>{Reply{Subscribed{*tag}}, {}};
  }
  if (*op == "unsubscribed") {
    return Parsed<Reply>{Reply{Unsubscribed{*tag}}, {}};
  }
  std::optional<std::string> reason = string_field(*object, "reason", max_reason_size, error);
  return reason ? Parsed<Reply>{Reply{Refused{*tag, std::move(*reason)}}, {}} : failed<Reply>("refused: " + error);
}

std::string format(const Request& request) {
  return std::visit(Overloaded{
                        [](const Hello& hello) {
                          return Json{{"op", "hello"},
                                      {"version", protocol_version},
                                      {"data_host", hello.data_host},
                                      {"data_port", hello.data_port},
                                      {"receive_limit", hello.receive_limit}}
                              .dump();
                        },
                        [](const Subscribe& subscribe) {
                          return Json{{"op", "subscribe"}, {"tag", subscribe.tag}}.dump();
                        },
                        [](const Unsubscribe& unsubscribe) {
                          return Json{{"op", "unsubscribe"}, {"tag", unsubscribe.tag}}.dump();
                        },
                    },
                    request);
}

std::string format(const Reply& reply) {
  // Reasons are cut to what a parser accepts; dump() replaces invalid UTF-8 instead of throwing.
  const auto reason_text = [](const std::string& reason) { return reason.substr(0, max_reason_size); };
  return std::visit(
      Overloaded{
          [](const Subscribed& subscribed) {
            return Json{{"op", "subscribed"}, {"tag", subscribed.tag}}.dump();
          },
          [](const Unsubscribed& unsubscribed) {
            return Json{{"op", "unsubscribed"}, {"tag", unsubscribed.tag}}.dump();
          },
          [&](const Refused& refused) {
            return Json{{"op", "refused"}, {"tag", refused.tag}, {"reason", reason_text(refused.reason)}}.dump(
                -1, ' ', false, Json::error_handler_t::replace);
          },
          [&](const Error& error) {
            return Json{{"op", "error"}, {"reason", reason_text(error.reason)}}.dump(-1, ' ', false,
                                                                                     Json::error_handler_t::replace);
          },
      },
      reply);
}

} // namespace netio3::detail::subscription
