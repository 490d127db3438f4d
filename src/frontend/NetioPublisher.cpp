// NetioPublisher: the control side (subscribers' control connections, the subscription protocol,
// their data connections) on the loop thread, and `publish` with the tag map on any thread.
//
// Two locks, never held the other way round: the control mutex (a std::mutex) serialises the
// loop-side handlers against the destructor; the engine's lock guards everything `publish` reads
// (the tag map, channels, zero-copy slots). Handlers take the control mutex, then briefly the
// engine's lock; `publish` takes only the engine's lock.

#include "netio3/NetioPublisher.hpp"

#include <algorithm>
#include <list>
#include <mutex>
#include <stdexcept>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/Logging.hpp"
#include "core/RunOnLoop.hpp"
#include "frontend/LineConnection.hpp"
#include "frontend/SendEngine.hpp"
#include "frontend/SubscriptionProtocol.hpp"

namespace netio3 {

namespace protocol = detail::subscription;
using detail::Channel;

class NetioPublisher::Impl {
public:
  Impl(const NetioPublisherConfig& config, std::shared_ptr<BaseEventLoop> loop, const EndPointAddress& local);
  ~Impl();
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  Impl(Impl&&) = delete;
  Impl& operator=(Impl&&) = delete;

  [[nodiscard]] EndPointAddress address() const { return m_listener->address(); }
  NetioPublisherStatus publish(std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t status,
                               std::uint64_t key);
  void flush() {
    const std::lock_guard lock{m_engine->mutex()};
    m_engine->flush_all();
  }
  void set_on_publish_completed(std::function<void(std::uint64_t key)> callback) {
    const std::lock_guard lock{m_engine->mutex()};
    m_on_completed = std::move(callback);
  }
  [[nodiscard]] std::size_t subscriber_count() {
    const std::lock_guard lock{m_engine->mutex()};
    return m_established_subscribers;
  }
  [[nodiscard]] std::size_t subscriber_count(std::uint64_t tag) {
    const std::lock_guard lock{m_engine->mutex()};
    const auto found = m_tags.find(tag);
    return found == m_tags.end() ? 0 : found->second.size();
  }

private:
  /// One subscriber: its control connection and, once it said hello, its data connection.
  struct Subscriber {
    std::unique_ptr<detail::LineConnection> control;
    EndPointAddress peer;                        // of the control connection, for the log
    std::optional<EndPointAddress> data_address; // set by hello
    bool data_open{false};                       // the engine has a channel for data_address
    Channel* channel{nullptr};                   // set once established (engine lock)
    std::vector<std::uint64_t> waiting;          // subscriptions before the data connection is up
    std::unordered_set<std::uint64_t> tags;      // subscribed (loop thread)
    bool dropped{false};
  };
  using Subscribers = std::list<Subscriber>;

  // Control side (loop thread, control mutex held).
  void accept(int fd, const EndPointAddress& peer);
  void on_line(Subscriber& subscriber, std::string_view line);
  void on_hello(Subscriber& subscriber, const protocol::Hello& hello);
  void on_subscribe(Subscriber& subscriber, std::uint64_t tag);
  void on_unsubscribe(Subscriber& subscriber, std::uint64_t tag);
  void refuse_connection(Subscriber& subscriber, const std::string& reason);
  void drop(Subscriber& subscriber, const std::string& reason);
  void reap();
  void add_tag(Subscriber& subscriber, std::uint64_t tag);   // engine lock held
  void remove_tags(Subscriber& subscriber);                  // engine lock held
  void remove_from_tag(std::uint64_t tag, Channel* channel); // engine lock held
  Subscriber* by_data_address(const EndPointAddress& address);

  // Engine events.
  void on_established(const EndPointAddress& address);
  void on_closed(const EndPointAddress& address, const std::vector<std::uint64_t>& keys);
  void on_refused(const EndPointAddress& address);
  void on_send_completed(std::uint64_t slot);
  void on_erasing(Channel& channel);

