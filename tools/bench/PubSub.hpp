#pragma once

// `netio3-bench pubsub`: NetioPublisher -> NetioSubscriber throughput (messages delivered per
// second, summed over the subscribers) and the one-way time of a lone message, with heap
// allocations per message on both sides.
//
// Roles (as for `run`/`server`/`client`): `--role run` (the default) publishes from this process
// and starts the subscribers as child processes on loopback; `--role publisher` and
// `--role subscriber` run one side each, also on two hosts. The publisher announces each run with a
// hello on the first tag (what the subscribers check), publishes, then an end on every tag (how many
// it published there); each subscriber sends its figures back as one JSON line over a plain TCP
// connection to the report port named in the hello.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "Options.hpp"
#include "netio3/BufferFormatter.hpp"
#include "netio3/FrontendTypes.hpp"

// Only PubSubCommand.cpp defines options: CLI11 takes seconds to parse in every file that includes it.
namespace CLI {
class App;
} // namespace CLI

namespace netio3::bench::pubsub {

enum class Role : std::uint8_t { Run, Publisher, Subscriber };
enum class PubSubTest : std::uint8_t { Throughput = 0, Latency = 1 };

/// Everything `netio3-bench pubsub` can be told.
struct PubSubOptions {
  Role role{Role::Run};
  BackendOptions backend;
  PubSubTest test{PubSubTest::Throughput};
  SendMethod method{SendMethod::BUFFERED};
  std::vector<std::size_t> sizes{64}; ///< Payload bytes per message (the tag travels besides).
  std::uint64_t tags{1};
  std::uint64_t first_tag{1};
  std::size_t subscribers{1};
  std::optional<std::uint64_t> messages; ///< Publishes per size; unset: duration.
  double duration_s{2.0};
  std::size_t buffer_size{std::size_t{64} << 10U}; ///< NetioPublisherConfig::buffersize (at least size + 13).
  std::size_t buffers{64};                         ///< NetioPublisherConfig::nbuffers.
  std::chrono::microseconds flush_interval{1000};
  std::chrono::microseconds latency_gap{500}; ///< Latency test: time between two lone messages.
  double warmup_fraction{0.1};
  std::size_t max_unsent_bytes{std::size_t{8} << 20U};
  std::string listen_host{"127.0.0.1"};
  std::uint16_t listen_port{0};
  std::uint16_t report_port{0};
  std::string connect_host;
  std::uint16_t connect_port{0};
  std::size_t receive_size{std::size_t{64} << 10U}; ///< Subscriber: ConnectionParametersRecv::buf_size.
  std::size_t receive_buffers{64};
  bool json{false};
  bool quiet{false};
};

// --- the benchmark's messages (inside each published payload) -----------------------------------

inline constexpr std::uint16_t kPubSubMagic = 0x5053;
enum class PubSubKind : std::uint8_t { Hello = 1, Data = 2, End = 3 };

/// The first 16 bytes of every payload the benchmark publishes.
struct PubSubHeader {
  std::uint16_t magic{kPubSubMagic};
  PubSubKind kind{PubSubKind::Data};
  std::uint8_t last{0}; ///< End: 1 when no run follows (the subscriber exits after its report).
  std::uint32_t run_id{0};
  std::uint64_t sequence{0}; ///< Data: per tag, from 0. End: data messages published on this tag.
};
static_assert(sizeof(PubSubHeader) == 16);

/// Data messages of the latency test carry the publish time after the header.
inline constexpr std::size_t kMinPayload = sizeof(PubSubHeader);
inline constexpr std::size_t kMinLatencyPayload = sizeof(PubSubHeader) + sizeof(std::int64_t);

/// Body of the hello (published once per run, on the first tag).
struct PubSubHello {
  std::uint64_t message_size{0};
  std::uint64_t expected_messages{0}; ///< Publishes of the run in count mode; 0: duration mode.
  double duration_s{0.0};
  double warmup_fraction{0.1};
  std::uint16_t report_port{0};
  PubSubTest test{PubSubTest::Throughput};
  std::uint8_t reserved[5]{};
};
inline constexpr std::size_t kHelloPayload = sizeof(PubSubHeader) + sizeof(PubSubHello);

/// What one subscriber measured in one run (its report).
struct SubscriberFigures {
  std::uint32_t run_id{0};
  std::uint64_t messages{0};
  std::uint64_t bytes{0};
  std::uint64_t expected{0}; ///< Sum of the publisher's end counts.
  double seconds{0.0};       ///< First data message to the last end.
  std::uint64_t sequence_errors{0};
  std::uint64_t protocol_errors{0};
  std::optional<double> allocations_per_message;
  std::uint64_t latency_samples{0};
  double latency_median_us{0.0};
  double latency_p99_us{0.0};
  double latency_p999_us{0.0};
  double latency_min_us{0.0};
  double latency_max_us{0.0};
  std::string error;
};

[[nodiscard]] nlohmann::json to_json(const SubscriberFigures& figures);
[[nodiscard]] SubscriberFigures subscriber_figures_from_json(const nlohmann::json& json);

/// What the publisher measured in one run.
struct PublisherFigures {
  std::uint64_t messages{0}; ///< Publishes that returned OK (data messages).
  double seconds{0.0};       ///< First publish to the last accepted one.
  std::uint64_t no_resources{0};
  std::uint64_t completions{0}; ///< ZERO_COPY: publish completions seen.
  std::optional<double> allocations_per_message;
};

/// One size's run, as the publisher reports it.
struct PubSubResult {
  std::size_t size{0};
  PublisherFigures publisher;
  std::vector<SubscriberFigures> subscribers;
  std::string error;
  [[nodiscard]] bool all_arrived() const;
};

/// Runs the publisher side: waits for `options.subscribers` subscribers on every tag, then one run
/// per size; returns the results (a failed run ends the series).
/// @param on_listening called with the control address once listening (the run form starts its
///        children there); it may throw to abort.
/// @param check_children called while waiting (the run form reports a child that died).
std::vector<PubSubResult>
run_publisher(const PubSubOptions& options,
              const std::function<void(const std::string& host, std::uint16_t port)>& on_listening,
              const std::function<void()>& check_children);

/// Runs the subscriber side until the publisher's last run is reported; returns the exit code.
int run_subscriber(const PubSubOptions& options);

/// `netio3-bench pubsub`: the subcommand's options and its entry point.
class PubSubCommand {
public:
  /// Adds the `pubsub` subcommand to `app`.
  CLI::App* add_to(CLI::App& app);
  /// Runs the parsed command; returns the exit code.
  int run();

private:
  struct Arguments {
    std::string role{"run"};
    std::string backend{"asyncmsg"};
    std::string provider{"tcp"};
    std::string threads{"unsafe"};
    std::string test{"throughput"};
    std::string method{"buffered"};
    std::string size;
    std::string sizes;
    std::uint64_t tags{1};
    std::uint64_t first_tag{1};
    std::size_t subscribers{1};
    std::uint64_t messages{0};
    double duration{0.0};
    std::string buffer_size{"64k"};
    std::size_t buffers{64};
    std::int64_t flush_interval_us{1000};
    std::int64_t latency_gap_us{500};
    double warmup{0.1};
    std::string max_unsent{"8m"};
    std::string listen{"127.0.0.1:0"};
    std::uint16_t report_port{0};
    std::string connect;
    std::string receive_size{"64k"};
    std::size_t receive_buffers{64};
    bool json{false};
    bool quiet{false};
  };
  [[nodiscard]] PubSubOptions options() const;
  int run_both(PubSubOptions options);

  Arguments m_arguments;
  CLI::App* m_app{nullptr};
};

/// Splits "host:port" or "[v6]:port".
/// @throws std::invalid_argument naming `what` for text without a port
[[nodiscard]] std::pair<std::string, std::uint16_t> split_address(const std::string& text, const char* what,
                                                                  bool allow_port_zero);

} // namespace netio3::bench::pubsub
