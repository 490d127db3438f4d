#pragma once

// Thin helpers around libfabric (private to the libfabric backend): provider selection, fi_getinfo
// with the backend's hints, error texts, and owning handles for fi_info and fids.

#include <memory>
#include <rdma/fabric.h>
#include <stdexcept>
#include <string>
#include <string_view>

#include "core/Resolve.hpp"
#include "netio3/NetworkConfig.hpp"

namespace netio3::libfabric {

/// The libfabric API version the backend is written against (Debian 12 ships 1.17).
inline constexpr std::uint32_t fabric_api_version = FI_VERSION(1, 17);

/// "fi_strerror text (-code)" for a libfabric return code (negative or positive).
[[nodiscard]] std::string fabric_error_text(long long return_code);

/// A libfabric call that failed; `what()` names the call and the provider's text.
class FabricError : public std::runtime_error {
public:
  FabricError(std::string_view call, long long return_code);
  /// The (negative) libfabric return code.
  [[nodiscard]] long long code() const noexcept { return m_code; }

private:
  long long m_code;
};

/// Throws `FabricError(call, return_code)` when `return_code` is negative.
inline void check(long long return_code, std::string_view call) {
  if (return_code < 0) {
    throw FabricError(call, return_code);
  }
}

/// Frees an fi_info list.
struct InfoDeleter {
  void operator()(fi_info* info) const noexcept { fi_freeinfo(info); }
};
/// An owned fi_info (list).
using InfoPtr = std::unique_ptr<fi_info, InfoDeleter>;

/// Closes a libfabric object (fi_close); failures are logged, never thrown (used on tear-down).
void close_fid(fid* object, std::string_view what) noexcept;

/// An owned libfabric object of type `T` (fid_fabric, fid_domain, fid_eq, fid_cq, fid_ep, fid_pep,
/// fid_mr): closed with fi_close on destruction.
template <typename T>
class FidHandle {
public:
  FidHandle() = default;
  explicit FidHandle(std::string_view what) : m_what{what} {}
  FidHandle(const FidHandle&) = delete;
  FidHandle& operator=(const FidHandle&) = delete;
  FidHandle(FidHandle&& other) noexcept : m_object{other.m_object}, m_what{other.m_what} { other.m_object = nullptr; }
  FidHandle& operator=(FidHandle&& other) noexcept {
    if (this != &other) {
      reset();
      m_object = other.m_object;
      m_what = other.m_what;
      other.m_object = nullptr;
    }
    return *this;
  }
  ~FidHandle() { reset(); }

  /// Where libfabric's open call stores the new object.
  [[nodiscard]] T** out() noexcept {
    reset();
    return &m_object;
  }
  [[nodiscard]] T* get() const noexcept { return m_object; }
  [[nodiscard]] T* operator->() const noexcept { return m_object; }
  [[nodiscard]] explicit operator bool() const noexcept { return m_object != nullptr; }
  /// The object's fid (for fi_close, fi_control, fi_trywait).
  [[nodiscard]] fid* fid_ptr() const noexcept { return m_object == nullptr ? nullptr : &m_object->fid; }

  /// Closes the object now (no-op when empty).
  void reset() noexcept {
    if (m_object != nullptr) {
      close_fid(&m_object->fid, m_what);
      m_object = nullptr;
    }
  }

private:
  T* m_object{nullptr};
  std::string_view m_what{"libfabric object"};
};

/// The provider the configuration asks for: `config.provider` if set, else the first entry of the
/// `FI_PROVIDER` environment variable (unless it is an exclusion list "^..."), else `verbs` for
/// `NetworkMode::RDMA` and `tcp` for `NetworkMode::TCP`.
[[nodiscard]] std::string select_provider(const NetworkConfig& config);

/// What fi_getinfo is asked for.
enum class InfoRole {
  passive, ///< a listen endpoint bound to the address
  active,  ///< a send endpoint connecting to the address
};

/// fi_getinfo for an FI_EP_MSG endpoint with FI_MSG of `provider` at `address` (already resolved).
/// @throws std::runtime_error naming the provider, the address and fi_getinfo's error text, when
///         no matching provider exists (e.g. `verbs` without an RDMA device).
[[nodiscard]] InfoPtr get_fabric_info(const std::string& provider, const EndPointAddress& address,
                                      const detail::ResolvedAddress& resolved, InfoRole role);

/// A key that identifies the fabric and domain an fi_info belongs to (provider, fabric, domain).
[[nodiscard]] std::string domain_key(const fi_info& info);

} // namespace netio3::libfabric
