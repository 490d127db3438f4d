// Stand-ins for libnetio3-libfabric.so in module_test.cpp: with NETIO3_FAKE_MODULE_HAS_ENTRY, an
// entry point that reports another ABI; without it, a library that has none.

#include "core/LibfabricModule.hpp"

#ifdef NETIO3_FAKE_MODULE_HAS_ENTRY
extern "C" __attribute__((visibility("default"))) const netio3::detail::LibfabricModule*
netio3_libfabric_module_v1() noexcept {
  static const netio3::detail::LibfabricModule module{999, "0.0.0-fake", 0, 0, nullptr};
  return &module;
}
#else
extern "C" __attribute__((visibility("default"))) int netio3_fake_module_without_entry() noexcept {
  return 0;
}
#endif
