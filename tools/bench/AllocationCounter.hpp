#pragma once

// Counts heap allocations made through the global operator new in this process (the benchmark and
// the netio3 library it links, on every thread). The replaced operators live in
// AllocationCounter.cpp; they forward to malloc/free and add one relaxed atomic increment.

#include <cstdint>

namespace netio3::bench {

/// Number of calls to any global operator new since the process started.
[[nodiscard]] std::uint64_t allocation_count() noexcept;

} // namespace netio3::bench
