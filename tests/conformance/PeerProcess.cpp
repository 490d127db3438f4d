#include "conformance/PeerProcess.hpp"

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

extern char** environ; // NOLINT: POSIX

namespace netio3::conformance {

namespace {
std::string errno_message(const std::string& what, int error) {
  return what + ": " + std::strerror(error);
}
} // namespace

PeerProcess::PeerProcess(const std::string& program, const std::vector<std::string>& arguments) {
  int fds[2]{-1, -1};
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw std::runtime_error(errno_message("PeerProcess: pipe2()", errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // dup2 clears FD_CLOEXEC on the copy, so the child keeps only its standard output end.
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  std::vector<std::string> argv_storage;
  argv_storage.push_back(program);
  argv_storage.insert(argv_storage.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (auto& argument : argv_storage) {
    argv.push_back(argument.data());
  }
  argv.push_back(nullptr);
  const int error = ::posix_spawn(&m_pid, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (error != 0) {
    ::close(fds[0]);
    throw std::runtime_error(errno_message("PeerProcess: posix_spawn(" + program + ")", error));
  }
  m_output_fd = fds[0];
}

PeerProcess::~PeerProcess() {
  if (!m_reaped && m_pid > 0) {
    ::kill(m_pid, SIGKILL);
    int status = 0;
    while (::waitpid(m_pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (m_output_fd >= 0) {
    ::close(m_output_fd);
  }
}

std::optional<std::string> PeerProcess::read_line(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto newline = m_buffer.find('\n');
    if (newline != std::string::npos) {
      std::string line = m_buffer.substr(0, newline);
      m_buffer.erase(0, newline + 1);
      m_lines.push_back(line);
      return line;
    }
    if (m_output_fd < 0) {
      return std::nullopt;
    }
    const auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (remaining.count() <= 0) {
      return std::nullopt;
    }
    pollfd entry{m_output_fd, POLLIN, 0};
    const int ready = ::poll(&entry, 1, static_cast<int>(std::min<long long>(remaining.count(), 1000)));
    if (ready < 0 && errno != EINTR) {
      throw std::runtime_error(errno_message("PeerProcess: poll()", errno));
    }
    if (ready <= 0) {
      continue;
    }
    char chunk[4096];
    const ssize_t got = ::read(m_output_fd, chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got <= 0) {
      ::close(m_output_fd);
      m_output_fd = -1;
      continue;
    }
    m_buffer.append(chunk, static_cast<std::size_t>(got));
  }
}

std::optional<std::string> PeerProcess::wait_for_line(std::string_view prefix,
                                                      std::chrono::steady_clock::time_point deadline) {
  while (auto line = read_line(deadline)) {
    if (line->starts_with(prefix)) {
      return line;
    }
  }
  return std::nullopt;
}

std::string PeerProcess::transcript() const {
  std::string text;
  for (const auto& line : m_lines) {
    text += "  peer> " + line + '\n';
  }
  if (!m_buffer.empty()) {
    text += "  peer> " + m_buffer + " (no newline)\n";
  }
  return text;
}

void PeerProcess::send_signal(int signal) {
  if (!m_reaped && ::kill(m_pid, signal) != 0) {
    throw std::runtime_error(errno_message("PeerProcess: kill(" + std::to_string(m_pid) + ")", errno));
  }
}

std::optional<int> PeerProcess::wait_exit(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    int status = 0;
    const pid_t result = ::waitpid(m_pid, &status, WNOHANG);
    if (result == m_pid) {
      m_reaped = true;
      return status;
    }
    if (result < 0 && errno != EINTR) {
      throw std::runtime_error(errno_message("PeerProcess: waitpid()", errno));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return std::nullopt;
    }
    // Drain the output meanwhile so that a chatty child never blocks on a full pipe.
    if (m_output_fd >= 0) {
      (void)read_line(std::chrono::steady_clock::now() + std::chrono::milliseconds{10});
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
  }
}

std::string PeerProcess::describe_status(int status) {
  if (WIFEXITED(status)) {
    return "exited with " + std::to_string(WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  }
  return "wait status " + std::to_string(status);
}

} // namespace netio3::conformance
