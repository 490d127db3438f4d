// The libfabric backend as a module loaded on first use (shared builds; src/libfabric/CMakeLists.txt):
// a process that uses only the TCP backend never maps libfabric; the first LIBFABRIC backend maps
// the module and libfabric; a missing or foreign module is refused with an error that names it.
// This executable links neither libfabric nor the module, so /proc/self/maps shows what the
// factory loaded. Each test case runs in a process of its own (gtest_discover_tests).

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "netio3/EpollEventLoop.hpp"
#include "netio3/Exceptions.hpp"
#include "netio3/Netio3Backend.hpp"

#ifndef NETIO3_FAKE_MODULE_DIR
#error "tests/libfabric/CMakeLists.txt defines NETIO3_FAKE_MODULE_DIR"
#endif

using namespace netio3;

namespace {

/// True when a file whose path contains `name` (e.g. "/libfabric.so") is mapped into this process.
bool mapped(const std::string& name) {
  std::ifstream maps{"/proc/self/maps"};
  for (std::string line; std::getline(maps, line);) {
    if (line.find(name) != std::string::npos) {
      return true;
    }
  }
  return false;
}

/// The message of the UnsupportedConfiguration that creating a LIBFABRIC backend throws, or "".
std::string libfabric_create_error(const std::shared_ptr<EpollEventLoop>& loop) {
  try {
    auto backend = NetworkBackend::create(NetworkType::LIBFABRIC, NetworkConfig{}, loop);
  } catch (const UnsupportedConfiguration& error) {
    return error.what();
  }
  return {};
}

void set_module_dir(const char* folder) {
  // One process per test case and no other thread yet: setenv is safe here.
  ASSERT_EQ(::setenv("NETIO3_MODULE_DIR", folder, 1), 0); // NOLINT(concurrency-mt-unsafe)
}

} // namespace

TEST(Module, TcpOnlyProcessNeverMapsLibfabric) {
  auto loop = std::make_shared<EpollEventLoop>();
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, NetworkConfig{}, loop);
  ASSERT_NE(backend, nullptr);
  EXPECT_TRUE(mapped("/libnetio3.so")) << "the test looks at the wrong process";
  EXPECT_FALSE(mapped("/libfabric.so")) << "libfabric was loaded by a process that never asked for it";
  EXPECT_FALSE(mapped("/libnetio3-libfabric.so"));
}

TEST(Module, FirstLibfabricBackendLoadsTheModuleAndLibfabric) {
  auto loop = std::make_shared<EpollEventLoop>();
  ASSERT_FALSE(mapped("/libfabric.so"));
  auto first = NetworkBackend::create(NetworkType::LIBFABRIC, NetworkConfig{}, loop);
  ASSERT_NE(first, nullptr);
  EXPECT_TRUE(mapped("/libnetio3-libfabric.so"));
  EXPECT_TRUE(mapped("/libfabric.so"));
  // Loaded once: a second backend comes from the module already loaded.
  auto second = NetworkBackend::create(NetworkType::LIBFABRIC, NetworkConfig{}, loop);
  EXPECT_NE(second, nullptr);
}

TEST(Module, MissingModuleIsNamedWithItsPackage) {
  set_module_dir("/nonexistent-netio3-module-dir");
  auto loop = std::make_shared<EpollEventLoop>();
  const std::string error = libfabric_create_error(loop);
  EXPECT_NE(error.find("/nonexistent-netio3-module-dir/libnetio3-libfabric.so"), std::string::npos) << error;
  EXPECT_NE(error.find("missing"), std::string::npos) << error;
  EXPECT_NE(error.find("libnetio3"), std::string::npos) << error;
  EXPECT_FALSE(mapped("/libfabric.so"));
  // A failed load is not remembered: with the module found again, the backend is created.
  ASSERT_EQ(::unsetenv("NETIO3_MODULE_DIR"), 0); // NOLINT(concurrency-mt-unsafe)
  EXPECT_NE(NetworkBackend::create(NetworkType::LIBFABRIC, NetworkConfig{}, loop), nullptr);
}

TEST(Module, ModuleOfAnotherBuildIsRefused) {
  set_module_dir(NETIO3_FAKE_MODULE_DIR); // a module whose entry point reports ABI 999
  auto loop = std::make_shared<EpollEventLoop>();
  const std::string error = libfabric_create_error(loop);
  EXPECT_NE(error.find("another netio3 build"), std::string::npos) << error;
  EXPECT_NE(error.find("ABI 999"), std::string::npos) << error;
}

TEST(Module, LibraryWithoutTheEntryPointIsRefused) {
  set_module_dir(NETIO3_FAKE_MODULE_DIR "/no-entry");
  auto loop = std::make_shared<EpollEventLoop>();
  const std::string error = libfabric_create_error(loop);
  EXPECT_NE(error.find("is not a netio3 libfabric module"), std::string::npos) << error;
}
