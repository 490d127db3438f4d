#pragma once

// Set-up shared by both ends of a libfabric connection: a send endpoint (ControlPath.cpp) and an
// accepted connection (Listener.cpp) size their queues and lay out their send slots and receive
// contexts the same way. Defined in ControlPath.cpp.

#include <cstddef>

#include "libfabric/Objects.hpp"

namespace netio3::libfabric {

/// The queue depth to use for a provider attribute (0 means "provider default": assume 256).
std::size_t queue_depth(std::size_t provider_size);

/// How many receives to keep posted on a receive queue of the provider's `provider_size`.
std::size_t posted_receive_limit(std::size_t provider_size);

/// Sets up the send slots of a connection: `count` slots with registered room for the wire header
/// and inline header data.
void setup_send_slots(Connection& connection, DomainContext& domain, std::size_t count);

/// Sets up `count` receive contexts (the buffers are set by the caller).
void setup_receive_contexts(Connection& connection, std::size_t count);

} // namespace netio3::libfabric
