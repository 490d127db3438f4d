#include "ChildProcess.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace netio3::faults {

namespace {

constexpr std::size_t max_stderr_kept = 64U * 1024U;

std::string errno_message(int error_number) {
  return std::string(std::strerror(error_number)) + " (errno " + std::to_string(error_number) + ")";
}

int poll_timeout_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) {
    return 0;
  }
  return static_cast<int>(std::min<long long>(left, 1000));
}

} // namespace

std::map<std::string, std::string> parse_fields(std::string_view line) {
  std::map<std::string, std::string> fields;
  std::size_t pos = 0;
  while (pos < line.size()) {
    const auto end = std::min(line.find(' ', pos), line.size());
    const auto token = line.substr(pos, end - pos);
    const auto equals = token.find('=');
    if (equals != std::string_view::npos) {
      fields.emplace(std::string(token.substr(0, equals)), std::string(token.substr(equals + 1)));
    }
    pos = end + 1;
  }
  return fields;
}

std::uint64_t field_u64(const std::map<std::string, std::string>& fields, const std::string& key,
                        std::uint64_t fallback) {
  const auto found = fields.find(key);
  if (found == fields.end() || found->second.empty()) {
    return fallback;
  }
  try {
    std::size_t used = 0;
    const auto value = std::stoull(found->second, &used);
    return used == found->second.size() ? value : fallback;
  } catch (const std::exception&) {
    return fallback;
  }
}

