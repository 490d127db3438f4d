#pragma once

// The TCP backend's locks are the library's shared ones (src/core/OptionalMutex.hpp).

#include "core/OptionalMutex.hpp"

namespace netio3::asyncmsg {
using detail::OptionalMutex;
using detail::OptionalSharedMutex;
} // namespace netio3::asyncmsg
