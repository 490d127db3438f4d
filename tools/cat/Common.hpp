#pragma once

// netio3-cat: what both roles share: the backend choice, stop signals, messages on stderr.

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "netio3/Types.hpp"

namespace netio3::cat {

/// Exit status of a run that failed (publisher lost or unreachable, cannot listen, ...).
inline constexpr int exit_failure{1};
/// Exit status of a command-line mistake.
inline constexpr int exit_usage{2};

/// Which backend carries the data (the control connection is always TCP).
struct BackendChoice {
  NetworkType type{NetworkType::ASYNCMSG};
  NetworkMode mode{NetworkMode::TCP};
  std::string provider{}; ///< libfabric only; empty: FI_PROVIDER or the mode's default.
};

/// "1 message", "2 messages".
[[nodiscard]] inline std::string messages_text(std::uint64_t count) {
  return std::to_string(count) + (count == 1 ? " message" : " messages");
}

/// The text of an errno value (thread-safe, unlike std::strerror).
[[nodiscard]] std::string error_text(int error_number);

/// Makes SIGINT and SIGTERM write the 8-byte value 1 to `notify_fd` (an eventfd or a pipe) the
/// first time, and end the process at once (status 130) the second time; ignores SIGPIPE (a
/// vanished peer or reader must show up as an error, not kill the tool).
void install_stop_handlers(int notify_fd);

/// True once SIGINT or SIGTERM arrived (after `install_stop_handlers`). Cheap: for hot loops.
[[nodiscard]] bool stop_requested() noexcept;

/// Whether the live line may be drawn: stderr is a terminal. Its first call decides.
[[nodiscard]] bool stderr_is_terminal();

/// Prints "netio3-cat: TEXT" on stderr as one write (first clearing a live line, if one is drawn).
void note(std::string_view text);

/// Draws (or, with empty `text`, clears) the live line at the bottom of the terminal.
void live_line(std::string_view text);

/// `note(fmt::format(...))`.
template <typename... Args>
void notef(fmt::format_string<Args...> format, Args&&... args) {
  note(fmt::format(format, std::forward<Args>(args)...));
}

} // namespace netio3::cat
