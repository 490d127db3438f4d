#include "netio3/FrontendTypes.hpp"

namespace netio3 {

std::string_view to_string(SendMethod method) noexcept {
  switch (method) {
  case SendMethod::BUFFERED: return "BUFFERED";
  case SendMethod::COPY: return "COPY";
  case SendMethod::ZERO_COPY: return "ZERO_COPY";
  }
  return "UNKNOWN_SEND_METHOD";
}

std::string_view to_string(NetioPublisherStatus status) noexcept {
  switch (status) {
  case NetioPublisherStatus::OK: return "OK";
  case NetioPublisherStatus::NO_SUBSCRIBERS: return "NO_SUBSCRIBERS";
  case NetioPublisherStatus::NO_RESOURCES: return "NO_RESOURCES";
  case NetioPublisherStatus::MESSAGE_TOO_LARGE: return "MESSAGE_TOO_LARGE";
  case NetioPublisherStatus::OUTSIDE_REGISTERED_REGION: return "OUTSIDE_REGISTERED_REGION";
  case NetioPublisherStatus::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
  case NetioPublisherStatus::FAILED: return "FAILED";
  }
  return "UNKNOWN_PUBLISHER_STATUS";
}

std::ostream& operator<<(std::ostream& out, SendMethod method) {
  return out << to_string(method);
}

std::ostream& operator<<(std::ostream& out, NetioPublisherStatus status) {
  return out << to_string(status);
}

} // namespace netio3
