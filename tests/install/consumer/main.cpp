// Runs an EpollEventLoop with a timer and a signal, then asks the factory for every backend: those
// the build says it contains (NETIO3_EXPECTED_BACKENDS, e.g. "ASYNCMSG LIBFABRIC") must be created,
// every other one must be refused with UnsupportedConfiguration. Exits 1 otherwise.
#include <cstdio>
#include <memory>
#include <set>
#include <sstream>
#include <string>

#include <netio3/EpollEventLoop.hpp>
#include <netio3/Exceptions.hpp>
#include <netio3/Netio3Backend.hpp>

#ifndef NETIO3_EXPECTED_BACKENDS
#error "define NETIO3_EXPECTED_BACKENDS: the backends the installed netio3 must contain"
#endif

namespace {

/// True when the factory does what the build says for `type`; prints what it did.
bool check_backend(netio3::NetworkType type, const char* name, const std::set<std::string>& expected,
                   const std::shared_ptr<netio3::EpollEventLoop>& loop) {
  const bool wanted = expected.contains(name);
  try {
    auto backend = netio3::NetworkBackend::create(type, netio3::NetworkConfig{}, loop);
    std::printf("consumer: created backend %s\n", name);
    if (!wanted) {
      std::printf("consumer: FAILED: %s was created, but the build says it does not contain it\n", name);
    }
    return wanted && backend != nullptr;
  } catch (const netio3::UnsupportedConfiguration& error) {
    std::printf("consumer: factory said for %s: %s\n", name, error.what());
    if (wanted) {
      std::printf("consumer: FAILED: the build says it contains %s\n", name);
    }
    return !wanted;
  }
}

} // namespace

int main() {
  auto loop = std::make_shared<netio3::EpollEventLoop>();
  int ticks = 0;
  auto timer = loop->create_timer([&] {
    if (++ticks == 3) {
      loop->stop();
    }
  });
  timer.start(std::chrono::milliseconds{1});
  loop->run_for(std::chrono::milliseconds{10000});
  timer.reset();
  std::printf("consumer: event loop ran, timer fired %d times\n", ticks);

  std::set<std::string> expected;
  std::istringstream words{NETIO3_EXPECTED_BACKENDS};
  for (std::string word; words >> word;) {
    expected.insert(word);
  }
  bool ok = ticks == 3;
  ok = check_backend(netio3::NetworkType::ASYNCMSG, "ASYNCMSG", expected, loop) && ok;
  ok = check_backend(netio3::NetworkType::LIBFABRIC, "LIBFABRIC", expected, loop) && ok;
  for (const auto& name : expected) {
    if (name != "ASYNCMSG" && name != "LIBFABRIC") {
      std::printf("consumer: FAILED: unknown backend name %s in NETIO3_EXPECTED_BACKENDS\n", name.c_str());
      ok = false;
    }
  }
  return ok ? 0 : 1;
}
