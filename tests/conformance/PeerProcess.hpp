#pragma once

/// @file
/// `PeerProcess`: the conformance peer program running as a child process, with its standard output
/// read line by line (its protocol with the test) and its exit observed.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace netio3::conformance {

/// A child process started with `posix_spawn` (safe in a multi-threaded parent, also under the
/// thread sanitizer), its standard output on a pipe, its standard error inherited (so that its
/// failure messages appear in the test's output). Destruction kills it with SIGKILL if it still runs
/// and reaps it.
class PeerProcess {
public:
  /// @throws std::runtime_error if the pipe or the spawn fails (errno text in the message)
  PeerProcess(const std::string& program, const std::vector<std::string>& arguments);
  ~PeerProcess();
  PeerProcess(const PeerProcess&) = delete;
  PeerProcess& operator=(const PeerProcess&) = delete;
  PeerProcess(PeerProcess&&) = delete;
  PeerProcess& operator=(PeerProcess&&) = delete;

  /// The next line of the child's output (without the newline), or nothing when the deadline
  /// passes or the child closed its output.
  std::optional<std::string> read_line(std::chrono::steady_clock::time_point deadline);
  /// Reads lines until one starts with `prefix` and returns it (nothing on deadline or end of output).
  std::optional<std::string> wait_for_line(std::string_view prefix, std::chrono::steady_clock::time_point deadline);
  /// Every line read so far, for failure messages.
  [[nodiscard]] std::string transcript() const;

  /// Sends `signal` to the child.
  void send_signal(int signal);
  /// Waits for the child to exit; returns its wait status, or nothing on deadline.
  std::optional<int> wait_exit(std::chrono::steady_clock::time_point deadline);
  /// "exited with 0", "killed by signal 9", ...
  [[nodiscard]] static std::string describe_status(int status);

  [[nodiscard]] pid_t pid() const noexcept { return m_pid; }

private:
  pid_t m_pid{-1};
  int m_output_fd{-1};
  bool m_reaped{false};
  std::string m_buffer;
  std::vector<std::string> m_lines;
};

} // namespace netio3::conformance
