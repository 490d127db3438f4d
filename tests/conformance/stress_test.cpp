// Conformance under load: backpressure with bounded memory, SAFE mode hammered from several
// threads, connection churn without leaks.

#include <atomic>
#include <dirent.h>
#include <mutex>
#include <thread>

#include "conformance/ConformanceFixture.hpp"

namespace netio3::conformance {
namespace {

class Stress : public ConformanceTest {
protected:
  /// Open file descriptors of this process.
  static std::size_t open_descriptors() {
    std::size_t messages = 0;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
      while (const dirent* entry = ::readdir(dir)) {
        messages += entry->d_name[0] != '.' ? 1U : 0U;
      }
      ::closedir(dir);
    }
    return messages;
  }
};

// A receiver that stops reading: the sender gets NO_RESOURCES (never blocks), its memory stays
// bounded however much it tries to send, and once the receiver reads again every accepted message
// arrives, intact and in order, and every key is reported once.
TEST_P(Stress, BackpressureKeepsSenderMemoryBoundedAndLosesNothing) {
  constexpr std::size_t payload = 64U << 10U;
  constexpr std::size_t max_unsent = 1U << 20U;
  // Trying to send this much against a stopped receiver would grow an unbounded sender by as much.
  const std::size_t attempted_volume = std::size_t{256} << 20U;
  // Allowed RSS growth: the unsent limit, pools and allocator slack, far below the attempted volume.
  const std::size_t allowed_growth = std::size_t{48} << 20U;

  Node& receiver = make_node();
  Node& sender = make_node({.configure = [](NetworkConfig& config) { config.max_unsent_bytes = max_unsent; }});
  const EndPointAddress listening = receiver.listen(receive_params(payload, 8));
  ASSERT_TRUE(sender.connect(listening, send_params(payload, 4, nullptr)));
  receiver.recorder().pause_data(true);

  StreamSender stream{sender, listening, 77, {}, payload};
  const std::size_t rss_before = resident_bytes();
  std::size_t backend_refusals = 0;
  std::size_t accepted_bytes = 0;
  const std::size_t attempts = attempted_volume / payload;
  for (std::size_t attempt = 0; attempt < attempts; ++attempt) {
    // Copying sends are the ones an unbounded backend would buffer; buffered ones draw from the
    // pool (a buffered message the backend refused is retried as such).
    const SendMode mode = stream.has_pending_buffer() || attempt % 4 == 3 ? SendMode::Buffered : SendMode::CopySpan;
    const NetioStatus status = stream.try_send(mode, payload);
    if (status == NetioStatus::OK) {
      accepted_bytes += payload;
    } else {
      ASSERT_EQ(status, NetioStatus::NO_RESOURCES) << "attempt " << attempt;
      backend_refusals += stream.last_refusal_was_local() ? 0U : 1U;
    }
    if (attempt % 16 == 15) {
      // Let the loop thread flush what it can (it cannot: the receiver does not read).
      sender.recorder().wait_for_progress(std::chrono::milliseconds{1});
    }
  }
  const std::size_t rss_after = resident_bytes();
  const std::size_t growth = rss_after > rss_before ? rss_after - rss_before : 0;
  EXPECT_GT(backend_refusals, 0U) << "the backend never returned NO_RESOURCES although the receiver stopped reading";
  EXPECT_LT(growth, allowed_growth) << "sender RSS grew by " << (growth >> 20U) << " MiB while "
                                    << (attempted_volume >> 20U) << " MiB were offered and " << (accepted_bytes >> 20U)
                                    << " MiB accepted (max_unsent_bytes " << (max_unsent >> 20U) << " MiB)";
  EXPECT_LT(accepted_bytes, attempted_volume / 2) << "most of the offered data was accepted by a stalled connection";

  receiver.recorder().pause_data(false);
  if (stream.has_pending_buffer()) {
    ASSERT_EQ(stream.send(SendMode::Buffered, payload), NetioStatus::OK) << "the refused buffered message";
  }
  const std::uint64_t expected = stream.sent();
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.stream_progress(77) >= expected; }))
      << "after the receiver resumed, "
      << receiver.recorder().inspect([](const RecorderState& s) { return s.stream_progress(77); }) << " of " << expected
      << " accepted messages arrived in order; data errors:\n"
      << receiver.recorder().data_errors_text();
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
  ASSERT_TRUE(sender.recorder().wait([&](const RecorderState& s) { return keys_reported(s) >= stream.keyed_sends(); }));
  const auto problems = sender.recorder().inspect(
      [&](const RecorderState& s) { return key_problems(s, stream.zero_copy_keys(), stream.copy_keys(), false); });
  EXPECT_TRUE(problems.empty()) << join_lines(problems);
}

