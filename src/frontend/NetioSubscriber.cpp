// NetioSubscriber: one session per publisher (control connection, data receiver, tag states).
//
// Threads: `subscribe`/`unsubscribe` validate, create a session's receiver when needed, and queue a
// command (command mutex); the loop thread applies commands in order (signal), runs the control
// connections and the receivers' callbacks. Session state is the loop thread's (control mutex,
// which the destructor also takes): in particular the set of blocked tags that the data path reads
// without a lock.

#include "netio3/NetioSubscriber.hpp"

#include <algorithm>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <sys/socket.h>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/Logging.hpp"
#include "core/Resolve.hpp"
#include "core/RunOnLoop.hpp"
#include "frontend/LineConnection.hpp"
#include "frontend/SubscriptionProtocol.hpp"

namespace netio3 {

namespace protocol = detail::subscription;

namespace {

/// Requests that may wait for the loop thread at once; past it calls return NO_RESOURCES.
constexpr std::size_t max_queued_commands{std::size_t{1} << 16U};

bool is_unspecified(const std::string& address) {
  return address == "0.0.0.0" || address == "::";
}

} // namespace

class NetioSubscriber::Impl {
public:
  Impl(const NetioSubscriberConfig& config, std::shared_ptr<BaseEventLoop> loop, const std::string& local_ip);
  ~Impl();
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  Impl(Impl&&) = delete;
  Impl& operator=(Impl&&) = delete;

  NetioStatus subscribe(std::uint64_t tag, const EndPointAddress& publisher, const ConnectionParametersRecv& params);
  NetioStatus unsubscribe(std::uint64_t tag, const EndPointAddress& publisher);

private:
  enum class TagState { requested, subscribed, unsubscribing };

  /// Everything about one publisher.
  struct Session {
    EndPointAddress publisher;
    std::string local_ip;        // where the data listener listens
    std::string advertised_host; // the literal told to the publisher; empty: the control connection's local address
    std::uint64_t receive_limit; // of the data listener
    std::unique_ptr<NetioReceiver> receiver;
    // Loop thread only:
    std::unique_ptr<detail::LineConnection> control;
    std::vector<std::string> unsent; // requests made before the control connection is up
    std::unordered_map<std::uint64_t, TagState> tags;
    std::unordered_set<std::uint64_t> blocked; // messages of these tags are dropped
    // The verdict for the tag of the previous message: a buffer holds runs of one tag, so the set
    // is looked up once per run.
    bool verdict_valid{false};
    std::uint64_t verdict_tag{0};
    bool verdict_drop{false};
    EndPointAddress data_listen;
    bool data_connected{false};
    bool lost{false};
  };
  using SessionPointer = std::shared_ptr<Session>;

  struct Command {
    bool subscribe{true};
    std::uint64_t tag{0};
    EndPointAddress publisher;
    SessionPointer session; // null: an unsubscribe from a publisher without a session
  };

  /// Callbacks to the user collected under the control mutex and invoked after it is released.
  using Notices = std::vector<std::function<void()>>;

  /// The live session of `publisher` (or null), and whether the command queue is full.
  SessionPointer find_session(const EndPointAddress& publisher, bool& queue_full);
  SessionPointer create_session(const EndPointAddress& publisher, const ConnectionParametersRecv& params);
  NetioStatus queue(Command command);
  void on_signal();
  void apply(const Command& command, Notices& notices);
  void start_control(Session& session, Notices& notices);
  void on_connected(Session& session);
  void on_reply(Session& session, std::string_view line, Notices& notices);
  void send_request(Session& session, const protocol::Request& request);
  void lose(Session& session, const std::string& reason, Notices& notices);
  void deliver(Notices& notices);
  /// Runs `work(notices)` under the control mutex unless shutting down, then delivers the notices.
  template <typename Work>
  void handle(Work&& work);

  NetioSubscriberConfig m_config;
  std::shared_ptr<BaseEventLoop> m_loop;
  std::string m_local_ip;

  std::mutex m_command_mutex;
  std::vector<Command> m_commands;                                    // command mutex
  std::unordered_map<EndPointAddress, SessionPointer> m_by_publisher; // command mutex: sessions not lost

  std::mutex m_control_mutex;
  bool m_shutting_down{false};            // control mutex
  std::vector<SessionPointer> m_sessions; // control mutex: every session the loop knows
  std::vector<SessionPointer> m_lost;     // control mutex: lost, destroyed by the next signal

