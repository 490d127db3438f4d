#pragma once

// `--plot FILE.png`: the figures of a size sweep as a PNG, drawn by gnuplot (without any peer to
// compare with; bench/compare does the comparison).

#include <string>
#include <string_view>
#include <vector>

#include "Options.hpp"
#include "Results.hpp"

namespace netio3::bench {

/// Checks the --plot argument before anything runs: not empty, ending in ".png". Throws
/// std::invalid_argument naming the problem.
void check_plot_path(std::string_view path);

/// The gnuplot script that draws `results` into `path`: for throughput runs the message rate and
/// the bandwidth (receiver side) against the message size, for latency runs the one-way median and
/// p99. Runs without figures (failed ones) are left out. Throws std::runtime_error when no run has
/// figures.
[[nodiscard]] std::string plot_script(const std::string& path, const ClientOptions& options,
                                      const std::vector<RunResult>& results);

/// Writes the plot: runs `gnuplot` (found on PATH) with `plot_script` on its standard input, waits
/// for it, and checks that `path` was written. Throws std::runtime_error saying what failed
/// (gnuplot missing, its exit status, no file).
void write_plot(const std::string& path, const ClientOptions& options, const std::vector<RunResult>& results);

} // namespace netio3::bench
