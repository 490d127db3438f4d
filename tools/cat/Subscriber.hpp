#pragma once

// netio3-cat subscribe: subscribes to tags of one publisher and prints what arrives.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "Common.hpp"
#include "netio3/EndPointAddress.hpp"

namespace netio3::cat {

/// How each message is printed on stdout.
enum class OutputFormat {
  text,  ///< One line per message, non-printable bytes escaped.
  hex,   ///< A header line per message, then a hexdump -C style dump.
  count, ///< Nothing per message; per tag counts at the end.
};

struct SubscribeOptions {
  BackendChoice backend;
  EndPointAddress publisher;
  std::vector<std::uint64_t> tags; ///< Sorted, unique.
  OutputFormat format{OutputFormat::text};
  bool show_tag{false};
  std::uint64_t count{0}; ///< Exit after this many messages; 0: until Ctrl-C or the publisher is lost.
  std::string local_ip{"0.0.0.0"};
  std::size_t max_size{std::size_t{1} << 20U}; ///< ConnectionParametersRecv::buf_size.
  bool quiet{false};
};

/// Runs until `count` messages arrived (0), Ctrl-C (0), the publisher is lost or unreachable (1).
int run_subscribe(const SubscribeOptions& options);

} // namespace netio3::cat
