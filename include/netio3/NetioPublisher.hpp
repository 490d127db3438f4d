#pragma once

/// @file
/// `NetioPublisher`: publishes tagged messages to every subscriber of their tag.
///
/// Contract: `publish` never blocks; it returns `NO_RESOURCES` (nothing sent to anyone: retry)
/// when a subscriber of the tag has no free buffer, so one slow subscriber holds back its tags.
/// `ZERO_COPY` payloads stay the caller's until the `set_on_publish_completed` callback reports
/// their key (once, after every subscriber is done with it). Callbacks run on the loop thread,
/// never inside the call.
///
/// Protocol (docs/frontend.md): a `NetioSubscriber` opens a TCP control connection to the
/// publisher's address and sends subscription requests as JSON lines; the publisher opens one data
/// connection (over the configured backend) to the subscriber's data listener, whatever its number
/// of tags, and acknowledges each request once that connection is established. Every message of a
/// tag published after the acknowledgement of its subscription reaches the subscriber.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "netio3/BaseEventLoop.hpp"
#include "netio3/EndPointAddress.hpp"
#include "netio3/FrontendTypes.hpp"
#include "netio3/Types.hpp"

namespace netio3 {

/// Configuration of a `NetioPublisher`, fixed at construction.
struct NetioPublisherConfig {
  /// The backend of the data connections (subscribers must use the same).
  NetworkType backend_type{NetworkType::ASYNCMSG};
  /// Its transport.
  NetworkMode backend_mode{NetworkMode::TCP};
  /// `SAFE`: `publish` and `flush` from any thread. `UNSAFE`: one thread at a time (normally the
  /// loop's).
  ThreadSafetyModel thread_safety{ThreadSafetyModel::SAFE};
  /// How each message is sent (see `SendMethod`).
  SendMethod method{SendMethod::BUFFERED};
  /// Bytes per buffer (BUFFERED, COPY); the largest payload is `buffersize - 13`. A subscriber
  /// whose receive buffers are smaller is refused.
  std::size_t buffersize{16384};
  /// Buffers per subscriber (BUFFERED, COPY); ZERO_COPY: messages per subscriber that may wait in
  /// the publisher while the backend is full. The bound of what a slow subscriber holds back.
  std::size_t nbuffers{16};
  /// BUFFERED: a buffer is sent at the latest this long after its first message. Zero: only when
  /// full or on `flush()`. Must not be negative.
  std::chrono::microseconds flush_interval{1000};
  /// ZERO_COPY over libfabric: the one region in which every published payload lies.
  std::uint8_t* mr_start{nullptr};
  /// Size of the zero-copy region in bytes.
  std::size_t mr_size{0};
  /// ZERO_COPY: publishes whose completion is outstanding at once; past it `publish` returns
  /// `NO_RESOURCES`.
  std::size_t max_pending_publishes{4096};
  /// Most subscribers at once; further ones are refused with a reason.
  std::size_t max_subscribers{1024};
  /// Most tags one subscriber may hold; further subscriptions are refused with a reason.
  std::size_t max_tags_per_subscriber{std::size_t{1} << 20U};
  /// libfabric provider (see `NetworkConfig::provider`).
  std::string provider{};
  /// See `NetworkConfig::max_unsent_bytes` (per subscriber).
  std::size_t max_unsent_bytes{std::size_t{8} << 20U};
  /// How long opening a subscriber's data connection may take.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds{10}};
  /// How long a silent subscriber (control and data connection) may go unnoticed.
  std::chrono::milliseconds peer_timeout{std::chrono::seconds{10}};
};

/// Publishes messages by 64-bit tag to the subscribers of each tag.
///
/// Tag lookup is O(1) (a hash map; consecutive publishes of one tag skip even that). A subscriber
/// that vanishes (closed, killed, link cut, malformed requests) is removed from every tag and
/// publishing goes on for the others. `publish` never blocks: a subscriber that cannot keep up
/// makes it return `NO_RESOURCES` for its tags once its `nbuffers` are in use, with nothing sent to
/// anyone, so that a retry sends the message exactly once to each subscriber.
///
/// Callbacks run on the loop thread only, never inside the call that caused them. Destruction
/// closes every connection (pending ZERO_COPY publishes are not reported); it must not happen
/// inside one of the publisher's callbacks, and the loop must outlive the publisher.
class NetioPublisher {
public:
  /// Listens on `local_ep` (port 0: a free port) for subscribers and creates the data backend.
  /// @throws InvalidEndpointAddress, FailedOpenListenEndpoint if the control listener fails
  /// @throws UnsupportedConfiguration for a backend this build lacks or invalid settings
  /// @throws std::invalid_argument if `loop` is null
  NetioPublisher(const NetioPublisherConfig& config, std::shared_ptr<BaseEventLoop> loop, EndPointAddress local_ep);
  ~NetioPublisher();
  NetioPublisher(const NetioPublisher&) = delete;
  NetioPublisher& operator=(const NetioPublisher&) = delete;
  NetioPublisher(NetioPublisher&&) = delete;
  NetioPublisher& operator=(NetioPublisher&&) = delete;

  /// The address subscribers connect to (with the real port when 0 was asked for).
  [[nodiscard]] EndPointAddress address() const;

  /// Sends `data` with `tag` and `status` to every subscriber of `tag`, as the configured method
  /// does. ZERO_COPY: `data` must stay untouched until the completion callback reports `key`
  /// (once, after the sends to all subscribers are done or their connections closed).
  /// All or nothing: on any status but OK nothing was sent to any subscriber.
  NetioPublisherStatus publish(std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t status = 0,
                               std::uint64_t key = 0);

  /// BUFFERED: hands every partly filled buffer to the backend now (what the backend cannot take
  /// yet follows on the flush timer).
  void flush();

  /// ZERO_COPY: called on the loop thread once per publish that returned OK, when its memory is
  /// the caller's again. Set it before publishing.
  void set_on_publish_completed(std::function<void(std::uint64_t key)> callback);

  /// Number of subscribers with an established data connection.
  [[nodiscard]] std::size_t subscriber_count() const;

  /// Number of subscribers of `tag`.
  [[nodiscard]] std::size_t subscriber_count(std::uint64_t tag) const;

private:
  class Impl;
  std::unique_ptr<Impl> m_impl;
};

} // namespace netio3
