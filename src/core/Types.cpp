#include "netio3/Types.hpp"

#include "netio3/SendWait.hpp"

namespace netio3 {

std::string_view to_string(NetioStatus status) noexcept {
  switch (status) {
  case NetioStatus::OK: return "OK";
  case NetioStatus::FAILED: return "FAILED";
  case NetioStatus::NO_RESOURCES: return "NO_RESOURCES";
  case NetioStatus::MESSAGE_TOO_LARGE: return "MESSAGE_TOO_LARGE";
  case NetioStatus::OUTSIDE_REGISTERED_REGION: return "OUTSIDE_REGISTERED_REGION";
  case NetioStatus::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
  }
  return "UNKNOWN_STATUS";
}

std::string_view to_string(NetworkType type) noexcept {
  switch (type) {
  case NetworkType::ASYNCMSG: return "ASYNCMSG";
  case NetworkType::LIBFABRIC: return "LIBFABRIC";
  }
  return "UNKNOWN_NETWORK_TYPE";
}

std::string_view to_string(NetworkMode mode) noexcept {
  switch (mode) {
  case NetworkMode::TCP: return "TCP";
  case NetworkMode::RDMA: return "RDMA";
  }
  return "UNKNOWN_NETWORK_MODE";
}

std::string_view to_string(ThreadSafetyModel model) noexcept {
  switch (model) {
  case ThreadSafetyModel::SAFE: return "SAFE";
  case ThreadSafetyModel::UNSAFE: return "UNSAFE";
  }
  return "UNKNOWN_THREAD_SAFETY_MODEL";
}

std::string_view to_string(WaitStatus status) noexcept {
  switch (status) {
  case WaitStatus::READY: return "READY";
  case WaitStatus::TIMED_OUT: return "TIMED_OUT";
  case WaitStatus::CLOSED: return "CLOSED";
  case WaitStatus::ON_LOOP_THREAD: return "ON_LOOP_THREAD";
  case WaitStatus::NOT_THREAD_SAFE: return "NOT_THREAD_SAFE";
  }
  return "UNKNOWN_WAIT_STATUS";
}

std::ostream& operator<<(std::ostream& out, WaitStatus status) {
  return out << to_string(status);
}
std::ostream& operator<<(std::ostream& out, NetioStatus status) {
  return out << to_string(status);
}
std::ostream& operator<<(std::ostream& out, NetworkType type) {
  return out << to_string(type);
}
std::ostream& operator<<(std::ostream& out, NetworkMode mode) {
  return out << to_string(mode);
}
std::ostream& operator<<(std::ostream& out, ThreadSafetyModel model) {
  return out << to_string(model);
}

} // namespace netio3
