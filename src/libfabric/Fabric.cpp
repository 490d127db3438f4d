#include "libfabric/Fabric.hpp"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <rdma/fi_errno.h>

#include "core/Logging.hpp"

namespace netio3::libfabric {

std::string fabric_error_text(long long return_code) {
  const long long magnitude = return_code < 0 ? -return_code : return_code;
  return std::string{fi_strerror(static_cast<int>(magnitude))} + " (" + std::to_string(-magnitude) + ")";
}

FabricError::FabricError(std::string_view call, long long return_code)
  : std::runtime_error{std::string{call} + " failed: " + fabric_error_text(return_code)}, m_code{return_code} {}

void close_fid(fid* object, std::string_view what) noexcept {
  if (object == nullptr) {
    return;
  }
  const int rc = fi_close(object);
  if (rc != 0) {
    NETIO3_LOG_WARNING("libfabric: fi_close of the {} failed: {}", what, fabric_error_text(rc));
  }
}

std::string select_provider(const NetworkConfig& config) {
  if (!config.provider.empty()) {
    return config.provider;
  }
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read when a backend is created; netio3 never sets it
  if (const char* forced = std::getenv("FI_PROVIDER"); forced != nullptr && forced[0] != '\0' && forced[0] != '^') {
    // FI_PROVIDER may list several providers ("tcp,sockets"); the first one is used.
    const std::string_view list{forced};
    return std::string{list.substr(0, list.find(','))};
  }
  return config.mode == NetworkMode::RDMA ? "verbs" : "tcp";
}

namespace {

/// Runs once, before the first fi_getinfo of the process (which is when libfabric initialises its
/// providers and reads their FI_* variables). A value the user set is kept.
void prepare_provider_environment() {
  static std::once_flag once;
  std::call_once(once, [] {
    // The sockets provider peeks for a whole message header in its socket. On loopback a header
    // can be split so that its first bytes sit at the end of a large skb: with the default 128 KiB
    // receive buffer that skb alone fills the buffer, the window closes, the rest of the header
    // never arrives, and the connection stalls for good (seen about 1 copy-mode exchange in 10).
    // A 4 MiB socket buffer leaves room for the rest of the header.
    // Once, before libfabric reads its variables; netio3 itself reads none of them concurrently.
    ::setenv("FI_SOCKETS_MAX_BUF_SZ", "4194304", 0); // NOLINT(concurrency-mt-unsafe)
  });
}

} // namespace

InfoPtr get_fabric_info(const std::string& provider, const EndPointAddress& address,
                        const detail::ResolvedAddress& resolved, InfoRole role) {
  prepare_provider_environment();
  const InfoPtr hints{fi_allocinfo()};
  if (!hints) {
    throw std::runtime_error("fi_allocinfo failed: out of memory");
  }
  hints->caps = FI_MSG;
  // Every operation context we pass starts with a struct fi_context2.
  hints->mode = FI_CONTEXT | FI_CONTEXT2;
  hints->ep_attr->type = FI_EP_MSG;
  // verbs needs these (or fi_getinfo finds nothing); providers that need less ignore them. All
  // memory handed to the provider is registered, so FI_MR_LOCAL is always satisfied.
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
  // The backend serialises every call on a domain (one lock in SAFE mode, one thread in UNSAFE).
  hints->domain_attr->threading = FI_THREAD_DOMAIN;
  hints->fabric_attr->prov_name = strdup(provider.c_str()); // freed by fi_freeinfo
  hints->addr_format = resolved.family == AF_INET6 ? FI_SOCKADDR_IN6 : FI_SOCKADDR_IN;

  // The address is handed over already resolved, so host names follow netio3's own rules.
  void* copy = std::malloc(resolved.length); // freed by fi_freeinfo
  if (copy == nullptr || hints->fabric_attr->prov_name == nullptr) {
    std::free(copy);
    throw std::runtime_error("fi_getinfo hints: out of memory");
  }
  std::memcpy(copy, &resolved.storage, resolved.length);
  // The address travels in the hints (node and service stay null, and FI_SOURCE is not set: with
  // a null node it makes fi_getinfo ignore hints->src_addr and find nothing).
  if (role == InfoRole::passive) {
    hints->src_addr = copy;
    hints->src_addrlen = resolved.length;
  } else {
    hints->dest_addr = copy;
    hints->dest_addrlen = resolved.length;
  }

  fi_info* found = nullptr;
  const int rc = fi_getinfo(fabric_api_version, nullptr, nullptr, 0, hints.get(), &found);
  if (rc != 0 || found == nullptr) {
    throw std::runtime_error("libfabric provider '" + provider + "' is not available for " + address.to_string() +
                             ": fi_getinfo (FI_EP_MSG endpoint with FI_MSG) said " +
                             (rc != 0 ? fabric_error_text(rc) : std::string{"no matching provider"}));
  }
  return InfoPtr{found};
}

std::string domain_key(const fi_info& info) {
  const auto text = [](const char* value) { return value == nullptr ? std::string{"?"} : std::string{value}; };
  return text(info.fabric_attr->prov_name) + "/" + text(info.fabric_attr->name) + "/" + text(info.domain_attr->name);
}

} // namespace netio3::libfabric