  /// `publish` past its fast path (takes the engine's lock).
  [[gnu::noinline]] NetioPublisherStatus publish_locked(std::uint64_t tag, std::span<const std::uint8_t> data,
                                                        std::uint8_t status, std::uint64_t key);

  // Zero-copy publishes (engine lock held).
  /// One subscriber's send of slot `slot` is over; returns true when it was the last.
  bool finish_send(std::uint64_t slot, std::uint64_t& user_key);
  void report_completions(const std::vector<std::uint64_t>& user_keys);
  NetioPublisherStatus publish_zero_copy(const std::vector<Channel*>& channels, std::uint64_t tag,
                                         std::span<const std::uint8_t> data, std::uint8_t status, std::uint64_t key);

  NetioPublisherConfig m_config;
  std::shared_ptr<BaseEventLoop> m_loop;

  std::mutex m_control_mutex;
  bool m_shutting_down{false}; // control mutex
  Subscribers m_subscribers;   // control mutex
  std::size_t m_control_connections{0};

  // Engine lock.
  std::unordered_map<std::uint64_t, std::vector<Channel*>> m_tags;
  std::uint64_t m_cached_tag{0};
  std::vector<Channel*>* m_cached_channels{nullptr}; // the entry of m_cached_tag, when there is one
  std::size_t m_established_subscribers{0};
  struct Slot {
    std::uint64_t user_key{0};
    std::size_t remaining{0};
  };
  std::vector<Slot> m_slots;
  std::vector<std::uint64_t> m_free_slots;
  std::vector<std::uint64_t> m_deferred_completions; // finished inside publish: reported from the loop
  std::function<void(std::uint64_t)> m_on_completed;

