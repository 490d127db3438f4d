// The libfabric backend as a module loaded on first use (shared builds; src/libfabric/CMakeLists.txt):
// a process that uses only the TCP backend never maps libfabric; the first LIBFABRIC backend maps
// the module and libfabric; a missing or foreign module is refused with an error that names it.
// This executable links neither libfabric nor the module, so /proc/self/maps shows what the
// factory loaded. Each case needs a process in which nothing has loaded the module yet: ctest runs
// every case in a process of its own, but a run of the whole binary (by hand, or the Soft-RoCE
// machine's stage) does not, so each case runs its checks in a re-executed child process (a death
// test in the "threadsafe" style) that exits 0 when they all passed.

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
  // In the case's own child process, before any other thread: setenv is safe here.
  ASSERT_EQ(::setenv("NETIO3_MODULE_DIR", folder, 1), 0); // NOLINT(concurrency-mt-unsafe)
}

/// Runs `checks` in a fresh child process (this binary again, filtered to the current case) and
/// expects it to exit 0; the child's failures are printed with the parent's.
void in_fresh_process(void (*checks)()) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        checks();
        std::exit(::testing::Test::HasFailure() ? 1 : 0); // NOLINT(concurrency-mt-unsafe): the child's end
      },
      ::testing::ExitedWithCode(0), "");
}

void tcp_only_process_never_maps_libfabric() {
  auto loop = std::make_shared<EpollEventLoop>();
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, NetworkConfig{}, loop);
  ASSERT_NE(backend, nullptr);
  EXPECT_TRUE(mapped("/libnetio3.so")) << "the test looks at the wrong process";
  EXPECT_FALSE(mapped("/libfabric.so")) << "libfabric was loaded by a process that never asked for it";
  EXPECT_FALSE(mapped("/libnetio3-libfabric.so"));
}

void first_libfabric_backend_loads_the_module_and_libfabric() {
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

void missing_module_is_named_with_its_package() {
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

void module_of_another_build_is_refused() {
  set_module_dir(NETIO3_FAKE_MODULE_DIR); // a module whose entry point reports ABI 999
  auto loop = std::make_shared<EpollEventLoop>();
  const std::string error = libfabric_create_error(loop);
  EXPECT_NE(error.find("another netio3 build"), std::string::npos) << error;
  EXPECT_NE(error.find("ABI 999"), std::string::npos) << error;
}

void library_without_the_entry_point_is_refused() {
  set_module_dir(NETIO3_FAKE_MODULE_DIR "/no-entry");
  auto loop = std::make_shared<EpollEventLoop>();
  const std::string error = libfabric_create_error(loop);
  EXPECT_NE(error.find("is not a netio3 libfabric module"), std::string::npos) << error;
}

} // namespace

TEST(Module, TcpOnlyProcessNeverMapsLibfabric) {
  in_fresh_process(tcp_only_process_never_maps_libfabric);
}
TEST(Module, FirstLibfabricBackendLoadsTheModuleAndLibfabric) {
  in_fresh_process(first_libfabric_backend_loads_the_module_and_libfabric);
}
TEST(Module, MissingModuleIsNamedWithItsPackage) {
  in_fresh_process(missing_module_is_named_with_its_package);
}
TEST(Module, ModuleOfAnotherBuildIsRefused) {
  in_fresh_process(module_of_another_build_is_refused);
}
TEST(Module, LibraryWithoutTheEntryPointIsRefused) {
  in_fresh_process(library_without_the_entry_point_is_refused);
}
