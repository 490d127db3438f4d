#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

#include "core/Logging.hpp"

namespace netio3 {
namespace {

LogLevel level_from_environment() noexcept {
  LogLevel level = LogLevel::Off;
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read once, at the first log call; netio3 never sets it
  if (const char* text = std::getenv("NETIO3_LOG"); text != nullptr) {
    if (!parse_log_level(text, level)) {
      std::fprintf(stderr,
                   "netio3 [warning] NETIO3_LOG='%s' is not one of trace, debug, info, warning, "
                   "error, off; logging stays off\n",
                   text);
    }
  }
  return level;
}

std::atomic<LogLevel>& current_level() noexcept {
  static std::atomic<LogLevel> level{level_from_environment()};
  return level;
}

struct SinkHolder {
  std::mutex mutex;
  std::shared_ptr<const LogSink> sink;
};

SinkHolder& sink_holder() {
  static SinkHolder holder;
  return holder;
}

} // namespace

void set_log_level(LogLevel level) noexcept {
  current_level().store(level, std::memory_order_relaxed);
}

LogLevel log_level() noexcept {
  return current_level().load(std::memory_order_relaxed);
}

void set_log_sink(LogSink sink) {
  auto replacement = sink ? std::make_shared<const LogSink>(std::move(sink)) : nullptr;
  SinkHolder& holder = sink_holder();
  const std::lock_guard lock{holder.mutex};
  holder.sink = std::move(replacement);
}

std::string_view to_string(LogLevel level) noexcept {
  switch (level) {
  case LogLevel::Trace: return "trace";
  case LogLevel::Debug: return "debug";
  case LogLevel::Info: return "info";
  case LogLevel::Warning: return "warning";
  case LogLevel::Error: return "error";
  case LogLevel::Off: return "off";
  }
  return "unknown";
}

bool parse_log_level(std::string_view text, LogLevel& level) noexcept {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char character) { return static_cast<char>(std::tolower(character)); });
  if (lower == "trace") {
    level = LogLevel::Trace;
  } else if (lower == "debug") {
    level = LogLevel::Debug;
  } else if (lower == "info") {
    level = LogLevel::Info;
  } else if (lower == "warning" || lower == "warn") {
    level = LogLevel::Warning;
  } else if (lower == "error") {
    level = LogLevel::Error;
  } else if (lower == "off" || lower == "none") {
    level = LogLevel::Off;
  } else {
    return false;
  }
  return true;
}

namespace detail {

bool log_enabled(LogLevel level) noexcept {
  const LogLevel threshold = current_level().load(std::memory_order_relaxed);
  return threshold != LogLevel::Off && level >= threshold && level != LogLevel::Off;
}

void log_write(LogLevel level, const std::string& message) noexcept {
  std::shared_ptr<const LogSink> sink;
  {
    SinkHolder& holder = sink_holder();
    const std::lock_guard lock{holder.mutex};
    sink = holder.sink;
  }
  try {
    if (sink) {
      (*sink)(level, message);
    } else {
      std::fprintf(stderr, "netio3 [%s] %s\n", std::string(to_string(level)).c_str(), message.c_str());
    }
  } catch (...) { // a throwing sink must not break the library
  }
}

} // namespace detail
} // namespace netio3
