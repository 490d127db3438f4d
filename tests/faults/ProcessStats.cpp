#include "ProcessStats.hpp"

#include <cstdio>
#include <cstring>
#include <dirent.h>

namespace netio3::faults {

namespace {

/// Reads the "Name:   1234 kB" line of /proc/self/status. No heap allocation, so it can be called
/// in the middle of a run without disturbing the figure it measures.
std::uint64_t status_field_kib(const char* name) noexcept {
  std::FILE* file = std::fopen("/proc/self/status", "re");
  if (file == nullptr) {
    return 0;
  }
  char line[256];
  std::uint64_t value = 0;
  const std::size_t name_length = std::strlen(name);
  while (std::fgets(line, sizeof line, file) != nullptr) {
    if (std::strncmp(line, name, name_length) == 0 && line[name_length] == ':') {
      unsigned long long parsed = 0;
      if (std::sscanf(line + name_length + 1, "%llu", &parsed) == 1) {
        value = parsed;
      }
      break;
    }
  }
  std::fclose(file);
  return value;
}

} // namespace

std::uint64_t resident_kib() noexcept {
  return status_field_kib("VmRSS");
}

std::uint64_t peak_resident_kib() noexcept {
  return status_field_kib("VmHWM");
}

std::size_t open_fd_count() noexcept {
  DIR* directory = opendir("/proc/self/fd");
  if (directory == nullptr) {
    return 0;
  }
  std::size_t count = 0;
  while (const dirent* entry = readdir(directory)) {
    if (entry->d_name[0] != '.') {
      ++count;
    }
  }
  closedir(directory);
  return count > 0 ? count - 1 : 0; // the directory stream's own descriptor
}

} // namespace netio3::faults
