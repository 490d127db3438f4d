#include "Common.hpp"

#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <unistd.h>

namespace netio3::cat {

namespace {

// Atomics rather than volatile sig_atomic_t: the handler may run on any thread (the loop's too),
// and lock-free atomics are async-signal-safe.
std::atomic<int> stop_fd{-1};
std::atomic<int> stop_requests{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_stop_signal(int /*signal*/) {
  if (stop_requests.fetch_add(1) > 0) {
    _exit(130); // the second Ctrl-C: the user does not want to wait for a clean end
  }
  const std::uint64_t one = 1;
  // Async-signal-safe; nothing to do if it fails (the fd is an eventfd or a pipe we own).
  (void)!write(stop_fd.load(), &one, sizeof(one));
}

std::mutex& stderr_mutex() {
  static std::mutex mutex;
  return mutex;
}

bool live_line_drawn{false}; // stderr mutex

void write_all(std::string_view text) {
  while (!text.empty()) {
    const ssize_t written = ::write(STDERR_FILENO, text.data(), text.size());
    if (written <= 0) {
      return; // stderr is gone: nothing left to tell anyone
    }
    text.remove_prefix(static_cast<std::size_t>(written));
  }
}

} // namespace

std::string error_text(int error_number) {
  char buffer[256];
  // GNU strerror_r returns the message (possibly not in buffer).
  return strerror_r(error_number, buffer, sizeof(buffer));
}

void install_stop_handlers(int notify_fd) {
  stop_fd.store(notify_fd);
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

bool stop_requested() noexcept {
  return stop_requests.load(std::memory_order_relaxed) > 0;
}

bool stderr_is_terminal() {
  static const bool terminal = isatty(STDERR_FILENO) == 1;
  return terminal;
}

void note(std::string_view text) {
  std::string line;
  line.reserve(text.size() + 32);
  const std::lock_guard lock{stderr_mutex()};
  if (live_line_drawn) {
    line += "\r\033[K";
    live_line_drawn = false;
  }
  line += "netio3-cat: ";
  line += text;
  line += '\n';
  write_all(line);
}

void live_line(std::string_view text) {
  if (!stderr_is_terminal()) {
    return;
  }
  std::string line = "\r\033[K";
  line += text;
  const std::lock_guard lock{stderr_mutex()};
  if (text.empty() && !live_line_drawn) {
    return; // nothing to clear
  }
  live_line_drawn = !text.empty();
  write_all(line);
}

} // namespace netio3::cat
