// The defaults of NetworkBackend's waiting calls: a backend that does not implement them says so.

#include "core/SendWait.hpp"

#include <string>

#include "netio3/Netio3Backend.hpp"

namespace netio3 {

WaitStatus NetworkBackend::wait_for_send_space(const EndPointAddress& address, std::size_t /*message_size*/,
                                               std::chrono::milliseconds /*timeout*/) {
  throw UnsupportedConfiguration("wait_for_send_space(" + address.to_string() +
                                 "): this backend cannot wait for room to send");
}

std::uint64_t NetworkBackend::completed_sends(const EndPointAddress& address) {
  throw UnsupportedConfiguration("completed_sends(" + address.to_string() +
                                 "): this backend does not count completed sends");
}

WaitStatus NetworkBackend::wait_for_completed_sends(const EndPointAddress& address, std::uint64_t /*after_count*/,
                                                    std::chrono::milliseconds /*timeout*/) {
  throw UnsupportedConfiguration("wait_for_completed_sends(" + address.to_string() +
                                 "): this backend cannot wait for completed sends");
}

WaitStatus NetworkBackend::wait_for_buffer(const EndPointAddress& address, std::chrono::milliseconds /*timeout*/) {
  throw UnsupportedConfiguration("wait_for_buffer(" + address.to_string() +
                                 "): this backend cannot wait for a free buffer");
}

} // namespace netio3
