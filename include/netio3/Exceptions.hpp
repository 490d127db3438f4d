#pragma once

/// @file
/// The exception hierarchy. Set-up and tear-down calls throw these; data-path calls return a
/// `NetioStatus` instead and never throw for network conditions. Every message says what failed
/// and why (with the errno text or the provider's error text where there is one).

#include <stdexcept>
#include <string>

namespace netio3 {

/// Base of every exception netio3 throws.
class NetioException : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// An address that is malformed, cannot be resolved, or is unusable for the call. The message
/// contains the offending text.
class InvalidEndpointAddress : public NetioException {
public:
  using NetioException::NetioException;
};

/// `open_send_endpoint` could not create the endpoint (socket, provider or memory registration
/// failure, pool allocation, invalid connection parameters).
class FailedOpenSendEndpoint : public NetioException {
public:
  using NetioException::NetioException;
};

/// `open_send_endpoint` was called for an address that already has a send endpoint.
class SendEndpointAlreadyExists : public NetioException {
public:
  using NetioException::NetioException;
};

/// `open_listen_endpoint` could not bind/listen (address in use, no such interface, provider
/// missing, ...).
class FailedOpenListenEndpoint : public NetioException {
public:
  using NetioException::NetioException;
};

/// `open_listen_endpoint` was called for an address and port that is already listened on.
class ListenEndpointAlreadyExists : public NetioException {
public:
  using NetioException::NetioException;
};

/// The call names a send endpoint that is not open (never opened, closed, or its connection ended
/// and `on_connection_closed_cb`/`on_connection_refused_cb` was delivered).
class UnknownSendEndpoint : public NetioException {
public:
  using NetioException::NetioException;
};

/// The call names a listen endpoint that is not open.
class UnknownListenEndpoint : public NetioException {
public:
  using NetioException::NetioException;
};

/// Closing a send endpoint failed at the operating-system or provider level.
class FailedCloseSendEndpoint : public NetioException {
public:
  using NetioException::NetioException;
};

/// Closing a listen endpoint failed at the operating-system or provider level.
class FailedCloseListenEndpoint : public NetioException {
public:
  using NetioException::NetioException;
};

/// `get_buffer`/`get_num_available_buffers` on an endpoint that was opened without buffers
/// (`ConnectionParameters::num_buf == 0` and no shared send pool).
class NoBuffersAllocated : public NetioException {
public:
  using NetioException::NetioException;
};

/// `NetworkBackend::create` was asked for a backend this build of netio3 does not contain, or the
/// configuration asks for something the backend cannot do (e.g. `NetworkMode::RDMA` on the TCP
/// backend).
class UnsupportedConfiguration : public NetioException {
public:
  using NetioException::NetioException;
};

/// The event loop could not create or use one of its kernel objects (epoll, eventfd, timerfd),
/// or was used wrongly (e.g. `run()` while already running).
class EventLoopError : public NetioException {
public:
  using NetioException::NetioException;
};

} // namespace netio3
