// Runs an EpollEventLoop with a timer and a signal, then asks the factory for the TCP backend.
#include <cstdio>
#include <memory>

#include <netio3/EpollEventLoop.hpp>
#include <netio3/Netio3Backend.hpp>

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
  netio3::NetworkConfig config;
  try {
    auto backend = netio3::NetworkBackend::create(netio3::NetworkType::ASYNCMSG, config, loop);
    std::printf("consumer: created backend %s\n", backend ? "ASYNCMSG" : "null");
  } catch (const netio3::NetioException& error) {
    std::printf("consumer: factory said: %s\n", error.what());
  }
  return ticks == 3 ? 0 : 1;
}
