#pragma once

/// @file
/// `NetioSubscriber`: subscribes to tags of `NetioPublisher`s and receives their messages.
///
/// Contract: `subscribe` and `unsubscribe` validate their arguments and return; the loop thread
/// does the work and reports the outcome by callback (never inside the call). Messages of a tag
/// arrive on the loop thread from its acknowledgement until its unsubscription is acknowledged;
/// their bytes are valid during the callback only.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "netio3/BaseEventLoop.hpp"
#include "netio3/EndPointAddress.hpp"
#include "netio3/NetioReceiver.hpp"
#include "netio3/NetworkConfig.hpp"
#include "netio3/Types.hpp"

namespace netio3 {

/// Configuration of a `NetioSubscriber`, fixed at construction.
struct NetioSubscriberConfig {
  /// The backend of the data connections (the publisher's must be the same).
  NetworkType backend_type{NetworkType::ASYNCMSG};
  /// Its transport.
  NetworkMode backend_mode{NetworkMode::TCP};
  /// `SAFE`: `subscribe`/`unsubscribe` from any thread. `UNSAFE`: one thread at a time (normally
  /// the loop's, or any thread while the loop does not run).
  ThreadSafetyModel thread_safety{ThreadSafetyModel::SAFE};
  /// libfabric provider (see `NetworkConfig::provider`).
  std::string provider{};
  /// How long connecting to a publisher may take before it is reported lost.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds{10}};
  /// How long a silent publisher (control and data connection) may go unnoticed.
  std::chrono::milliseconds peer_timeout{std::chrono::seconds{10}};

  /// Each message of a subscribed tag: its tag, payload (valid during the call only) and status.
  /// Not called when `on_buffer_cb` is set.
  OnTaggedDataCb on_data_cb{};
  /// Each data buffer as received, undecoded, instead of `on_data_cb` (see `BufferFormatter`).
  /// Such a program sees every tag the buffer holds; the unsubscribe guarantee is then its own.
  OnBufferCb on_buffer_cb{};
  /// The publisher acknowledged the subscription: from here on every message of `tag` it
  /// publishes arrives (or the publisher is reported lost).
  std::function<void(std::uint64_t tag, const EndPointAddress& publisher)> on_subscribed_cb{};
  /// The publisher acknowledged the unsubscription. Nothing of `tag` from this publisher arrives
  /// after it until it is subscribed again.
  std::function<void(std::uint64_t tag, const EndPointAddress& publisher)> on_unsubscribed_cb{};
  /// The publisher refused a subscription (too many tags or subscribers, buffers too small for
  /// its messages...); `reason` says why. The tag is not subscribed.
  std::function<void(std::uint64_t tag, const EndPointAddress& publisher, const std::string& reason)>
      on_subscription_refused_cb{};
  /// The publisher is gone (closed, killed, unreachable, link cut) or could not be reached;
  /// `tags` are the tags that were subscribed or requested from it. They are no longer subscribed;
  /// `subscribe` may be called again (a new connection is made).
  std::function<void(const EndPointAddress& publisher, const std::vector<std::uint64_t>& tags)> on_publisher_lost_cb{};
};

/// Subscribes to tags of publishers and receives their messages, on the loop thread.
///
/// One control connection and one data connection per publisher, whatever the number of tags.
/// Per tag, messages arrive in publish order, exactly once, or the publisher is reported lost.
///
/// Calls are asynchronous: they validate their arguments and return; the work is done by the loop
/// thread and the outcome arrives as a callback (never inside the call). Destruction unsubscribes
/// from everything (best effort: the requests are written if the socket takes them) and closes
/// every connection without callbacks; it must not happen inside one of the subscriber's
/// callbacks, and the loop must outlive the subscriber.
class NetioSubscriber {
public:
  /// Creates a subscriber whose data listeners listen on `local_ip` ("0.0.0.0": every interface;
  /// the publisher is then told the address of the interface that reaches it).
  /// @throws InvalidEndpointAddress if `local_ip` is not a valid address
  /// @throws std::invalid_argument if `loop` is null or neither data callback is set
  NetioSubscriber(const NetioSubscriberConfig& config, std::shared_ptr<BaseEventLoop> loop,
                  const std::string& local_ip = "0.0.0.0");
  ~NetioSubscriber();
  NetioSubscriber(const NetioSubscriber&) = delete;
  NetioSubscriber& operator=(const NetioSubscriber&) = delete;
  NetioSubscriber(NetioSubscriber&&) = delete;
  NetioSubscriber& operator=(NetioSubscriber&&) = delete;

  /// Asks `publisher` for the messages of `tag`. The first subscription to a publisher connects to
  /// it and opens the data listener with `params` (its `buf_size` must hold the publisher's
  /// buffers); later ones reuse both and ignore `params`. The outcome arrives as
  /// `on_subscribed_cb`, `on_subscription_refused_cb` or `on_publisher_lost_cb`.
  /// @return OK, or NO_RESOURCES when too many requests wait to be sent (retry later)
  /// @throws InvalidEndpointAddress if `publisher` does not resolve
  /// @throws FailedOpenListenEndpoint if the data listener cannot be opened
  NetioStatus subscribe(std::uint64_t tag, const EndPointAddress& publisher, const ConnectionParametersRecv& params);

  /// Asks `publisher` to stop sending `tag`. The loop thread stops delivering messages of `tag`
  /// from it when it sends the request (before the acknowledgement can arrive), so nothing of
  /// `tag` arrives after `on_unsubscribed_cb`. A tag that is not subscribed is acknowledged all
  /// the same.
  /// @return OK, or NO_RESOURCES when too many requests wait to be sent (retry later)
  NetioStatus unsubscribe(std::uint64_t tag, const EndPointAddress& publisher);

private:
  class Impl;
  std::unique_ptr<Impl> m_impl;
};

} // namespace netio3
