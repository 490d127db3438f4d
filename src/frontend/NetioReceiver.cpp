#include "netio3/NetioReceiver.hpp"

#include <stdexcept>

#include "core/Logging.hpp"
#include "netio3/BufferFormatter.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3 {

class NetioReceiver::Impl {
public:
  Impl(const NetioReceiverConfig& config, std::shared_ptr<BaseEventLoop> loop) : m_config{config} {
    if (!loop) {
      throw std::invalid_argument("NetioReceiver: the event loop must not be null");
    }
    if (!m_config.on_data_cb && !m_config.on_buffer_cb) {
      throw std::invalid_argument("NetioReceiver: set on_data_cb or on_buffer_cb: without them every message "
                                  "would be dropped");
    }
    NetworkConfig network;
    network.mode = m_config.backend_mode;
    network.thread_safety = m_config.thread_safety;
    network.provider = m_config.provider;
    network.peer_timeout = m_config.peer_timeout;
    network.on_connection_established_cb = m_config.on_connection_established_cb;
    network.on_connection_closed_cb = m_config.on_connection_closed_cb;
    network.on_connection_request_cb = m_config.on_connection_request_cb;
    if (m_config.on_buffer_cb) {
      network.on_data_cb = m_config.on_buffer_cb;
    } else {
      network.on_data_from_cb = [this](const EndPointAddress& remote, std::span<const std::uint8_t> buffer) {
        deliver(remote, buffer);
      };
    }
    m_backend = NetworkBackend::create(m_config.backend_type, network, std::move(loop));
  }

  NetworkBackend& backend() noexcept { return *m_backend; }

private:
  void deliver(const EndPointAddress& remote, std::span<const std::uint8_t> buffer) {
    if (std::optional<std::string> fault = BufferFormatter::check(buffer)) {
      NETIO3_LOG_ERROR("NetioReceiver: closing the connection from {}: it sent a malformed buffer of {} bytes: {}",
                       remote.to_string(), buffer.size(), *fault);
      try {
        m_backend->close_accepted_connection(remote);
      } catch (const std::exception& error) {
        NETIO3_LOG_ERROR("NetioReceiver: cannot close the connection from {}: {}", remote.to_string(), error.what());
      }
      return;
    }
    const OnTaggedDataCb& on_data = m_config.on_data_cb;
    BufferFormatter::decode_checked(buffer, [&on_data](std::uint64_t tag, std::span<const std::uint8_t> payload,
                                                       std::uint8_t status) { on_data(tag, payload, status); });
  }

  NetioReceiverConfig m_config;
  std::unique_ptr<NetworkBackend> m_backend;
};

NetioReceiver::NetioReceiver(const NetioReceiverConfig& config, std::shared_ptr<BaseEventLoop> loop)
  : m_impl{std::make_unique<Impl>(config, std::move(loop))} {}

NetioReceiver::~NetioReceiver() = default;

EndPointAddress NetioReceiver::listen(const EndPointAddress& local, const ConnectionParametersRecv& params) {
  return m_impl->backend().open_listen_endpoint(local, params);
}

void NetioReceiver::close(const EndPointAddress& local) {
  m_impl->backend().close_listen_endpoint(local);
}

void NetioReceiver::close_connection(const EndPointAddress& remote) {
  m_impl->backend().close_accepted_connection(remote);
}

} // namespace netio3
