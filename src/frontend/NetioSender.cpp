#include "netio3/NetioSender.hpp"

#include <mutex>

#include "frontend/SendEngine.hpp"

namespace netio3 {

namespace {

detail::SendEngineEvents engine_events(const NetioSenderConfig& config) {
  detail::SendEngineEvents events;
  events.established = config.on_connection_established_cb;
  events.closed = config.on_connection_closed_cb;
  events.refused = config.on_connection_refused_cb;
  if (config.method == SendMethod::ZERO_COPY) {
    events.send_completed = config.on_send_completed_cb;
  }
  return events;
}

} // namespace

NetioSender::NetioSender(const NetioSenderConfig& config, std::shared_ptr<BaseEventLoop> loop)
  : m_engine{std::make_unique<detail::SendEngine>(
        // One destination: the backend's own backpressure as it is, nothing queued in the engine.
        detail::make_engine_config(config, "NetioSender", 0), std::move(loop), engine_events(config))} {}

NetioSender::~NetioSender() = default;

void NetioSender::connect(const EndPointAddress& receiver) {
  m_engine->open(receiver);
}

void NetioSender::disconnect(const EndPointAddress& receiver) {
  m_engine->close(receiver);
}

NetioStatus NetioSender::send(const EndPointAddress& receiver, std::uint64_t tag, std::span<const std::uint8_t> data,
                              std::uint8_t status, std::uint64_t key) {
  if (data.data() == nullptr && !data.empty()) {
    return NetioStatus::INVALID_ARGUMENT;
  }
  const std::lock_guard lock{m_engine->mutex()};
  detail::Channel* channel = m_engine->find(receiver);
  if (channel == nullptr) {
    throw UnknownSendEndpoint("NetioSender::send: no connection to " + receiver.to_string());
  }
  if (m_engine->config().method == SendMethod::ZERO_COPY) {
    if (data.size() > BufferFormatter::max_payload_size) {
      return NetioStatus::MESSAGE_TOO_LARGE;
    }
    return m_engine->send_zero_copy(*channel, tag, data, status, key);
  }
  if (data.size() > m_engine->max_buffered_payload()) {
    return NetioStatus::MESSAGE_TOO_LARGE;
  }
  const NetioStatus reserved = m_engine->reserve(*channel, tag, data.size(), status);
  if (reserved == NetioStatus::OK) {
    m_engine->append(*channel, tag, data, status);
  }
  return reserved;
}

NetioStatus NetioSender::flush(const EndPointAddress& receiver) {
  const std::lock_guard lock{m_engine->mutex()};
  detail::Channel* channel = m_engine->find(receiver);
  if (channel == nullptr) {
    throw UnknownSendEndpoint("NetioSender::flush: no connection to " + receiver.to_string());
  }
  return m_engine->flush(*channel);
}

void NetioSender::flush() {
  const std::lock_guard lock{m_engine->mutex()};
  m_engine->flush_all();
}

std::size_t NetioSender::get_num_available_buffers(const EndPointAddress& receiver) {
  {
    const std::lock_guard lock{m_engine->mutex()};
    if (m_engine->find(receiver) == nullptr) {
      throw UnknownSendEndpoint("NetioSender::get_num_available_buffers: no connection to " + receiver.to_string());
    }
    if (m_engine->config().method == SendMethod::ZERO_COPY) {
      return 0;
    }
  }
  return m_engine->backend().get_num_available_buffers(receiver);
}

} // namespace netio3
