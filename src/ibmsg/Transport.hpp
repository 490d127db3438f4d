#pragma once

// Which netio3 backend an ibmsg event loop runs on.

#include <memory>

#include "netio3/BaseEventLoop.hpp"

namespace netio3::ibmsg {

/// The transport of an event loop.
enum class Transport {
  Tcp,       ///< the ASYNCMSG backend (plain TCP sockets)
  Rdma,      ///< the LIBFABRIC backend in RDMA mode (verbs provider)
  FabricTcp, ///< the LIBFABRIC backend in TCP mode (libfabric's tcp provider, or FI_PROVIDER): the
             ///< RDMA code path (registered memory, credits) on machines without RDMA hardware
};

/// "tcp", "rdma" or "fabric-tcp".
[[nodiscard]] const char* transport_name(Transport transport) noexcept;

/// True when the machine has at least one RDMA device (libibverbs lists one).
[[nodiscard]] bool rdma_device_present() noexcept;

/// Chooses the transport: IBMSG_TRANSPORT=rdma|tcp|fabric-tcp forces one (an unavailable one gives
/// IBMSG_TRANSPORT_UNAVAILABLE, another value IBMSG_INVALID_ARGUMENT); unset, RDMA when a device is
/// present and the RDMA backend is built, TCP otherwise. `probe_loop` is used to check that the
/// backend can be created. Returns an ibmsg error code.
[[nodiscard]] int choose_transport(const std::shared_ptr<BaseEventLoop>& probe_loop, Transport& transport);

} // namespace netio3::ibmsg