// SAFE mode: four threads send in every mode (two per endpoint) while the loop runs and the main
// thread opens and closes another endpoint and reads pool levels; every stream arrives complete and
// in order, every key is reported once. Run under the thread sanitizer in CI.
TEST_P(Stress, SafeModeSendsFromFourThreads) {
  constexpr std::size_t threads = 4;
  constexpr std::size_t max_payload = 2048;
  constexpr std::size_t slots_per_thread = 64;
  constexpr std::size_t pool = 8;
  const std::size_t per_thread = count(5000, 100);

  Node& receiver = make_node();
  Node& sender = make_node({.thread_safety = ThreadSafetyModel::SAFE});
  const std::array<EndPointAddress, 2> destinations{receiver.listen(receive_params(max_payload)),
                                                    receiver.listen(receive_params(max_payload))};
  const EndPointAddress churn_destination = receiver.listen(receive_params(max_payload));
  std::array<AlignedMemory*, 2> regions{};
  for (std::size_t e = 0; e < destinations.size(); ++e) {
    regions[e] = &make_region(2 * slots_per_thread * max_payload);
    ASSERT_TRUE(sender.connect(destinations[e], send_params(max_payload, pool, regions[e])));
  }
  std::vector<std::unique_ptr<StreamSender>> streams;
  for (std::size_t t = 0; t < threads; ++t) {
    const std::size_t e = t % 2;
    const std::size_t part = slots_per_thread * max_payload;
    streams.push_back(std::make_unique<StreamSender>(sender, destinations[e], static_cast<std::uint32_t>(200 + t),
                                                     regions[e]->span().subspan((t / 2) * part, part), max_payload));
  }

  std::mutex errors_mutex;
  std::vector<std::string> errors;
  std::atomic<std::size_t> finished{0};
  std::vector<std::thread> workers;
  for (std::size_t t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      StreamSender& stream = *streams[t];
      try {
        for (std::uint64_t seq = 0; seq < per_thread; ++seq) {
          const SendMode mode = all_send_modes[(seq + t) % all_send_modes.size()];
          const NetioStatus status = stream.send(mode, (seq * 31U + t) % max_payload);
          if (status != NetioStatus::OK) {
            std::lock_guard lock{errors_mutex};
            errors.push_back("thread " + std::to_string(t) + ": " + std::string{to_string(mode)} + " message " +
                             std::to_string(seq) + " returned " + std::string{to_string(status)});
            break;
          }
        }
      } catch (const std::exception& error) {
        std::lock_guard lock{errors_mutex};
        errors.push_back("thread " + std::to_string(t) + ": " + error.what());
      }
      finished.fetch_add(1);
    });
  }
  // Meanwhile, set-up calls and pool queries from this thread.
  std::size_t churn_cycles = 0;
  while (finished.load() < threads && churn_cycles < 50) {
    for (const auto& destination : destinations) {
      EXPECT_LE(sender.backend().get_num_available_buffers(destination), pool);
    }
    if (!sender.connect(churn_destination, ConnectionParameters{})) {
      ADD_FAILURE() << "churn connection " << churn_cycles << " was not established";
      break;
    }
    sender.backend().close_send_endpoint(churn_destination);
    ++churn_cycles;
  }
  for (auto& worker : workers) {
    worker.join();
  }
  ASSERT_TRUE(errors.empty()) << join_lines(errors);
  EXPECT_TRUE(sender.wait_closed(churn_destination, churn_cycles));

  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) {
    return std::all_of(streams.begin(), streams.end(),
                       [&](const auto& stream) { return s.stream_progress(stream->stream()) >= per_thread; });
  })) << "not every stream arrived complete; data errors:\n"
      << receiver.recorder().data_errors_text();
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
  std::vector<std::uint64_t> zero_copy;
  std::vector<std::uint64_t> copy;
  for (const auto& stream : streams) {
    zero_copy.insert(zero_copy.end(), stream->zero_copy_keys().begin(), stream->zero_copy_keys().end());
    copy.insert(copy.end(), stream->copy_keys().begin(), stream->copy_keys().end());
  }
  ASSERT_TRUE(sender.recorder().wait(
      [&](const RecorderState& s) { return keys_reported(s) >= zero_copy.size() + copy.size(); }));
  const auto problems =
      sender.recorder().inspect([&](const RecorderState& s) { return key_problems(s, zero_copy, copy, false); });
  EXPECT_TRUE(problems.empty()) << join_lines(problems);
}

// Opening and closing connections again and again leaks no file descriptors, and every cycle is
// reported at both ends.
TEST_P(Stress, ConnectionChurnLeaksNoDescriptors) {
  const std::size_t rounds = count(100, 10);
  Node& receiver = make_node();
  Node& sender = make_node();
  const EndPointAddress listening = receiver.listen(receive_params(1024, 4));
  AlignedMemory& region = make_region(4 * 1024);
  const ConnectionParameters params = send_params(1024, 2, &region);

  auto cycle = [&](std::size_t round) {
    ASSERT_TRUE(sender.connect(listening, params)) << "round " << round;
    StreamSender stream{sender, listening, static_cast<std::uint32_t>(1000 + round), region.span(), 1024};
    ASSERT_EQ(stream.send(SendMode::CopySpan, 100), NetioStatus::OK);
    ASSERT_EQ(stream.send(SendMode::Buffered, 100), NetioStatus::OK);
    ASSERT_EQ(stream.send(SendMode::ZeroCopySpan, 100), NetioStatus::OK);
    ASSERT_TRUE(receiver.recorder().wait(
        [&](const RecorderState& s) { return s.stream_progress(static_cast<std::uint32_t>(1000 + round)) >= 3; }));
    sender.backend().close_send_endpoint(listening);
    ASSERT_TRUE(sender.wait_closed(listening, round + 1));
    ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.closed.size() >= round + 1; }))
        << "the receiver did not report the close of round " << round;
  };
  cycle(0); // warm-up: lazily created descriptors (pools, provider internals) exist from here on
  if (HasFatalFailure()) {
    return;
  }
  const std::size_t descriptors_before = open_descriptors();
  for (std::size_t round = 1; round <= rounds; ++round) {
    cycle(round);
    if (HasFatalFailure()) {
      return;
    }
  }
  const std::size_t descriptors_after = open_descriptors();
  EXPECT_LE(descriptors_after, descriptors_before + 4)
      << rounds << " connect/close cycles left " << (descriptors_after - descriptors_before)
      << " more file descriptors open";
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
}

} // namespace

NETIO3_INSTANTIATE_CONFORMANCE(Stress);

} // namespace netio3::conformance
