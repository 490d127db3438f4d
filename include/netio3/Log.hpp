#pragma once

/// @file
/// Logging hook. netio3 prints nothing unless asked: the default level is `Off`. The application
/// sets a level and, optionally, a sink; tools (and anyone) can set the level from the environment
/// with `NETIO3_LOG=trace|debug|info|warning|error|off`, read once when the library is first used
/// (an explicit `set_log_level` wins).

#include <functional>
#include <string_view>

namespace netio3 {

/// Severity of a log message, in increasing order. `Off` disables logging.
enum class LogLevel { Trace, Debug, Info, Warning, Error, Off };

/// Receives each message at or above the current level. May be called from any thread (the loop
/// thread and the threads calling into the library), possibly concurrently: it must be thread-safe.
/// The message has no trailing newline.
using LogSink = std::function<void(LogLevel level, std::string_view message)>;

/// Sets the lowest level that is logged. Thread-safe.
void set_log_level(LogLevel level) noexcept;
/// The lowest level that is logged.
[[nodiscard]] LogLevel log_level() noexcept;
/// Replaces the sink; an empty function restores the default (one line per message on stderr,
/// `netio3 [level] message`). Thread-safe; takes effect for messages logged after it returns.
void set_log_sink(LogSink sink);
/// Lower-case name of the level ("debug").
[[nodiscard]] std::string_view to_string(LogLevel level) noexcept;
/// Parses "trace", "debug", "info", "warning"/"warn", "error", "off" (any case).
/// @return false (and leaves `level`) for anything else.
[[nodiscard]] bool parse_log_level(std::string_view text, LogLevel& level) noexcept;

} // namespace netio3
