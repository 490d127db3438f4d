#pragma once

// Constructors of the backends this build contains. The factory (Factory.cpp) knows only these
// functions; each is defined in its backend's folder and compiled in when the backend is built
// (compile definitions NETIO3_HAVE_ASYNCMSG / NETIO3_HAVE_LIBFABRIC on the netio3 target; with
// NETIO3_LIBFABRIC_MODULE the libfabric one lives in a module the factory loads on first use).

#include <memory>

#include "netio3/Netio3Backend.hpp"

namespace netio3::detail {

std::unique_ptr<NetworkBackend> make_asyncmsg_backend(const NetworkConfig& config,
                                                      std::shared_ptr<BaseEventLoop> evloop);
std::unique_ptr<NetworkBackend> make_libfabric_backend(const NetworkConfig& config,
                                                       std::shared_ptr<BaseEventLoop> evloop);
/// Shared builds: loads libnetio3-libfabric.so on first use (ModuleLoader.cpp), then calls its
/// make_libfabric_backend. Throws UnsupportedConfiguration naming what is missing.
std::unique_ptr<NetworkBackend> make_libfabric_backend_from_module(const NetworkConfig& config,
                                                                   std::shared_ptr<BaseEventLoop> evloop);

} // namespace netio3::detail
