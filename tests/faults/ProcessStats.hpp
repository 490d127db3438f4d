#pragma once

/// @file
/// Figures about the calling process that the fault tests watch: resident memory and open file
/// descriptors (read from /proc/self).

#include <cstddef>
#include <cstdint>

namespace netio3::faults {

/// Resident set size now (VmRSS), in KiB; 0 if /proc/self/status cannot be read.
[[nodiscard]] std::uint64_t resident_kib() noexcept;
/// Peak resident set size since the process started (VmHWM), in KiB; 0 if unreadable.
[[nodiscard]] std::uint64_t peak_resident_kib() noexcept;
/// Number of open file descriptors (entries of /proc/self/fd, not counting the one used to list it).
[[nodiscard]] std::size_t open_fd_count() noexcept;

/// True when built with the address or thread sanitizer (slower; some figures are scaled down).
[[nodiscard]] constexpr bool built_with_sanitizer() noexcept {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

/// True when built with the thread sanitizer: its shadow memory and history grow with every page
/// first touched and every synchronisation object, so resident memory says nothing about leaks.
[[nodiscard]] constexpr bool built_with_thread_sanitizer() noexcept {
#if defined(__SANITIZE_THREAD__)
  return true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

} // namespace netio3::faults
