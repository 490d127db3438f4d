#include <stdexcept>
#include <string>

#include "core/BackendFactories.hpp"

namespace netio3 {

std::unique_ptr<NetworkBackend> NetworkBackend::create(NetworkType type, [[maybe_unused]] const NetworkConfig& config,
                                                       std::shared_ptr<BaseEventLoop> evloop) {
  if (!evloop) {
    throw std::invalid_argument("NetworkBackend::create: the event loop is null");
  }
  switch (type) {
  case NetworkType::ASYNCMSG:
#ifdef NETIO3_HAVE_ASYNCMSG
    return detail::make_asyncmsg_backend(config, std::move(evloop));
#else
    throw UnsupportedConfiguration("NetworkBackend::create: the ASYNCMSG (TCP) backend is not built into this "
                                   "netio3 library (configure with -DNETIO3_WITH_ASYNCMSG=ON)");
#endif
  case NetworkType::LIBFABRIC:
#if defined(NETIO3_LIBFABRIC_MODULE)
    return detail::make_libfabric_backend_from_module(config, std::move(evloop));
#elif defined(NETIO3_HAVE_LIBFABRIC)
    return detail::make_libfabric_backend(config, std::move(evloop));
#else
    throw UnsupportedConfiguration("NetworkBackend::create: the LIBFABRIC (RDMA) backend is not built into this "
                                   "netio3 library (configure with -DNETIO3_WITH_LIBFABRIC=ON and libfabric-dev "
                                   "installed)");
#endif
  }
  throw UnsupportedConfiguration("NetworkBackend::create: unknown network type " +
                                 std::to_string(static_cast<int>(type)));
}

} // namespace netio3
