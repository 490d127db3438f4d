// The module's entry point (shared builds only): see core/LibfabricModule.hpp.

#include "core/BackendFactories.hpp"
#include "core/LibfabricModule.hpp"

extern "C" __attribute__((visibility("default"))) const netio3::detail::LibfabricModule*
netio3_libfabric_module_v1() noexcept {
  static const netio3::detail::LibfabricModule module{netio3::detail::libfabric_module_abi, NETIO3_VERSION,
                                                      sizeof(netio3::NetworkConfig), sizeof(netio3::NetworkBackend),
                                                      &netio3::detail::make_libfabric_backend};
  return &module;
}