ChildProcess::ChildProcess(std::vector<std::string> argv, const std::vector<std::string>& extra_env)
  : m_argv{std::move(argv)} {
  if (m_argv.empty()) {
    throw std::invalid_argument("ChildProcess: empty command line");
  }
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    throw std::runtime_error("ChildProcess: pipe2 for stdout failed: " + errno_message(errno));
  }
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    const int saved = errno;
    close(out_pipe[0]);
    close(out_pipe[1]);
    throw std::runtime_error("ChildProcess: pipe2 for stderr failed: " + errno_message(saved));
  }

  // Environment: ours, with `extra_env` entries replacing same-named ones.
  std::vector<std::string> environment;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view text{*entry};
    const auto name = text.substr(0, text.find('='));
    const bool overridden = std::any_of(extra_env.begin(), extra_env.end(), [&](const std::string& extra) {
      return extra.size() > name.size() && extra.compare(0, name.size(), name) == 0 && extra[name.size()] == '=';
    });
    if (!overridden) {
      environment.emplace_back(text);
    }
  }
  environment.insert(environment.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> env_pointers;
  for (auto& entry : environment) {
    env_pointers.push_back(entry.data());
  }
  env_pointers.push_back(nullptr);
  std::vector<char*> arg_pointers;
  for (auto& arg : m_argv) {
    arg_pointers.push_back(arg.data());
  }
  arg_pointers.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  // The child starts with default signal dispositions and an empty mask, whatever the test set.
  sigset_t all_signals;
  sigset_t no_signals;
  sigfillset(&all_signals);
  sigemptyset(&no_signals);
  posix_spawnattr_setsigdefault(&attributes, &all_signals);
  posix_spawnattr_setsigmask(&attributes, &no_signals);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  const int result =
      posix_spawnp(&m_pid, m_argv[0].c_str(), &actions, &attributes, arg_pointers.data(), env_pointers.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (result != 0) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    m_pid = -1;
    throw std::runtime_error("ChildProcess: cannot start " + m_argv[0] + ": " + errno_message(result));
  }
  m_stdout_fd = out_pipe[0];
  m_stderr_fd = err_pipe[0];
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
  : m_argv{std::move(other.m_argv)}, m_pid{other.m_pid}, m_stdout_fd{other.m_stdout_fd},
    m_stderr_fd{other.m_stderr_fd}, m_reaped{other.m_reaped}, m_stdout_buffer{std::move(other.m_stdout_buffer)},
    m_stderr_text{std::move(other.m_stderr_text)}, m_lines{std::move(other.m_lines)}, m_lines_returned{
                                                                                          other.m_lines_returned} {
  other.m_pid = -1;
  other.m_stdout_fd = -1;
  other.m_stderr_fd = -1;
  other.m_reaped = true;
}

ChildProcess::~ChildProcess() {
  if (m_pid > 0 && !m_reaped) {
    ::kill(m_pid, SIGKILL);
    int status = 0;
    while (waitpid(m_pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  close_pipes();
}

void ChildProcess::close_pipes() noexcept {
  if (m_stdout_fd >= 0) {
    close(m_stdout_fd);
    m_stdout_fd = -1;
  }
  if (m_stderr_fd >= 0) {
    close(m_stderr_fd);
    m_stderr_fd = -1;
  }
}

bool ChildProcess::pump_pipes(Clock::time_point deadline) {
  if (m_stdout_fd < 0 && m_stderr_fd < 0) {
    return false;
  }
  pollfd fds[2] = {{m_stdout_fd, POLLIN, 0}, {m_stderr_fd, POLLIN, 0}};
  const int ready = poll(fds, 2, poll_timeout_ms(deadline));
  if (ready <= 0) {
    return ready < 0 && errno == EINTR;
  }
  char chunk[4096];
  for (int i = 0; i < 2; ++i) {
    if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
      continue;
    }
    int& fd = i == 0 ? m_stdout_fd : m_stderr_fd;
    const ssize_t got = read(fd, chunk, sizeof chunk);
    if (got <= 0) {
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) {
        continue;
      }
      close(fd);
      fd = -1;
      continue;
    }
    if (i == 0) {
      m_stdout_buffer.append(chunk, static_cast<std::size_t>(got));
      std::size_t newline = 0;
      while ((newline = m_stdout_buffer.find('\n')) != std::string::npos) {
        m_lines.push_back(m_stdout_buffer.substr(0, newline));
        m_stdout_buffer.erase(0, newline + 1);
      }
    } else if (m_stderr_text.size() < max_stderr_kept) {
      m_stderr_text.append(chunk, static_cast<std::size_t>(got));
    }
  }
  return true;
}

std::optional<std::string> ChildProcess::read_line(Clock::time_point deadline) {
  while (m_lines_returned >= m_lines.size()) {
    if (m_stdout_fd < 0 || Clock::now() >= deadline) {
      return std::nullopt;
    }
    pump_pipes(deadline);
  }
  return m_lines[m_lines_returned++];
}

std::optional<std::string> ChildProcess::wait_for_line(std::string_view prefix, Clock::time_point deadline) {
  while (auto line = read_line(deadline)) {
    if (line->compare(0, prefix.size(), prefix) == 0) {
      return line;
    }
  }
  return std::nullopt;
}

void ChildProcess::send_signal(int signal) noexcept {
  if (m_pid > 0 && !m_reaped) {
    ::kill(m_pid, signal);
  }
}

std::optional<int> ChildProcess::wait_exit(Clock::time_point deadline) {
  if (m_reaped) {
    return std::nullopt;
  }
  for (;;) {
    int status = 0;
    const pid_t done = waitpid(m_pid, &status, WNOHANG);
    if (done == m_pid) {
      m_reaped = true;
      // Collect what is left in the pipes (the child is gone, so this ends quickly).
      const auto drain_deadline = Clock::now() + std::chrono::seconds{2};
      while (pump_pipes(drain_deadline)) {
      }
      return status;
    }
    if (done < 0 && errno != EINTR) {
      m_reaped = true;
      return std::nullopt;
    }
    if (Clock::now() >= deadline) {
      return std::nullopt;
    }
    const auto slice = std::min(deadline, Clock::now() + std::chrono::milliseconds{20});
    if (!pump_pipes(slice)) {
      std::this_thread::sleep_until(slice);
    }
  }
}

bool ChildProcess::exited_cleanly(int wait_status) noexcept {
  return WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
}

std::string ChildProcess::describe_status(int wait_status) {
  if (WIFEXITED(wait_status)) {
    return "exit " + std::to_string(WEXITSTATUS(wait_status));
  }
  if (WIFSIGNALED(wait_status)) {
    return "killed by signal " + std::to_string(WTERMSIG(wait_status));
  }
  return "status " + std::to_string(wait_status);
}

std::string ChildProcess::diagnostics() {
  pump_pipes(Clock::now());
  std::string text = "command:";
  for (const auto& arg : m_argv) {
    text += ' ';
    text += arg;
  }
  text += "\nstdout lines:";
  const std::size_t first = m_lines.size() > 20 ? m_lines.size() - 20 : 0;
  for (std::size_t i = first; i < m_lines.size(); ++i) {
    text += "\n  " + m_lines[i];
  }
  text += "\nstderr:\n" + m_stderr_text;
  return text;
}

} // namespace netio3::faults