  EventSignalHandle m_signal;
};

NetioSubscriber::Impl::Impl(const NetioSubscriberConfig& config, std::shared_ptr<BaseEventLoop> loop,
                            const std::string& local_ip)
  : m_config{config}, m_loop{std::move(loop)}, m_local_ip{local_ip} {
  if (!m_loop) {
    throw std::invalid_argument("NetioSubscriber: the event loop must not be null");
  }
  if (!m_config.on_data_cb && !m_config.on_buffer_cb) {
    throw std::invalid_argument("NetioSubscriber: set on_data_cb or on_buffer_cb: without them every message "
                                "would be dropped");
  }
  (void)EndPointAddress{m_local_ip, 0}; // throws InvalidEndpointAddress naming it
  m_signal = m_loop->create_signal([this] { on_signal(); });
}

NetioSubscriber::Impl::~Impl() {
  {
    const std::lock_guard lock{m_control_mutex};
    m_shutting_down = true;
  }
  m_signal.reset();
  std::vector<SessionPointer> sessions;
  {
    const std::lock_guard lock{m_command_mutex};
    for (auto& [publisher, session] : m_by_publisher) {
      sessions.push_back(session);
    }
    m_by_publisher.clear();
    m_commands.clear();
  }
  sessions.insert(sessions.end(), m_sessions.begin(), m_sessions.end());
  sessions.insert(sessions.end(), m_lost.begin(), m_lost.end());
  for (const SessionPointer& session : sessions) {
    session->receiver.reset(); // waits for its callbacks; afterwards none runs
  }
  // The control connections' state changes on the loop thread (connect attempts, failures), so
  // they are torn down there.
  detail::run_on_loop_thread(m_loop, [&sessions] {
    for (const SessionPointer& session : sessions) {
      if (!session->control) {
        continue;
      }
      session->control->stop_watching();
      if (session->control->connected()) {
        // Best effort: what the socket takes now. The publisher drops us anyway when the
        // connection closes.
        for (const auto& [tag, state] : session->tags) {
          session->control->send(protocol::format(protocol::Request{protocol::Unsubscribe{tag}}));
        }
        (void)session->control->write_now();
      }
      session->control->close();
    }
  });
}

// --- calls from any thread ----------------------------------------------------------------------

NetioSubscriber::Impl::SessionPointer NetioSubscriber::Impl::find_session(const EndPointAddress& publisher,
                                                                          bool& queue_full) {
  const std::lock_guard lock{m_command_mutex};
  queue_full = m_commands.size() >= max_queued_commands;
  const auto found = m_by_publisher.find(publisher);
  return found != m_by_publisher.end() ? found->second : nullptr;
}

NetioStatus NetioSubscriber::Impl::subscribe(std::uint64_t tag, const EndPointAddress& publisher,
                                             const ConnectionParametersRecv& params) {
  bool full = false;
  SessionPointer session = find_session(publisher, full);
  if (full) {
    return NetioStatus::NO_RESOURCES;
  }
  if (!session) {
    // The first subscription to this publisher: its data listener, outside the lock (a backend is
    // created; libfabric may take a while).
    SessionPointer created = create_session(publisher, params);
    const std::lock_guard lock{m_command_mutex};
    auto [entry, inserted] = m_by_publisher.try_emplace(publisher, created);
    session = entry->second; // another thread may have been first: use its session
  }
  return queue(Command{true, tag, publisher, std::move(session)});
}

NetioStatus NetioSubscriber::Impl::unsubscribe(std::uint64_t tag, const EndPointAddress& publisher) {
  bool full = false;
  SessionPointer session = find_session(publisher, full);
  if (full) {
    return NetioStatus::NO_RESOURCES;
  }
  return queue(Command{false, tag, publisher, std::move(session)});
}

NetioSubscriber::Impl::SessionPointer NetioSubscriber::Impl::create_session(const EndPointAddress& publisher,
                                                                            const ConnectionParametersRecv& params) {
  const std::vector<detail::ResolvedAddress> addresses = detail::resolve_all(publisher, false); // throws
  auto session = std::make_shared<Session>();
  session->publisher = publisher;
  // An unspecified IPv4 listener cannot be reached through an IPv6 control connection: listen on
  // "::" (which takes IPv4 too where the system allows it, docs/decisions.md) if any address is IPv6.
  const bool any_ipv6 = std::any_of(addresses.begin(), addresses.end(),
                                    [](const detail::ResolvedAddress& address) { return address.family == AF_INET6; });
  session->local_ip = (m_local_ip == "0.0.0.0" && any_ipv6) ? std::string{"::"} : m_local_ip;
  session->receive_limit = params.buf_size;
  if (!is_unspecified(session->local_ip)) {
    // The publisher accepts a literal only (it must not resolve names on its loop).
    session->advertised_host =
        detail::to_endpoint_address(detail::resolve(EndPointAddress{session->local_ip, 0}, true).get()).address();
  }
  NetioReceiverConfig receiver;
  receiver.backend_type = m_config.backend_type;
  receiver.backend_mode = m_config.backend_mode;
  receiver.thread_safety = m_config.thread_safety;
  receiver.provider = m_config.provider;
  receiver.peer_timeout = m_config.peer_timeout;
  Session* raw = session.get();
  if (m_config.on_buffer_cb) {
    receiver.on_buffer_cb = m_config.on_buffer_cb;
  } else {
    // The data path: loop thread, no lock (`blocked` changes only on the loop thread).
    receiver.on_data_cb = [raw, on_data = m_config.on_data_cb](std::uint64_t tag, std::span<const std::uint8_t> data,
                                                               std::uint8_t status) {
      if (!raw->blocked.empty()) {
        if (!raw->verdict_valid || raw->verdict_tag != tag) {
          raw->verdict_valid = true;
          raw->verdict_tag = tag;
          raw->verdict_drop = raw->blocked.contains(tag);
        }
        if (raw->verdict_drop) {
          return;
        }
      }
      on_data(tag, data, status);
    };
  }
  receiver.on_connection_request_cb = [this, raw](const EndPointAddress& remote) {
    const std::lock_guard lock{m_control_mutex};
    if (m_shutting_down || raw->lost || raw->data_connected) {
      NETIO3_LOG_WARNING("NetioSubscriber: refusing a second data connection from {} for publisher {}",
                         remote.to_string(), raw->publisher.to_string());
      return false;
    }
    return true;
  };
  receiver.on_connection_established_cb = [this, raw](const EndPointAddress&) {
    const std::lock_guard lock{m_control_mutex};
    raw->data_connected = true;
  };
  receiver.on_connection_closed_cb = [this, raw](const EndPointAddress& remote, const std::vector<std::uint64_t>&) {
    handle(
        [&](Notices& notices) { lose(*raw, "its data connection from " + remote.to_string() + " closed", notices); });
  };
  session->receiver = std::make_unique<NetioReceiver>(receiver, m_loop);
  session->data_listen = session->receiver->listen(EndPointAddress{session->local_ip, 0}, params);
  return session;
}

NetioStatus NetioSubscriber::Impl::queue(Command command) {
  bool first = false;
  {
    const std::lock_guard lock{m_command_mutex};
    if (m_commands.size() >= max_queued_commands) {
      return NetioStatus::NO_RESOURCES;
    }
    first = m_commands.empty();
    m_commands.push_back(std::move(command));
  }
  if (first) {
    // Only the first command of a batch wakes the loop (one eventfd write instead of one per
    // subscription: 100,000 tags were 100,000 system calls); the loop takes the whole queue.
    m_signal.fire();
  }
  return NetioStatus::OK;
}

// --- the loop thread ----------------------------------------------------------------------------

template <typename Work>
void NetioSubscriber::Impl::handle(Work&& work) {
  Notices notices;
  {
    const std::lock_guard lock{m_control_mutex};
    if (m_shutting_down) {
      return;
    }
    work(notices);
  }
  deliver(notices);
}

void NetioSubscriber::Impl::deliver(Notices& notices) {
  for (const std::function<void()>& notice : notices) {
    try {
      notice();
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("NetioSubscriber: a callback threw: {}", error.what());
    }
  }
}

void NetioSubscriber::Impl::on_signal() {
  std::vector<Command> commands;
  {
    const std::lock_guard lock{m_command_mutex};
    commands.swap(m_commands);
  }
  std::vector<SessionPointer> lost;
  handle([&](Notices& notices) {
    lost.swap(m_lost); // destroyed below, outside every callback of theirs
    for (const Command& command : commands) {
      apply(command, notices);
    }
  });
  commands.clear(); // may hold the last references of lost sessions
  lost.clear();
}

void NetioSubscriber::Impl::apply(const Command& command, Notices& notices) {
  Session* session = command.session.get();
  if (session == nullptr) {
    // Unsubscribing from a publisher we have nothing with: acknowledged at once.
    if (m_config.on_unsubscribed_cb) {
      notices.emplace_back([callback = m_config.on_unsubscribed_cb, tag = command.tag, publisher = command.publisher] {
        callback(tag, publisher);
      });
    }
    return;
  }
  if (session->lost) {
    if (command.subscribe && m_config.on_publisher_lost_cb) {
      notices.emplace_back([callback = m_config.on_publisher_lost_cb, publisher = command.publisher,
                            tags = std::vector<std::uint64_t>{command.tag}] { callback(publisher, tags); });
    } else if (!command.subscribe && m_config.on_unsubscribed_cb) {
      notices.emplace_back([callback = m_config.on_unsubscribed_cb, tag = command.tag, publisher = command.publisher] {
        callback(tag, publisher);
      });
    }
    return;
  }
  if (!session->control) {
    m_sessions.push_back(command.session);
    start_control(*session, notices);
    if (session->lost) {
      return;
    }
  }
  if (command.subscribe) {
    session->blocked.erase(command.tag);
    session->verdict_valid = false;
    session->tags[command.tag] = TagState::requested;
    send_request(*session, protocol::Subscribe{command.tag});
  } else {
    // Dropped from now on: nothing of the tag reaches the user after the acknowledgement.
    session->blocked.insert(command.tag);
    session->verdict_valid = false;
    session->tags[command.tag] = TagState::unsubscribing;
    send_request(*session, protocol::Unsubscribe{command.tag});
  }
}

void NetioSubscriber::Impl::start_control(Session& session, Notices& notices) {
  detail::LineHandlers handlers;
  handlers.connected = [this, &session] {
    handle([&](Notices& handler_notices) {
      try {
        on_connected(session);
      } catch (const std::exception& error) {
        lose(session, error.what(), handler_notices);
      }
    });
  };
  handlers.line = [this, &session](std::string_view line) {
    handle([&](Notices& handler_notices) { on_reply(session, line, handler_notices); });
  };
  handlers.closed = [this, &session](const std::string& reason) {
    handle(
        [&](Notices& handler_notices) { lose(session, "its control connection ended: " + reason, handler_notices); });
  };
  detail::LineConnection::Limits limits;
  limits.max_line = protocol::max_line_size;
  limits.peer_timeout = m_config.peer_timeout;
  // Requests wait here while the publisher reads them: 2^20 tags (a publisher's default limit)
  // are about 35 MB of lines.
  limits.max_output = std::size_t{64} << 20U;
  try {
    session.control = std::make_unique<detail::LineConnection>(m_loop, session.publisher, std::move(handlers), limits,
                                                               m_config.connect_timeout);
  } catch (const std::exception& error) {
    lose(session, std::string{"cannot connect: "} + error.what(), notices);
  }
}

void NetioSubscriber::Impl::on_connected(Session& session) {
  std::string data_host = session.advertised_host;
  if (data_host.empty()) {
    data_host = session.control->local_address().address(); // the interface that reaches the publisher
  }
  session.control->send(protocol::format(
      protocol::Request{protocol::Hello{data_host, session.data_listen.port(), session.receive_limit}}));
  for (const std::string& line : session.unsent) {
    session.control->send(line);
  }
  session.unsent.clear();
}

void NetioSubscriber::Impl::send_request(Session& session, const protocol::Request& request) {
  std::string line = protocol::format(request);
  if (session.control->connected()) {
    session.control->send(line);
  } else {
    session.unsent.push_back(std::move(line)); // after the hello, once connected
  }
}

void NetioSubscriber::Impl::on_reply(Session& session, std::string_view line, Notices& notices) {
  protocol::Parsed<protocol::Reply> parsed = protocol::parse_reply(line);
  if (!parsed.message) {
    lose(session, "it sent a malformed reply (" + parsed.error + ")", notices);
    return;
  }
  const EndPointAddress& publisher = session.publisher;
  if (const auto* error = std::get_if<protocol::Error>(&*parsed.message)) {
    // Requests it had not granted are refused with its reason; what it had granted is lost.
    for (auto entry = session.tags.begin(); entry != session.tags.end();) {
      if (entry->second == TagState::requested && m_config.on_subscription_refused_cb) {
        notices.emplace_back([callback = m_config.on_subscription_refused_cb, tag = entry->first, publisher,
                              reason = error->reason] { callback(tag, publisher, reason); });
        entry = session.tags.erase(entry);
      } else {
        ++entry;
      }
    }
    lose(session, "it ended the connection: " + error->reason, notices);
    return;
  }
  if (const auto* subscribed = std::get_if<protocol::Subscribed>(&*parsed.message)) {
    const auto found = session.tags.find(subscribed->tag);
    if (found == session.tags.end() || found->second != TagState::requested) {
      return; // crossed with an unsubscribe
    }
    found->second = TagState::subscribed;
    if (m_config.on_subscribed_cb) {
      notices.emplace_back(
          [callback = m_config.on_subscribed_cb, tag = subscribed->tag, publisher] { callback(tag, publisher); });
    }
    return;
  }
  if (const auto* unsubscribed = std::get_if<protocol::Unsubscribed>(&*parsed.message)) {
    const auto found = session.tags.find(unsubscribed->tag);
    if (found == session.tags.end() || found->second != TagState::unsubscribing) {
      return; // subscribed again meanwhile: that request's acknowledgement follows
    }
    session.tags.erase(found);
    if (m_config.on_unsubscribed_cb) {
      notices.emplace_back(
          [callback = m_config.on_unsubscribed_cb, tag = unsubscribed->tag, publisher] { callback(tag, publisher); });
    }
    return;
  }
  const auto& refused = std::get<protocol::Refused>(*parsed.message);
  const auto found = session.tags.find(refused.tag);
  if (found != session.tags.end() && found->second == TagState::requested) {
    session.tags.erase(found);
    NETIO3_LOG_WARNING("NetioSubscriber: {} refused the subscription to tag {}: {}", publisher.to_string(), refused.tag,
                       refused.reason);
    if (m_config.on_subscription_refused_cb) {
      notices.emplace_back([callback = m_config.on_subscription_refused_cb, tag = refused.tag, publisher,
                            reason = refused.reason] { callback(tag, publisher, reason); });
    }
  }
}

void NetioSubscriber::Impl::lose(Session& session, const std::string& reason, Notices& notices) {
  if (session.lost) {
    return;
  }
  session.lost = true;
  NETIO3_LOG_WARNING("NetioSubscriber: publisher {} lost: {}", session.publisher.to_string(), reason);
  std::vector<std::uint64_t> tags;
  for (const auto& [tag, state] : session.tags) {
    if (state != TagState::unsubscribing) {
      tags.push_back(tag);
    }
  }
  session.tags.clear();
  if (session.control) {
    session.control->close();
  }
  {
    const std::lock_guard lock{m_command_mutex};
    const auto found = m_by_publisher.find(session.publisher);
    if (found != m_by_publisher.end() && found->second.get() == &session) {
      m_by_publisher.erase(found); // the next subscribe makes a new session
    }
  }
  const auto found = std::find_if(m_sessions.begin(), m_sessions.end(),
                                  [&session](const SessionPointer& candidate) { return candidate.get() == &session; });
  if (found != m_sessions.end()) {
    m_lost.push_back(std::move(*found));
    m_sessions.erase(found);
  }
  m_signal.fire(); // destroys it outside its own callbacks
  if (m_config.on_publisher_lost_cb) {
    notices.emplace_back([callback = m_config.on_publisher_lost_cb, publisher = session.publisher,
                          tags = std::move(tags)] { callback(publisher, tags); });
  }
}

// --- public -------------------------------------------------------------------------------------

NetioSubscriber::NetioSubscriber(const NetioSubscriberConfig& config, std::shared_ptr<BaseEventLoop> loop,
                                 const std::string& local_ip)
  : m_impl{std::make_unique<Impl>(config, std::move(loop), local_ip)} {}

NetioSubscriber::~NetioSubscriber() = default;

NetioStatus NetioSubscriber::subscribe(std::uint64_t tag, const EndPointAddress& publisher,
                                       const ConnectionParametersRecv& params) {
  return m_impl->subscribe(tag, publisher, params);
}

NetioStatus NetioSubscriber::unsubscribe(std::uint64_t tag, const EndPointAddress& publisher) {
  return m_impl->unsubscribe(tag, publisher);
}

} // namespace netio3
