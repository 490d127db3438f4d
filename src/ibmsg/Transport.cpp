#include "ibmsg/Transport.hpp"

#include <cstdlib>
#include <exception>
#include <string_view>

#include <ibmsg.h>
#include <infiniband/verbs.h>

#include "core/Logging.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::ibmsg {

namespace {

/// True when `type` in `mode` is built into this library and accepts the configuration.
bool backend_available(NetworkType type, NetworkMode mode, const std::shared_ptr<BaseEventLoop>& probe_loop) {
  NetworkConfig config;
  config.mode = mode;
  config.thread_safety = ThreadSafetyModel::UNSAFE;
  try {
    const auto backend = NetworkBackend::create(type, config, probe_loop);
    return backend != nullptr;
  } catch (const std::exception& error) {
    NETIO3_LOG_INFO("ibmsg: the {} backend in {} mode is not available: {}", to_string(type), to_string(mode),
                    error.what());
    return false;
  }
}

bool rdma_available(const std::shared_ptr<BaseEventLoop>& probe_loop) {
  if (!rdma_device_present()) {
    NETIO3_LOG_INFO("ibmsg: no RDMA device found");
    return false;
  }
  return backend_available(NetworkType::LIBFABRIC, NetworkMode::RDMA, probe_loop);
}

} // namespace

const char* transport_name(Transport transport) noexcept {
  switch (transport) {
  case Transport::Rdma: return "rdma";
  case Transport::FabricTcp: return "fabric-tcp";
  case Transport::Tcp: break;
  }
  return "tcp";
}

bool rdma_device_present() noexcept {
  int count{0};
  ibv_device** devices = ibv_get_device_list(&count);
  if (devices == nullptr) {
    return false; // no verbs support in the kernel, or no provider library
  }
  ibv_free_device_list(devices);
  return count > 0;
}

int choose_transport(const std::shared_ptr<BaseEventLoop>& probe_loop, Transport& transport) {
  const char* forced = std::getenv("IBMSG_TRANSPORT"); // NOLINT(concurrency-mt-unsafe): read at set-up
  const std::string_view choice = forced == nullptr ? std::string_view{} : std::string_view{forced};
  if (choice.empty()) {
    if (rdma_available(probe_loop)) {
      transport = Transport::Rdma;
      return IBMSG_OK;
    }
    if (backend_available(NetworkType::ASYNCMSG, NetworkMode::TCP, probe_loop)) {
      transport = Transport::Tcp;
      return IBMSG_OK;
    }
    NETIO3_LOG_ERROR("ibmsg: neither an RDMA device with the libfabric backend nor the TCP backend is available");
    return IBMSG_TRANSPORT_UNAVAILABLE;
  }
  if (choice == "rdma") {
    if (!rdma_available(probe_loop)) {
      NETIO3_LOG_ERROR("ibmsg: IBMSG_TRANSPORT=rdma, but there is no RDMA device or the libfabric backend is "
                       "not built");
      return IBMSG_TRANSPORT_UNAVAILABLE;
    }
    transport = Transport::Rdma;
    return IBMSG_OK;
  }
  if (choice == "tcp") {
    if (!backend_available(NetworkType::ASYNCMSG, NetworkMode::TCP, probe_loop)) {
      NETIO3_LOG_ERROR("ibmsg: IBMSG_TRANSPORT=tcp, but the TCP (asyncmsg) backend is not built");
      return IBMSG_TRANSPORT_UNAVAILABLE;
    }
    transport = Transport::Tcp;
    return IBMSG_OK;
  }
  if (choice == "fabric-tcp") {
    if (!backend_available(NetworkType::LIBFABRIC, NetworkMode::TCP, probe_loop)) {
      NETIO3_LOG_ERROR("ibmsg: IBMSG_TRANSPORT=fabric-tcp, but the libfabric backend is not built");
      return IBMSG_TRANSPORT_UNAVAILABLE;
    }
    transport = Transport::FabricTcp;
    return IBMSG_OK;
  }
  NETIO3_LOG_ERROR("ibmsg: IBMSG_TRANSPORT='{}' is none of 'rdma', 'tcp', 'fabric-tcp'", choice);
  return IBMSG_INVALID_ARGUMENT;
}

} // namespace netio3::ibmsg
