// Loads the libfabric backend module on first use (shared builds; see core/LibfabricModule.hpp).

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "core/BackendFactories.hpp"
#include "core/LibfabricModule.hpp"
#include "core/Logging.hpp"
#include "netio3/Exceptions.hpp"

namespace netio3::detail {
namespace {

/// The folder that holds libnetio3.so itself: the module is installed (and built) beside it.
std::string own_folder() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<const void*>(&own_folder), &info) == 0 || info.dli_fname == nullptr) {
    return {};
  }
  std::string path{info.dli_fname};
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string{"."} : path.substr(0, slash);
}

/// What went wrong, with the Debian package a user would install for it.
std::string explain_load_failure(const std::string& path, const char* dl_error) {
  const std::string reason = dl_error != nullptr ? dl_error : "unknown error";
  if (::access(path.c_str(), F_OK) != 0) {
    return "NetworkBackend::create: the LIBFABRIC backend module " + path +
           " is missing (it is part of the Debian package libnetio3, installed beside libnetio3.so; "
           "NETIO3_MODULE_DIR names another folder): " +
           reason;
  }
  // The module is there; what it could not find is named first in dlerror's text.
  if (reason.rfind("libfabric.so", 0) == 0) {
    return "NetworkBackend::create: the LIBFABRIC backend needs libfabric, which is not installed "
           "(Debian package libfabric1): loading " +
           path + " failed: " + reason;
  }
  return "NetworkBackend::create: the LIBFABRIC backend module " + path + " could not be loaded: " + reason;
}

const LibfabricModule& load_libfabric_module() {
  static std::mutex mutex;
  static const LibfabricModule* loaded = nullptr;
  const std::lock_guard lock{mutex};
  if (loaded != nullptr) {
    return *loaded;
  }
  // Read once per load attempt, under the mutex: nothing else in netio3 calls setenv.
  const char* folder_override = std::getenv("NETIO3_MODULE_DIR"); // NOLINT(concurrency-mt-unsafe)
  const std::string folder = folder_override != nullptr && *folder_override != '\0' ? folder_override : own_folder();
  const std::string path = folder + "/" + NETIO3_LIBFABRIC_MODULE_FILE;
  // RTLD_LOCAL: libfabric's symbols stay out of the global scope of the process (a program may
  // link another libfabric build of its own). Never dlclose'd: see LibfabricModule.hpp.
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    throw UnsupportedConfiguration(explain_load_failure(path, ::dlerror())); // NOLINT(concurrency-mt-unsafe)
  }
  auto* symbol = ::dlsym(handle, libfabric_module_entry);
  if (symbol == nullptr) {
    throw UnsupportedConfiguration("NetworkBackend::create: " + path + " is not a netio3 libfabric module: it has no " +
                                   libfabric_module_entry);
  }
  const LibfabricModule* module = reinterpret_cast<LibfabricModuleEntry>(symbol)();
  if (module == nullptr || module->abi != libfabric_module_abi ||
      std::strcmp(module->netio3_version, NETIO3_VERSION) != 0 ||
      module->network_config_size != sizeof(NetworkConfig) || module->backend_size != sizeof(NetworkBackend) ||
      module->make == nullptr) {
    throw UnsupportedConfiguration(
        "NetworkBackend::create: " + path + " belongs to another netio3 build (module ABI " +
        std::to_string(module != nullptr ? module->abi : 0) + ", version " +
        (module != nullptr && module->netio3_version != nullptr ? module->netio3_version : "?") +
        "; this libnetio3: ABI " + std::to_string(libfabric_module_abi) + ", version " + NETIO3_VERSION +
        "): install the libnetio3 package's own module or unset NETIO3_MODULE_DIR");
  }
  NETIO3_LOG_DEBUG("netio3: loaded the libfabric backend module {}", path);
  loaded = module;
  return *loaded;
}

} // namespace

std::unique_ptr<NetworkBackend> make_libfabric_backend_from_module(const NetworkConfig& config,
                                                                   std::shared_ptr<BaseEventLoop> evloop) {
  return load_libfabric_module().make(config, std::move(evloop));
}

} // namespace netio3::detail
