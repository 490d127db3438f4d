#pragma once

/// @file
/// A child process for the fault tests: started with posix_spawn, its stdout read line by line
/// (the drivers' event protocol), its stderr collected for failure messages, killable at any time.
/// The destructor kills (SIGKILL) and reaps a child that is still running, so no test leaves
/// processes behind.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace netio3::faults {

using Clock = std::chrono::steady_clock;

/// Parses "WORD key=value key=value" into {key: value} (the leading word is ignored).
[[nodiscard]] std::map<std::string, std::string> parse_fields(std::string_view line);

/// Value of `key` in `fields` as an unsigned number, or `fallback` when absent or malformed.
[[nodiscard]] std::uint64_t field_u64(const std::map<std::string, std::string>& fields, const std::string& key,
                                      std::uint64_t fallback = 0);

/// One spawned process with piped stdout and stderr.
class ChildProcess {
public:
  /// Starts `argv[0]` (searched in PATH) with `argv`, the current environment plus `extra_env`
  /// ("NAME=value" entries, overriding). Throws std::runtime_error naming the program and errno.
  explicit ChildProcess(std::vector<std::string> argv, const std::vector<std::string>& extra_env = {});
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&&) = delete;
  /// Kills (SIGKILL) and reaps the child if it still runs; closes the pipes.
  ~ChildProcess();

  /// The next stdout line (without newline), or nullopt at EOF or when `deadline` passes.
  [[nodiscard]] std::optional<std::string> read_line(Clock::time_point deadline);
  /// Reads lines until one starts with `prefix` and returns it; nullopt at EOF or `deadline`.
  /// Every line read is kept in `lines()`.
  [[nodiscard]] std::optional<std::string> wait_for_line(std::string_view prefix, Clock::time_point deadline);
  /// Every stdout line read so far.
  [[nodiscard]] const std::vector<std::string>& lines() const noexcept { return m_lines; }

  /// Sends `signal` to the child (no-op once reaped).
  void send_signal(int signal) noexcept;
  /// Waits for the child to exit; returns the raw wait status, or nullopt when `deadline` passed
  /// (the child keeps running). Stdout is drained meanwhile so the child never blocks on it.
  [[nodiscard]] std::optional<int> wait_exit(Clock::time_point deadline);
  /// True when the child exited normally with status 0.
  [[nodiscard]] static bool exited_cleanly(int wait_status) noexcept;
  /// "exit N" / "killed by signal N" for a wait status.
  [[nodiscard]] static std::string describe_status(int wait_status);

  /// The child's pid (valid until reaped).
  [[nodiscard]] pid_t pid() const noexcept { return m_pid; }
  /// Everything read from the child's stderr so far (capped at 64 KiB).
  [[nodiscard]] const std::string& stderr_text() const noexcept { return m_stderr_text; }
  /// Everything the child wrote to stderr so far (capped), plus its argv, for failure messages.
  [[nodiscard]] std::string diagnostics();

private:
  /// Reads whatever is available on stdout/stderr, waiting until `deadline` for something.
  /// Returns false when nothing more can come (both pipes at EOF) or the deadline passed.
  bool pump_pipes(Clock::time_point deadline);
  void close_pipes() noexcept;

  std::vector<std::string> m_argv;
  pid_t m_pid{-1};
  int m_stdout_fd{-1};
  int m_stderr_fd{-1};
  bool m_reaped{false};
  std::string m_stdout_buffer;
  std::string m_stderr_text;
  std::vector<std::string> m_lines;
  std::size_t m_lines_returned{0};
};

} // namespace netio3::faults
