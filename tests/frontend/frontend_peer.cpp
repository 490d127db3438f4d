// The other process of the frontend's process tests: a publisher or a subscriber that reports on
// standard output, one event per line ("WORD key=value ..."), so that a test can kill it, cut its
// link, and read what it saw.
//
//   frontend_peer publish --backend B [--provider P] --listen IP [--tags N] [--size S] [--rate R]
//       LISTENING port=P; SUBSCRIBERS n=N whenever the count changes; PUBLISHED total=T (10/s)
//   frontend_peer subscribe --backend B [--provider P] --publisher IP --port P --local-ip IP [--tags N]
//       SUBSCRIBED n=N once all are acknowledged; RECEIVED total=T errors=E (10/s); LOST tags=K,
//       then it exits 0; ERROR text=... for every fault its checks find

#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

#include "frontend/FrontendFixture.hpp"

namespace {

using namespace netio3;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string backend{"asyncmsg"};
  std::string provider;
  std::string listen{"127.0.0.1"};
  std::string publisher;
  std::uint16_t port{0};
  std::string local_ip{"127.0.0.1"};
  std::uint64_t tags{8};
  std::size_t size{64};
  std::uint64_t rate{20000};
  std::uint64_t peer_timeout_ms{10000};
};

void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

NetworkType backend_type(const Options& options) {
  return options.backend == "libfabric" ? NetworkType::LIBFABRIC : NetworkType::ASYNCMSG;
}

int publish(const Options& options) {
  auto loop = std::make_shared<EpollEventLoop>();
  std::thread loop_thread{[&] { loop->run(); }};
  NetioPublisherConfig config;
  config.backend_type = backend_type(options);
  config.provider = options.provider;
  config.peer_timeout = std::chrono::milliseconds{options.peer_timeout_ms};
  config.flush_interval = std::chrono::microseconds{200};
  NetioPublisher publisher{config, loop, EndPointAddress{options.listen, 0}};
  say("LISTENING port=" + std::to_string(publisher.address().port()));
  std::vector<std::uint64_t> next(options.tags, 0);
  std::vector<std::uint8_t> payload(std::max<std::size_t>(options.size, 8));
  std::size_t subscribers = 0;
  std::uint64_t total = 0;
  auto report_at = Clock::now();
  const auto pause = std::chrono::nanoseconds{1'000'000'000 / std::max<std::uint64_t>(options.rate / options.tags, 1)};
  for (;;) {
    for (std::uint64_t tag = 0; tag < options.tags; ++tag) {
      frontend_test::fill_payload(payload, tag, next[tag]);
      const NetioPublisherStatus status = publisher.publish(tag, payload);
      if (status == NetioPublisherStatus::OK || status == NetioPublisherStatus::NO_SUBSCRIBERS) {
        ++next[tag]; // a subscriber's sequence starts wherever the publisher is
        total += status == NetioPublisherStatus::OK ? 1 : 0;
      }
    }
    if (publisher.subscriber_count() != subscribers) {
      subscribers = publisher.subscriber_count();
      say("SUBSCRIBERS n=" + std::to_string(subscribers));
    }
    if (Clock::now() >= report_at) {
      say("PUBLISHED total=" + std::to_string(total));
      report_at = Clock::now() + std::chrono::milliseconds{100};
    }
    std::this_thread::sleep_for(pause);
  }
}

int subscribe(const Options& options) {
  auto loop = std::make_shared<EpollEventLoop>();
  std::thread loop_thread{[&] { loop->run(); }};
  frontend_test::Collector collector;
  std::atomic<bool> lost{false};
  NetioSubscriberConfig config;
  config.backend_type = backend_type(options);
  config.provider = options.provider;
  config.peer_timeout = std::chrono::milliseconds{options.peer_timeout_ms};
  config.on_data_cb = [&](std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t status) {
    collector.on_data(tag, data, status);
  };
  config.on_subscribed_cb = [&](std::uint64_t tag, const EndPointAddress&) { collector.on_subscribed(tag); };
  config.on_publisher_lost_cb = [&](const EndPointAddress&, const std::vector<std::uint64_t>& tags) {
    collector.on_lost(tags);
    lost = true;
  };
  NetioSubscriber subscriber{config, loop, options.local_ip};
  const EndPointAddress publisher{options.publisher, options.port};
  for (std::uint64_t tag = 0; tag < options.tags; ++tag) {
    (void)subscriber.subscribe(tag, publisher, {});
  }
  bool all_subscribed = false;
  std::size_t errors_reported = 0;
  for (;;) {
    if (!all_subscribed && collector.wait([&](frontend_test::Collector& c) {
          return c.subscribed_count_unlocked() == options.tags || c.lost_count_unlocked() > 0;
        })) {
      all_subscribed = !lost.load();
      if (all_subscribed) {
        say("SUBSCRIBED n=" + std::to_string(options.tags));
      }
    }
    const std::vector<std::string> errors = collector.errors();
    for (; errors_reported < errors.size(); ++errors_reported) {
      say("ERROR text=" + errors[errors_reported]);
    }
    say("RECEIVED total=" + std::to_string(collector.total()) + " errors=" + std::to_string(errors.size()));
    if (lost.load()) {
      say("LOST tags=" + std::to_string(collector.lost_tags().size()));
      loop->stop();
      loop_thread.join();
      return 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{100});
  }
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"frontend_peer: the other process of the frontend's process tests"};
  app.require_subcommand(1);
  Options options;
  for (CLI::App* command : {app.add_subcommand("publish", "publish tags 0..N-1 round-robin"),
                            app.add_subcommand("subscribe", "subscribe to tags 0..N-1 and check what arrives")}) {
    command->add_option("--backend", options.backend)->check(CLI::IsMember({"asyncmsg", "libfabric"}));
    command->add_option("--provider", options.provider);
    command->add_option("--tags", options.tags)->check(CLI::Range(1, 100000));
    command->add_option("--peer-timeout-ms", options.peer_timeout_ms);
  }
  CLI::App* publish_command = app.get_subcommand("publish");
  publish_command->add_option("--listen", options.listen);
  publish_command->add_option("--size", options.size);
  publish_command->add_option("--rate", options.rate)->check(CLI::Range(1, 100000000));
  CLI::App* subscribe_command = app.get_subcommand("subscribe");
  subscribe_command->add_option("--publisher", options.publisher)->required();
  subscribe_command->add_option("--port", options.port)->required();
  subscribe_command->add_option("--local-ip", options.local_ip);
  CLI11_PARSE(app, argc, argv);
  try {
    return publish_command->parsed() ? publish(options) : subscribe(options);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "frontend_peer: %s\n", error.what());
    return 1;
  }
}
