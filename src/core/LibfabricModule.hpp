#pragma once

// The interface between libnetio3 and the libfabric backend when the backend is a module of its
// own (shared builds: libnetio3-libfabric.so, loaded by the factory on first use; see
// src/libfabric/CMakeLists.txt for why). The module exports one C function,
// netio3_libfabric_module_v1(), returning a pointer to a static LibfabricModule that lives as long
// as the process: the module is never unloaded, since libfabric's providers keep threads and
// atexit handlers of their own.
//
// Both sides are built from one source tree, but a module from another build (an older package,
// NETIO3_MODULE_DIR pointing elsewhere) could be found: the loader checks the ABI number, the
// netio3 version and the sizes of the types that cross the boundary before it calls `make`.

#include <cstddef>
#include <cstdint>
#include <memory>

#include "netio3/Netio3Backend.hpp"

namespace netio3::detail {

/// Bumped whenever LibfabricModule or what `make` receives changes shape.
inline constexpr std::uint32_t libfabric_module_abi = 1;
/// The name of the entry point (extern "C").
inline constexpr const char* libfabric_module_entry = "netio3_libfabric_module_v1";

struct LibfabricModule {
  std::uint32_t abi;               ///< libfabric_module_abi of the module's build
  const char* netio3_version;      ///< the project version of the module's build, e.g. "0.1.0"
  std::size_t network_config_size; ///< sizeof(NetworkConfig) in the module's build
  std::size_t backend_size;        ///< sizeof(NetworkBackend) in the module's build
  /// Creates a libfabric backend; throws what the backend's constructor throws.
  std::unique_ptr<NetworkBackend> (*make)(const NetworkConfig& config, std::shared_ptr<BaseEventLoop> evloop);
};

using LibfabricModuleEntry = const LibfabricModule* (*)() noexcept;

} // namespace netio3::detail
