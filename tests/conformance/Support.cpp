#include "conformance/Support.hpp"

#include "netio3/EpollEventLoop.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <netinet/in.h>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef NETIO3_CONFORMANCE_HAVE_LIBFABRIC
#include <rdma/fabric.h>
#endif

namespace netio3::conformance {

namespace {

std::string errno_message(const std::string& what) {
  const int error = errno;
  return what + ": " + std::strerror(error);
}

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "netio3 conformance: %s\n", message.c_str());
  std::exit(2);
}

// Runs before main in every program linked with the support library (tests and peer), so that
// libfabric sees FI_SOCKETS_PE_WAITTIME when it initialises.
[[maybe_unused]] const bool environment_prepared = [] {
  prepare_process_environment();
  return true;
}();

} // namespace

std::ostream& operator<<(std::ostream& out, const BackendUnderTest& backend) {
  return out << backend.name;
}

const std::vector<BackendUnderTest>& all_backends() {
  static const std::vector<BackendUnderTest> backends{
      {"asyncmsg", NetworkType::ASYNCMSG, NetworkMode::TCP, ""},
      {"libfabric_tcp", NetworkType::LIBFABRIC, NetworkMode::TCP, "tcp"},
      {"libfabric_sockets", NetworkType::LIBFABRIC, NetworkMode::TCP, "sockets", 3},
      {"libfabric_verbs", NetworkType::LIBFABRIC, NetworkMode::RDMA, "verbs", 1},
  };
  return backends;
}

const BackendUnderTest& backend_by_name(std::string_view name) {
  for (const auto& backend : all_backends()) {
    if (backend.name == name) {
      return backend;
    }
  }
  std::string known;
  for (const auto& backend : all_backends()) {
    known += (known.empty() ? "" : ", ") + backend.name;
  }
  die("unknown backend '" + std::string{name} + "' (known: " + known + ")");
}

std::vector<BackendUnderTest> selected_backends() {
  const char* list = std::getenv("NETIO3_CONFORMANCE_BACKENDS");
  std::vector<BackendUnderTest> selected;
  if (list == nullptr || *list == '\0') {
    for (const auto& backend : all_backends()) {
      if (backend.name != "libfabric_verbs") {
        selected.push_back(backend);
      }
    }
    return selected;
  }
  std::stringstream names{list};
  std::string name;
  while (std::getline(names, name, ',')) {
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t") + 1);
    if (!name.empty()) {
      selected.push_back(backend_by_name(name));
    }
  }
  if (selected.empty()) {
    die("NETIO3_CONFORMANCE_BACKENDS='" + std::string{list} + "' names no backend");
  }
  return selected;
}

