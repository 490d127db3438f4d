#include "Options.hpp"

#include <cctype>
#include <charconv>
#include <limits>
#include <stdexcept>

namespace netio3::bench {

namespace {

std::string lower(std::string_view text) {
  std::string result(text);
  for (char& character : result) {
    character = static_cast<char>(std::tolower(static_cast<unsigned char>(character)));
  }
  return result;
}

} // namespace

NetworkConfig make_config(const BackendOptions& backend) {
  NetworkConfig config;
  config.mode = backend.provider == "verbs" ? NetworkMode::RDMA : NetworkMode::TCP;
  config.thread_safety = backend.threads;
  config.receive_poll = backend.receive_poll;
  if (backend.backend == NetworkType::LIBFABRIC) {
    config.provider = backend.provider;
  }
  return config;
}

std::size_t parse_size(std::string_view text) {
  std::size_t value = 0;
  const char* const begin = text.data();
  const char* const end = text.data() + text.size();
  const auto [rest, error] = std::from_chars(begin, end, value);
  if (error != std::errc{} || rest == begin) {
    throw std::invalid_argument("not a size: '" + std::string(text) + "' (examples: 64, 4k, 64KiB, 1m)");
  }
  const std::string unit = lower(std::string_view(rest, static_cast<std::size_t>(end - rest)));
  std::size_t multiplier = 1;
  if (unit.empty() || unit == "b") {
    multiplier = 1;
  } else if (unit == "k" || unit == "kb" || unit == "ki" || unit == "kib") {
    multiplier = std::size_t{1} << 10U;
  } else if (unit == "m" || unit == "mb" || unit == "mi" || unit == "mib") {
    multiplier = std::size_t{1} << 20U;
  } else if (unit == "g" || unit == "gb" || unit == "gi" || unit == "gib") {
    multiplier = std::size_t{1} << 30U;
  } else {
    throw std::invalid_argument("unknown size unit in '" + std::string(text) + "' (use k, m or g, binary multiples)");
  }
  if (value > std::numeric_limits<std::size_t>::max() / multiplier) {
    throw std::invalid_argument("size too large: '" + std::string(text) + "'");
  }
  return value * multiplier;
}

std::vector<std::size_t> parse_sizes(std::string_view text) {
  std::vector<std::size_t> sizes;
  while (!text.empty()) {
    const std::size_t comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    if (!item.empty()) {
      sizes.push_back(parse_size(item));
    }
    if (comma == std::string_view::npos) {
      break;
    }
    text.remove_prefix(comma + 1);
  }
  if (sizes.empty()) {
    throw std::invalid_argument("empty list of sizes");
  }
  return sizes;
}

std::string format_size(std::size_t bytes) {
  constexpr std::size_t kKiB = std::size_t{1} << 10U;
  constexpr std::size_t kMiB = std::size_t{1} << 20U;
  constexpr std::size_t kGiB = std::size_t{1} << 30U;
  if (bytes >= kGiB && bytes % kGiB == 0) {
    return std::to_string(bytes / kGiB) + " GiB";
  }
  if (bytes >= kMiB && bytes % kMiB == 0) {
    return std::to_string(bytes / kMiB) + " MiB";
  }
  if (bytes >= kKiB && bytes % kKiB == 0) {
    return std::to_string(bytes / kKiB) + " KiB";
  }
  return std::to_string(bytes) + " B";
}

std::string_view to_string(TestKind test) noexcept {
  return test == TestKind::Latency ? "latency" : "throughput";
}

std::string_view to_string(SendMode mode) noexcept {
  switch (mode) {
  case SendMode::Copy: return "copy";
  case SendMode::ZeroCopy: return "zerocopy";
  case SendMode::Buffered: return "buffered";
  }
  return "unknown";
}

std::string_view backend_name(NetworkType type) noexcept {
  return type == NetworkType::LIBFABRIC ? "libfabric" : "asyncmsg";
}

std::string_view threads_name(ThreadSafetyModel model) noexcept {
  return model == ThreadSafetyModel::SAFE ? "safe" : "unsafe";
}

} // namespace netio3::bench