  EventSignalHandle m_reaper; // deferred work: destroying dropped subscribers, deferred completions
  std::unique_ptr<detail::SendEngine> m_engine;
  std::unique_ptr<detail::LineListener> m_listener;
};

NetioPublisher::Impl::Impl(const NetioPublisherConfig& config, std::shared_ptr<BaseEventLoop> loop,
                           const EndPointAddress& local)
  : m_config{config}, m_loop{std::move(loop)} {
  if (!m_loop) {
    throw std::invalid_argument("NetioPublisher: the event loop must not be null");
  }
  if (m_config.method == SendMethod::ZERO_COPY) {
    if (m_config.max_pending_publishes == 0) {
      throw UnsupportedConfiguration("NetioPublisher: max_pending_publishes must be at least 1 for ZERO_COPY");
    }
    m_slots.resize(m_config.max_pending_publishes);
    m_free_slots.reserve(m_config.max_pending_publishes);
    for (std::size_t slot = m_config.max_pending_publishes; slot > 0; --slot) {
      m_free_slots.push_back(slot - 1);
    }
    m_deferred_completions.reserve(m_config.max_pending_publishes);
  }
  detail::SendEngineEvents events;
  events.established = [this](const EndPointAddress& address) { on_established(address); };
  events.closed = [this](const EndPointAddress& address, const std::vector<std::uint64_t>& keys) {
    on_closed(address, keys);
  };
  events.refused = [this](const EndPointAddress& address) { on_refused(address); };
  events.send_completed = [this](const EndPointAddress&, std::uint64_t slot) { on_send_completed(slot); };
  events.erasing = [this](Channel& channel) { on_erasing(channel); };
  m_reaper = m_loop->create_signal([this] { reap(); });
  // Up to nbuffers zero-copy sends per subscriber may wait: that makes a fan-out all-or-nothing.
  m_engine = std::make_unique<detail::SendEngine>(
      detail::make_engine_config(m_config, "NetioPublisher", std::max<std::size_t>(m_config.nbuffers, 1)), m_loop,
      std::move(events));
  m_listener = std::make_unique<detail::LineListener>(
      m_loop, local, [this](int fd, const EndPointAddress& peer) { accept(fd, peer); });
}

NetioPublisher::Impl::~Impl() {
  {
    const std::lock_guard lock{m_control_mutex};
    m_shutting_down = true;
  }
  m_engine->shut_down();
  m_reaper.reset();
  m_listener.reset();
  // Handlers that still run see m_shutting_down and return. The control connections' state
  // changes on the loop thread, so they are closed there.
  detail::run_on_loop_thread(m_loop, [this] {
    for (Subscriber& subscriber : m_subscribers) {
      if (subscriber.control) {
        subscriber.control->close();
      }
    }
  });
  m_engine.reset();
}

// --- publish ------------------------------------------------------------------------------------

NetioPublisherStatus NetioPublisher::Impl::publish(std::uint64_t tag, std::span<const std::uint8_t> data,
                                                   std::uint8_t status, std::uint64_t key) {
  if (data.data() == nullptr && !data.empty()) {
    return NetioPublisherStatus::INVALID_ARGUMENT;
  }
  {
    // The common case, kept short (no call, few registers): the tag of the previous publish, one
    // subscriber, room in its current buffer (BUFFERED; append_in_place refuses anything else and
    // then has changed nothing). Everything else takes the lock again in publish_locked.
    detail::SendEngine& engine = *m_engine;
    const detail::InlineLock lock{engine.mutex()};
    if (m_cached_channels != nullptr && m_cached_tag == tag && m_cached_channels->size() == 1 &&
        data.size() <= engine.max_buffered_payload() &&
        engine.append_in_place(*m_cached_channels->front(), tag, data, status)) {
      return NetioPublisherStatus::OK;
    }
  }
  return publish_locked(tag, data, status, key);
}

NetioPublisherStatus NetioPublisher::Impl::publish_locked(std::uint64_t tag, std::span<const std::uint8_t> data,
                                                          std::uint8_t status, std::uint64_t key) {
  detail::SendEngine& engine = *m_engine;
  const std::lock_guard lock{engine.mutex()};
  if (m_cached_channels == nullptr || m_cached_tag != tag) {
    const auto found = m_tags.find(tag);
    if (found == m_tags.end()) {
      return NetioPublisherStatus::NO_SUBSCRIBERS;
    }
    m_cached_tag = tag;
    m_cached_channels = &found->second;
  }
  const std::vector<Channel*>& channels = *m_cached_channels;
  if (m_config.method == SendMethod::ZERO_COPY) {
    return publish_zero_copy(channels, tag, data, status, key);
  }
  if (data.size() > m_engine->max_buffered_payload()) {
    return NetioPublisherStatus::MESSAGE_TOO_LARGE;
  }
  if (channels.size() == 1) {
    // One subscriber: all or nothing is this channel's reserve, so reserve and append are one step.
    Channel& channel = *channels.front();
    if (engine.append_in_place(channel, tag, data, status)) {
      return NetioPublisherStatus::OK;
    }
    const NetioStatus reserved = engine.reserve(channel, tag, data.size(), status);
    if (reserved != NetioStatus::OK) {
      // FAILED: a broken channel is a subscriber on its way out.
      return reserved == NetioStatus::NO_RESOURCES ? NetioPublisherStatus::NO_RESOURCES
                                                   : NetioPublisherStatus::NO_SUBSCRIBERS;
    }
    m_engine->append(channel, tag, data, status);
    return NetioPublisherStatus::OK;
  }
  // All or nothing: room in every subscriber's buffer first, then the copies.
  bool any = false;
  for (Channel* channel : channels) {
    const NetioStatus reserved = engine.reserve(*channel, tag, data.size(), status);
    if (reserved == NetioStatus::NO_RESOURCES) {
      return NetioPublisherStatus::NO_RESOURCES;
    }
    any = any || reserved == NetioStatus::OK; // a broken channel (FAILED) is a subscriber on its way out
  }
  if (!any) {
    return NetioPublisherStatus::NO_SUBSCRIBERS;
  }
  for (Channel* channel : channels) {
    if (!channel->broken && channel->current != nullptr && !engine.append_in_place(*channel, tag, data, status)) {
      engine.append(*channel, tag, data, status); // COPY
    }
  }
  return NetioPublisherStatus::OK;
}

NetioPublisherStatus NetioPublisher::Impl::publish_zero_copy(const std::vector<Channel*>& channels, std::uint64_t tag,
                                                             std::span<const std::uint8_t> data, std::uint8_t status,
                                                             std::uint64_t key) {
  if (data.size() > BufferFormatter::max_payload_size) {
    return NetioPublisherStatus::MESSAGE_TOO_LARGE;
  }
  const auto start = reinterpret_cast<std::uintptr_t>(data.data());
  const auto region = reinterpret_cast<std::uintptr_t>(m_config.mr_start);
  if (m_config.backend_type == NetworkType::LIBFABRIC && !data.empty() &&
      (start < region || start - region > m_config.mr_size || data.size() > m_config.mr_size - (start - region))) {
    return NetioPublisherStatus::OUTSIDE_REGISTERED_REGION;
  }
  const std::size_t message_size = BufferFormatter::max_overhead + data.size();
  std::size_t sends = 0;
  for (const Channel* channel : channels) {
    if (channel->broken) {
      continue;
    }
    if (message_size > channel->receive_limit) {
      return NetioPublisherStatus::MESSAGE_TOO_LARGE;
    }
    if (!m_engine->can_take_zero_copy(*channel)) {
      return NetioPublisherStatus::NO_RESOURCES;
    }
    ++sends;
  }
  if (sends == 0) {
    return NetioPublisherStatus::NO_SUBSCRIBERS;
  }
  if (m_free_slots.empty()) {
    return NetioPublisherStatus::NO_RESOURCES;
  }
  const std::uint64_t slot = m_free_slots.back();
  m_free_slots.pop_back();
  m_slots[slot] = Slot{key, sends};
  for (Channel* channel : channels) {
    if (channel->broken) {
      continue;
    }
    if (m_engine->send_zero_copy(*channel, tag, data, status, slot) != NetioStatus::OK) {
      // Refused for good by this subscriber's backend: its part is over.
      std::uint64_t user_key = 0;
      if (finish_send(slot, user_key)) {
        m_deferred_completions.push_back(user_key); // reported from the loop, never inside publish
        m_reaper.fire();
      }
    }
  }
  return NetioPublisherStatus::OK;
}

bool NetioPublisher::Impl::finish_send(std::uint64_t slot, std::uint64_t& user_key) {
  if (slot >= m_slots.size() || m_slots[slot].remaining == 0) {
    NETIO3_LOG_ERROR("NetioPublisher: a completion for zero-copy slot {} that has none outstanding", slot);
    return false;
  }
  if (--m_slots[slot].remaining > 0) {
    return false;
  }
  user_key = m_slots[slot].user_key;
  m_free_slots.push_back(slot);
  return true;
}

void NetioPublisher::Impl::report_completions(const std::vector<std::uint64_t>& user_keys) {
  std::function<void(std::uint64_t)> callback;
  {
    const std::lock_guard lock{m_engine->mutex()};
    callback = m_on_completed;
  }
  if (!callback) {
    return;
  }
  for (const std::uint64_t user_key : user_keys) {
    try {
      callback(user_key);
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("NetioPublisher: the publish-completed callback threw: {}", error.what());
    }
  }
}

void NetioPublisher::Impl::on_send_completed(std::uint64_t slot) {
  std::uint64_t user_key = 0;
  std::function<void(std::uint64_t)> callback;
  {
    const std::lock_guard lock{m_engine->mutex()};
    if (!finish_send(slot, user_key)) {
      return;
    }
    callback = m_on_completed;
  }
  if (callback) {
    try {
      callback(user_key);
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("NetioPublisher: the publish-completed callback threw: {}", error.what());
    }
  }
}

// --- control connections ------------------------------------------------------------------------

void NetioPublisher::Impl::accept(int fd, const EndPointAddress& peer) {
  const std::lock_guard lock{m_control_mutex};
  if (m_shutting_down) {
    ::close(fd);
    return;
  }
  Subscriber& subscriber = m_subscribers.emplace_back();
  subscriber.peer = peer;
  detail::LineHandlers handlers;
  handlers.line = [this, &subscriber](std::string_view line) {
    const std::lock_guard handler_lock{m_control_mutex};
    if (!m_shutting_down && !subscriber.dropped) {
      on_line(subscriber, line);
    }
  };
  handlers.closed = [this, &subscriber](const std::string& reason) {
    const std::lock_guard handler_lock{m_control_mutex};
    if (!m_shutting_down) {
      drop(subscriber, "its control connection ended: " + reason);
      m_reaper.fire(); // also when it had been dropped before and only finished now
    }
  };
  detail::LineConnection::Limits limits;
  limits.max_line = protocol::max_line_size;
  limits.peer_timeout = m_config.peer_timeout;
  subscriber.control = std::make_unique<detail::LineConnection>(m_loop, fd, peer, std::move(handlers), limits);
  ++m_control_connections;
  if (m_control_connections > m_config.max_subscribers) {
    refuse_connection(subscriber,
                      "this publisher has its maximum of " + std::to_string(m_config.max_subscribers) + " subscribers");
  }
}

void NetioPublisher::Impl::on_line(Subscriber& subscriber, std::string_view line) {
  protocol::Parsed<protocol::Request> parsed = protocol::parse_request(line);
  if (!parsed.message) {
    refuse_connection(subscriber, "malformed request: " + parsed.error);
    return;
  }
  if (const auto* hello = std::get_if<protocol::Hello>(&*parsed.message)) {
    on_hello(subscriber, *hello);
    return;
  }
  if (!subscriber.data_address) {
    refuse_connection(subscriber, "a subscription request before the hello");
    return;
  }
  if (const auto* subscribe = std::get_if<protocol::Subscribe>(&*parsed.message)) {
    on_subscribe(subscriber, subscribe->tag);
  } else {
    on_unsubscribe(subscriber, std::get<protocol::Unsubscribe>(*parsed.message).tag);
  }
}

void NetioPublisher::Impl::on_hello(Subscriber& subscriber, const protocol::Hello& hello) {
  if (subscriber.data_address) {
    refuse_connection(subscriber, "a second hello");
    return;
  }
  if (m_config.method != SendMethod::ZERO_COPY && hello.receive_limit < m_config.buffersize) {
    refuse_connection(subscriber, "its data listener accepts messages of up to " + std::to_string(hello.receive_limit) +
                                      " bytes, but this publisher sends buffers of " +
                                      std::to_string(m_config.buffersize) +
                                      " bytes (subscribe with ConnectionParametersRecv::buf_size >= buffersize)");
    return;
  }
  const EndPointAddress data_address{hello.data_host, hello.data_port};
  if (by_data_address(data_address) != nullptr) {
    refuse_connection(subscriber, "another subscriber has the data address " + data_address.to_string());
    return;
  }
  subscriber.data_address = data_address;
  try {
    m_engine->open(data_address, hello.receive_limit, &subscriber);
    subscriber.data_open = true;
  } catch (const std::exception& error) {
    refuse_connection(subscriber,
                      "cannot open the data connection to " + data_address.to_string() + ": " + error.what());
  }
}

void NetioPublisher::Impl::on_subscribe(Subscriber& subscriber, std::uint64_t tag) {
  if (subscriber.tags.contains(tag)) {
    subscriber.control->send(protocol::format(protocol::Reply{protocol::Subscribed{tag}}));
    return;
  }
  if (subscriber.tags.size() + subscriber.waiting.size() >= m_config.max_tags_per_subscriber) {
    subscriber.control->send(protocol::format(protocol::Reply{
        protocol::Refused{tag, "this publisher allows at most " + std::to_string(m_config.max_tags_per_subscriber) +
                                   " tags per subscriber"}}));
    return;
  }
  if (subscriber.channel == nullptr) {
    subscriber.waiting.push_back(tag); // acknowledged once the data connection is up
    return;
  }
  {
    const std::lock_guard lock{m_engine->mutex()};
    add_tag(subscriber, tag);
  }
  // After the tag map holds the subscriber: every publish from here on reaches it.
  subscriber.control->send(protocol::format(protocol::Reply{protocol::Subscribed{tag}}));
}

void NetioPublisher::Impl::on_unsubscribe(Subscriber& subscriber, std::uint64_t tag) {
  std::erase(subscriber.waiting, tag);
  if (subscriber.tags.erase(tag) > 0) {
    const std::lock_guard lock{m_engine->mutex()};
    remove_from_tag(tag, subscriber.channel);
  }
  subscriber.control->send(protocol::format(protocol::Reply{protocol::Unsubscribed{tag}}));
}

void NetioPublisher::Impl::remove_from_tag(std::uint64_t tag, Channel* channel) {
  const auto found = m_tags.find(tag);
  if (found == m_tags.end()) {
    return;
  }
  std::erase(found->second, channel);
  if (found->second.empty()) {
    if (m_cached_channels == &found->second) {
      m_cached_channels = nullptr;
    }
    m_tags.erase(found);
  }
}

void NetioPublisher::Impl::add_tag(Subscriber& subscriber, std::uint64_t tag) {
  if (subscriber.tags.insert(tag).second) {
    m_tags[tag].push_back(subscriber.channel);
    m_cached_channels = nullptr; // the map may have rehashed
  }
}

void NetioPublisher::Impl::remove_tags(Subscriber& subscriber) {
  if (subscriber.channel == nullptr) {
    return;
  }
  for (const std::uint64_t tag : subscriber.tags) {
    remove_from_tag(tag, subscriber.channel);
  }
  subscriber.channel = nullptr;
  --m_established_subscribers;
}

void NetioPublisher::Impl::refuse_connection(Subscriber& subscriber, const std::string& reason) {
  NETIO3_LOG_WARNING("NetioPublisher: closing the control connection from {}: {}", subscriber.peer.to_string(), reason);
  if (subscriber.control && subscriber.control->connected()) {
    subscriber.control->finish(protocol::format(protocol::Reply{protocol::Error{reason}}));
  }
  drop(subscriber, reason);
}

void NetioPublisher::Impl::drop(Subscriber& subscriber, const std::string& reason) {
  if (subscriber.dropped) {
    return;
  }
  NETIO3_LOG_INFO("NetioPublisher: dropping subscriber {}: {}", subscriber.peer.to_string(), reason);
  subscriber.dropped = true;
  {
    const std::lock_guard lock{m_engine->mutex()};
    remove_tags(subscriber);
  }
  if (subscriber.control && !subscriber.control->is_finishing()) {
    subscriber.control->close();
  }
  if (subscriber.data_open && subscriber.data_address) {
    try {
      m_engine->close(*subscriber.data_address); // pending keys come back through on_closed
    } catch (const std::exception& error) {
      NETIO3_LOG_DEBUG("NetioPublisher: closing the data connection to {}: {}", subscriber.data_address->to_string(),
                       error.what());
    }
  }
  m_reaper.fire();
}

void NetioPublisher::Impl::reap() {
  std::vector<std::uint64_t> completions;
  {
    const std::lock_guard lock{m_engine->mutex()};
    completions.swap(m_deferred_completions);
    m_deferred_completions.reserve(completions.capacity());
  }
  report_completions(completions);
  const std::lock_guard lock{m_control_mutex};
  if (m_shutting_down) {
    return;
  }
  // A dropped subscriber goes once its data channel is gone (its close reported by the engine).
  std::erase_if(m_subscribers, [this](const Subscriber& subscriber) {
    if (!subscriber.dropped || subscriber.data_open || (subscriber.control && !subscriber.control->is_closed())) {
      return false;
    }
    --m_control_connections;
    return true;
  });
}

NetioPublisher::Impl::Subscriber* NetioPublisher::Impl::by_data_address(const EndPointAddress& address) {
  for (Subscriber& subscriber : m_subscribers) {
    if (subscriber.data_open && subscriber.data_address == address) {
      return &subscriber;
    }
  }
  return nullptr;
}

// --- engine events (loop thread) ----------------------------------------------------------------

void NetioPublisher::Impl::on_established(const EndPointAddress& address) {
  const std::lock_guard control_lock{m_control_mutex};
  Subscriber* subscriber = m_shutting_down ? nullptr : by_data_address(address);
  if (subscriber == nullptr || subscriber->dropped) {
    return;
  }
  std::vector<std::uint64_t> waiting;
  waiting.swap(subscriber->waiting);
  {
    const std::lock_guard lock{m_engine->mutex()};
    subscriber->channel = m_engine->find(address);
    if (subscriber->channel == nullptr) {
      return;
    }
    ++m_established_subscribers;
    for (const std::uint64_t tag : waiting) {
      add_tag(*subscriber, tag);
    }
  }
  for (const std::uint64_t tag : waiting) {
    subscriber->control->send(protocol::format(protocol::Reply{protocol::Subscribed{tag}}));
  }
}

void NetioPublisher::Impl::on_erasing(Channel& channel) {
  // Engine lock held; loop thread (or the thread of a failed open, inside on_hello).
  if (auto* subscriber = static_cast<Subscriber*>(channel.user); subscriber != nullptr) {
    if (subscriber->channel == &channel) {
      remove_tags(*subscriber);
    }
    subscriber->data_open = false;
  }
}

void NetioPublisher::Impl::on_closed(const EndPointAddress& address, const std::vector<std::uint64_t>& keys) {
  std::vector<std::uint64_t> completions;
  {
    const std::lock_guard lock{m_engine->mutex()};
    for (const std::uint64_t slot : keys) {
      std::uint64_t user_key = 0;
      if (finish_send(slot, user_key)) {
        completions.push_back(user_key);
      }
    }
  }
  report_completions(completions);
  const std::lock_guard control_lock{m_control_mutex};
  if (m_shutting_down) {
    return;
  }
  for (Subscriber& subscriber : m_subscribers) {
    if (subscriber.data_address == address && !subscriber.data_open && !subscriber.dropped) {
      drop(subscriber, "its data connection to " + address.to_string() + " closed");
    }
  }
  m_reaper.fire();
}

void NetioPublisher::Impl::on_refused(const EndPointAddress& address) {
  const std::lock_guard control_lock{m_control_mutex};
  if (m_shutting_down) {
    return;
  }
  for (Subscriber& subscriber : m_subscribers) {
    if (subscriber.data_address == address && !subscriber.data_open && !subscriber.dropped) {
      refuse_connection(subscriber, "cannot connect to its data listener " + address.to_string());
    }
  }
  m_reaper.fire();
}

// --- public -------------------------------------------------------------------------------------

// By value as ../shared/frontend.md fixes the signature; only read here.
NetioPublisher::NetioPublisher(const NetioPublisherConfig& config, std::shared_ptr<BaseEventLoop> loop,
                               EndPointAddress local_ep) // NOLINT(performance-unnecessary-value-param)
  : m_impl{std::make_unique<Impl>(config, std::move(loop), local_ep)} {}

NetioPublisher::~NetioPublisher() = default;

EndPointAddress NetioPublisher::address() const {
  return m_impl->address();
}

NetioPublisherStatus NetioPublisher::publish(std::uint64_t tag, std::span<const std::uint8_t> data, std::uint8_t status,
                                             std::uint64_t key) {
  return m_impl->publish(tag, data, status, key);
}

void NetioPublisher::flush() {
  m_impl->flush();
}

void NetioPublisher::set_on_publish_completed(std::function<void(std::uint64_t key)> callback) {
  m_impl->set_on_publish_completed(std::move(callback));
}

std::size_t NetioPublisher::subscriber_count() const {
  return m_impl->subscriber_count();
}

std::size_t NetioPublisher::subscriber_count(std::uint64_t tag) const {
  return m_impl->subscriber_count(tag);
}

} // namespace netio3