bool sanitized_build() noexcept {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

const TestEnvironment& test_environment() {
  static const TestEnvironment environment = [] {
    TestEnvironment env;
    const char* scale = std::getenv("NETIO3_TEST_SCALE");
    if (scale != nullptr && *scale != '\0' && std::string_view{scale} != "normal") {
      if (std::string_view{scale} != "small") {
        die("NETIO3_TEST_SCALE='" + std::string{scale} + "' is neither 'small' nor 'normal'");
      }
      env.small_scale = true;
    }
    const char* address = std::getenv("NETIO3_TEST_ADDRESS");
    if (address != nullptr && *address != '\0') {
      env.address = address;
    }
    in_addr ipv4{};
    env.loopback = inet_pton(AF_INET, env.address.c_str(), &ipv4) == 1 && (ntohl(ipv4.s_addr) >> 24U) == 127U;
    auto seconds = std::chrono::seconds{30};
    if (env.small_scale) {
      seconds *= 6;
    }
    if (sanitized_build()) {
      seconds *= 2;
    }
    env.deadline = seconds;
    return env;
  }();
  return environment;
}

std::size_t scaled(std::size_t normal, std::size_t minimum) {
  std::size_t divisor = 1;
  if (test_environment().small_scale) {
    divisor *= 8;
  }
  if (sanitized_build()) {
    divisor *= 4;
  }
  return std::max(normal / divisor, minimum);
}

std::chrono::steady_clock::time_point deadline_from_now() {
  return std::chrono::steady_clock::now() + test_environment().deadline;
}

void prepare_process_environment() {
  // Do not override a value the user chose on purpose.
  ::setenv("FI_SOCKETS_PE_WAITTIME", "0", 0);
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// --- messages ------------------------------------------------------------------------------------

std::array<std::uint8_t, message_header_size> make_message_header(std::uint32_t stream, std::uint64_t seq,
                                                                  std::size_t payload_size) {
  std::array<std::uint8_t, message_header_size> header{};
  const auto size32 = static_cast<std::uint32_t>(payload_size);
  std::memcpy(header.data(), &stream, sizeof stream);
  std::memcpy(header.data() + 4, &size32, sizeof size32);
  std::memcpy(header.data() + 8, &seq, sizeof seq);
  return header;
}

namespace {
std::uint32_t payload_seed(std::uint32_t stream, std::uint64_t seq) noexcept {
  return (stream * 0x85EBCA6BU) ^ static_cast<std::uint32_t>(seq * 0xC2B2AE35ULL) ^
         static_cast<std::uint32_t>(seq >> 32U) ^ 0x27D4EB2FU;
}

std::uint8_t pattern_byte(std::uint32_t seed, std::size_t index) noexcept {
  std::uint32_t x = seed + static_cast<std::uint32_t>(index) * 0x9E3779B1U;
  x ^= x >> 15U;
  return static_cast<std::uint8_t>(x ^ (x >> 8U));
}
} // namespace

std::uint8_t payload_byte(std::uint32_t stream, std::uint64_t seq, std::size_t index) noexcept {
  return pattern_byte(payload_seed(stream, seq), index);
}

namespace {
static_assert(std::endian::native == std::endian::little, "pattern words assume a little-endian machine");

// Eight pattern bytes from `index` on, as they lie in memory. Filling and checking a word at a time
// keeps multi-MiB messages cheap, also under the sanitizers (one instrumented access per word).
std::uint64_t pattern_word(std::uint32_t seed, std::size_t index) noexcept {
  std::uint64_t word = 0;
  for (unsigned k = 0; k < 8; ++k) {
    word |= std::uint64_t{pattern_byte(seed, index + k)} << (8U * k);
  }
  return word;
}
} // namespace

void fill_payload(std::span<std::uint8_t> payload, std::uint32_t stream, std::uint64_t seq,
                  std::size_t first_index) noexcept {
  const std::uint32_t seed = payload_seed(stream, seq);
  std::size_t i = 0;
  for (; i + 8 <= payload.size(); i += 8) {
    const std::uint64_t word = pattern_word(seed, first_index + i);
    std::memcpy(payload.data() + i, &word, sizeof word);
  }
  for (; i < payload.size(); ++i) {
    payload[i] = pattern_byte(seed, first_index + i);
  }
}

std::string check_message(std::span<const std::uint8_t> message, DecodedMessage& decoded) {
  if (message.size() < message_header_size) {
    return "message of " + std::to_string(message.size()) + " bytes is shorter than the " +
           std::to_string(message_header_size) + "-byte test header";
  }
  std::uint32_t size32{0};
  std::memcpy(&decoded.stream, message.data(), sizeof decoded.stream);
  std::memcpy(&size32, message.data() + 4, sizeof size32);
  std::memcpy(&decoded.seq, message.data() + 8, sizeof decoded.seq);
  decoded.payload_size = size32;
  const auto payload = message.subspan(message_header_size);
  auto which = [&] {
    return "message stream " + std::to_string(decoded.stream) + " seq " + std::to_string(decoded.seq);
  };
  if (payload.size() != decoded.payload_size) {
    return which() + ": payload of " + std::to_string(payload.size()) + " bytes, header says " +
           std::to_string(decoded.payload_size);
  }
  const std::uint32_t seed = payload_seed(decoded.stream, decoded.seq);
  std::size_t i = 0;
  for (; i + 8 <= payload.size(); i += 8) {
    std::uint64_t word{0};
    std::memcpy(&word, payload.data() + i, sizeof word);
    if (word != pattern_word(seed, i)) {
      break; // the byte loop below finds the byte
    }
  }
  for (; i < payload.size(); ++i) {
    if (payload[i] != pattern_byte(seed, i)) {
      return which() + ": payload byte " + std::to_string(i) + " of " + std::to_string(payload.size()) + " is " +
             std::to_string(payload[i]) + ", expected " + std::to_string(pattern_byte(seed, i));
    }
  }
  return {};
}

std::vector<std::uint8_t> make_message(std::uint32_t stream, std::uint64_t seq, std::size_t payload_size,
                                       bool with_header) {
  const std::size_t offset = with_header ? message_header_size : 0;
  std::vector<std::uint8_t> message(offset + payload_size);
  if (with_header) {
    const auto header = make_message_header(stream, seq, payload_size);
    std::memcpy(message.data(), header.data(), header.size());
  }
  fill_payload(std::span{message}.subspan(offset), stream, seq);
  return message;
}

std::optional<bool> libfabric_provider_available(const std::string& provider, const std::string& address) {
#ifdef NETIO3_CONFORMANCE_HAVE_LIBFABRIC
  fi_info* hints = fi_allocinfo();
  if (hints == nullptr) {
    return std::nullopt;
  }
  hints->ep_attr->type = FI_EP_MSG;
  hints->caps = FI_MSG;
  // verbs is only listed when the application accepts its memory-registration modes.
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
  hints->fabric_attr->prov_name = ::strdup(provider.c_str());
  fi_info* found = nullptr;
  const int result = fi_getinfo(FI_VERSION(1, 9), address.c_str(), nullptr, FI_SOURCE, hints, &found);
  fi_freeinfo(hints);
  if (found != nullptr) {
    fi_freeinfo(found);
  }
  return result == 0;
#else
  (void)provider;
  (void)address;
  return std::nullopt;
#endif
}

namespace {

bool provider_missing(const BackendUnderTest& backend, std::string message) {
  if (backend.provider.empty()) {
    return false;
  }
  // Availability comes from libfabric itself where the suite can ask it; otherwise from the
  // message, which must name the provider.
  if (const auto available = libfabric_provider_available(backend.provider, test_environment().address)) {
    return !*available;
  }
  std::transform(message.begin(), message.end(), message.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return message.find(backend.provider) != std::string::npos;
}

} // namespace

std::optional<std::string> backend_unavailable(const BackendUnderTest& backend) {
  std::string unavailable;
  try {
    auto loop = std::make_shared<EpollEventLoop>();
    NetworkConfig config;
    config.mode = backend.mode;
    config.provider = backend.provider;
    auto probe = NetworkBackend::create(backend.type, config, loop);
    const EndPointAddress listening =
        probe->open_listen_endpoint(EndPointAddress{test_environment().address, 0}, ConnectionParametersRecv{});
    probe->close_listen_endpoint(listening);
    return std::nullopt;
  } catch (const UnsupportedConfiguration& error) {
    unavailable = error.what();
  } catch (const FailedOpenListenEndpoint& error) {
    if (!provider_missing(backend, error.what())) {
      throw std::runtime_error(backend.name + ": opening a listen endpoint on " + test_environment().address +
                               " port 0 failed although the backend is available: " + error.what());
    }
    unavailable = error.what();
  }
  if (backend.type == NetworkType::ASYNCMSG) {
    throw std::runtime_error("the TCP backend (asyncmsg) must always run, but: " + unavailable);
  }
  return unavailable;
}

// --- process helpers -------------------------------------------------------------------------------

std::size_t resident_bytes() {
  std::ifstream statm{"/proc/self/statm"};
  std::size_t total_pages{0};
  std::size_t resident_pages{0};
  if (!(statm >> total_pages >> resident_pages)) {
    throw std::runtime_error("resident_bytes: cannot read /proc/self/statm");
  }
  return resident_pages * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

BoundPortWithoutListener::BoundPortWithoutListener(const std::string& address) {
  sockaddr_storage storage{};
  socklen_t length{0};
  int family{AF_INET};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    length = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    family = AF_INET6;
    v6->sin6_family = AF_INET6;
    length = sizeof(sockaddr_in6);
  } else {
    throw std::runtime_error("BoundPortWithoutListener: '" + address + "' is not an IP literal");
  }
  m_fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (m_fd < 0) {
    throw std::runtime_error(errno_message("BoundPortWithoutListener: socket()"));
  }
  if (::bind(m_fd, reinterpret_cast<sockaddr*>(&storage), length) != 0) {
    const std::string message = errno_message("BoundPortWithoutListener: bind(" + address + ":0)");
    ::close(m_fd);
    throw std::runtime_error(message);
  }
  if (::getsockname(m_fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) {
    const std::string message = errno_message("BoundPortWithoutListener: getsockname()");
    ::close(m_fd);
    throw std::runtime_error(message);
  }
  m_port = ntohs(family == AF_INET ? v4->sin_port : v6->sin6_port);
}

BoundPortWithoutListener::~BoundPortWithoutListener() {
  if (m_fd >= 0) {
    ::close(m_fd);
  }
}

Watchdog::Watchdog(std::chrono::milliseconds limit, std::string what) {
  m_thread = std::thread{[this, limit, what = std::move(what)] {
    std::unique_lock lock{m_mutex};
    if (!m_done_changed.wait_for(lock, limit, [this] { return m_done; })) {
      std::fprintf(stderr, "netio3 conformance: %s is still running after %lld s: ending the process (hang)\n",
                   what.c_str(), static_cast<long long>(limit.count() / 1000));
      std::fflush(stderr);
      std::_Exit(3);
    }
  }};
}

Watchdog::~Watchdog() {
  {
    std::lock_guard lock{m_mutex};
    m_done = true;
  }
  m_done_changed.notify_all();
  m_thread.join();
}

AlignedMemory::AlignedMemory(std::size_t size) : m_size{size} {
  constexpr std::size_t page = 4096;
  const std::size_t rounded = std::max<std::size_t>((size + page - 1) / page * page, page);
  m_data = static_cast<std::uint8_t*>(std::aligned_alloc(page, rounded));
  if (m_data == nullptr) {
    throw std::bad_alloc();
  }
  std::memset(m_data, 0, rounded);
}

AlignedMemory::~AlignedMemory() {
  std::free(m_data);
}

} // namespace netio3::conformance
