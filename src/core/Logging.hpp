#pragma once

// Internal logging: cheap when disabled (one relaxed atomic load), formatted with fmt when enabled.

#include <fmt/format.h>
#include <string>
#include <utility>

#include "netio3/Log.hpp"

namespace netio3::detail {

/// True when messages of `level` are logged.
[[nodiscard]] bool log_enabled(LogLevel level) noexcept;
/// Hands a formatted message to the sink (no level check).
void log_write(LogLevel level, const std::string& message) noexcept;

template <typename... Args>
void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) noexcept {
  if (log_enabled(level)) {
    try {
      log_write(level, fmt::format(format, std::forward<Args>(args)...));
    } catch (...) { // logging must never throw into the data path
    }
  }
}

} // namespace netio3::detail

#define NETIO3_LOG_TRACE(...) ::netio3::detail::log(::netio3::LogLevel::Trace, __VA_ARGS__)
#define NETIO3_LOG_DEBUG(...) ::netio3::detail::log(::netio3::LogLevel::Debug, __VA_ARGS__)
#define NETIO3_LOG_INFO(...) ::netio3::detail::log(::netio3::LogLevel::Info, __VA_ARGS__)
#define NETIO3_LOG_WARNING(...) ::netio3::detail::log(::netio3::LogLevel::Warning, __VA_ARGS__)
#define NETIO3_LOG_ERROR(...) ::netio3::detail::log(::netio3::LogLevel::Error, __VA_ARGS__)
