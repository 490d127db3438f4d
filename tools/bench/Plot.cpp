#include "Plot.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <spawn.h>
#include <stdexcept>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

extern char** environ; // NOLINT(readability-redundant-declaration): POSIX declares it in no header

namespace netio3::bench {
namespace {

/// `text` as a gnuplot single-quoted string (a quote inside is written twice).
std::string gnuplot_string(std::string_view text) {
  std::string out{"'"};
  for (const char c : text) {
    out += c;
    if (c == '\'') {
      out += '\'';
    }
  }
  out += '\'';
  return out;
}

double per_second(double amount, double seconds) {
  return seconds > 0.0 ? amount / seconds : 0.0;
}

/// One curve: a gnuplot data block of "size value" lines.
struct Series {
  std::string title;
  std::string data;
};

/// The x axis: a logarithmic size axis labelled with the sizes of the sweep ("64 B", "4 KiB").
std::string size_axis(const std::vector<RunResult>& runs) {
  std::string axis = "set logscale x 2\nset xlabel 'message size'\nset xtics (";
  for (std::size_t i = 0; i < runs.size(); ++i) {
    axis += fmt::format("{}{} {}", i == 0 ? "" : ", ", gnuplot_string(format_size(runs[i].size)), runs[i].size);
  }
  // A single size still needs a range for gnuplot to draw it.
  axis += ")\nset offsets graph 0.05, graph 0.05, graph 0.05, graph 0.05\n";
  return axis;
}

void add_panel(std::string& script, std::string_view title, std::string_view ylabel, const std::vector<Series>& series,
               int& block) {
  std::string plot = "plot ";
  for (std::size_t i = 0; i < series.size(); ++i) {
    const std::string name = "$d" + std::to_string(block++);
    script += name + " << EOD\n" + series[i].data + "EOD\n";
    plot += fmt::format("{}{} using 1:2 with linespoints lw 2 pt 7 title {}", i == 0 ? "" : ", ", name,
                        gnuplot_string(series[i].title));
  }
  script += fmt::format("set title {}\nset ylabel {}\n{}\n", gnuplot_string(title), gnuplot_string(ylabel), plot);
}

} // namespace

void check_plot_path(std::string_view path) {
  constexpr std::string_view kSuffix = ".png";
  if (path.empty()) {
    throw std::invalid_argument("--plot: the file name is empty");
  }
  if (path.size() <= kSuffix.size() || path.substr(path.size() - kSuffix.size()) != kSuffix) {
    throw std::invalid_argument(fmt::format("--plot: '{}' does not end in .png (the plot is a PNG image)", path));
  }
}

std::string plot_script(const std::string& path, const ClientOptions& options, const std::vector<RunResult>& results) {
  std::vector<RunResult> runs;
  for (const RunResult& result : results) {
    if (result.error.empty() && result.receiver.seconds > 0.0 && result.receiver.messages > 0) {
      runs.push_back(result);
    }
  }
  if (runs.empty()) {
    throw std::runtime_error("--plot: no run has figures to plot (every run failed)");
  }
  const std::string setup =
      fmt::format("{}{}, {} threads, {} connection{}", backend_name(options.backend.backend),
                  options.backend.backend == NetworkType::LIBFABRIC ? " " + options.backend.provider : std::string{},
                  threads_name(options.backend.threads), options.connections, options.connections == 1 ? "" : "s");
  std::string script = "set terminal pngcairo size 1200,500 noenhanced font ',10'\n";
  script += "set output " + gnuplot_string(path) + "\nset grid\nset key top left\n" + size_axis(runs);
  int block = 0;
  if (options.test == TestKind::Latency) {
    Series median{"median", {}};
    Series p99{"p99", {}};
    for (const RunResult& run : runs) {
      if (run.latency) {
        median.data += fmt::format("{} {}\n", run.size, run.latency->one_way_median_us);
        p99.data += fmt::format("{} {}\n", run.size, run.latency->one_way_p99_us);
      }
    }
    script += "set logscale y 10\n";
    add_panel(script, fmt::format("netio3-bench latency ({}): one-way, half the round trip", setup),
              "one-way latency (µs)", {median, p99}, block);
    return script;
  }
  Series rate{std::string{to_string(options.mode)}, {}};
  Series bandwidth{std::string{to_string(options.mode)}, {}};
  for (const RunResult& run : runs) {
    const double seconds = run.receiver.seconds;
    rate.data += fmt::format("{} {}\n", run.size, per_second(static_cast<double>(run.receiver.messages), seconds));
    bandwidth.data +=
        fmt::format("{} {}\n", run.size, per_second(static_cast<double>(run.receiver.bytes), seconds) * 8.0 / 1e9);
  }
  script += "set multiplot layout 1,2\nset logscale y 10\n";
  add_panel(script, fmt::format("netio3-bench message rate ({})", setup), "messages/s (receiver side)", {rate}, block);
  add_panel(script, fmt::format("netio3-bench throughput ({})", setup), "Gbit/s (receiver side)", {bandwidth}, block);
  script += "unset multiplot\n";
  return script;
}

void write_plot(const std::string& path, const ClientOptions& options, const std::vector<RunResult>& results) {
  const std::string script = plot_script(path, options, results);
  int input[2];
  if (pipe(input) != 0) {
    throw std::runtime_error(std::string("--plot: pipe to gnuplot failed: ") + std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, input[0], STDIN_FILENO);
  posix_spawn_file_actions_addclose(&actions, input[0]);
  posix_spawn_file_actions_addclose(&actions, input[1]);
  std::string program = "gnuplot";
  char* argv[] = {program.data(), nullptr};
  pid_t pid = 0;
  const int error = posix_spawnp(&pid, program.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  close(input[0]);
  if (error != 0) {
    close(input[1]);
    throw std::runtime_error(
        fmt::format("--plot: starting gnuplot failed: {}{}", std::strerror(error),
                    error == ENOENT ? " (not installed? Debian: apt-get install gnuplot-nox)" : ""));
  }
  // SIGPIPE is ignored by main(): a gnuplot that dies early shows as a write error here.
  std::size_t written = 0;
  while (written < script.size()) {
    const ssize_t count = write(input[1], script.data() + written, script.size() - written);
    if (count < 0 && errno == EINTR) {
      continue;
    }
    if (count <= 0) {
      break; // gnuplot stopped reading; its exit status and message say why
    }
    written += static_cast<std::size_t>(count);
  }
  close(input[1]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      throw std::runtime_error(std::string("--plot: waiting for gnuplot failed: ") + std::strerror(errno));
    }
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error(fmt::format("--plot: gnuplot failed ({} {}; its message is above) writing '{}'",
                                         WIFEXITED(status) ? "exit status" : "signal",
                                         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), path));
  }
  struct stat file {};
  if (stat(path.c_str(), &file) != 0) {
    throw std::runtime_error(
        fmt::format("--plot: gnuplot exited with 0 but '{}' cannot be read: {}", path, std::strerror(errno)));
  }
  if (file.st_size == 0) {
    throw std::runtime_error(fmt::format("--plot: gnuplot exited with 0 but '{}' is empty", path));
  }
}

} // namespace netio3::bench
