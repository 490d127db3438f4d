// The C entry points of ibmsg: argument checks, and no exception ever crosses into C.

#include <ibmsg.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <new>

#include "core/Logging.hpp"
#include "ibmsg/Buffers.hpp"
#include "ibmsg/Loop.hpp"

namespace {

using netio3::ibmsg::BufferRecord;
using netio3::ibmsg::BufferState;
using netio3::ibmsg::ListenEndpoint;
using netio3::ibmsg::Loop;
using netio3::ibmsg::RecvConnection;
using netio3::ibmsg::SendEndpoint;
using netio3::ibmsg::SocketKind;
using netio3::ibmsg::SocketState;

/// Runs `body` and turns any exception into an ibmsg error code (logged).
template <typename Body>
int guarded(const char* function, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    NETIO3_LOG_ERROR("ibmsg: {}: out of memory", function);
    return IBMSG_ALLOC_FAILED;
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("ibmsg: {}: {}", function, error.what());
    return IBMSG_INTERNAL_ERROR;
  } catch (...) {
    NETIO3_LOG_ERROR("ibmsg: {}: unknown exception", function);
    return IBMSG_INTERNAL_ERROR;
  }
}

} // namespace

extern "C" {

int ibmsg_init_event_loop(ibmsg_event_loop* event_loop) {
  if (event_loop == nullptr) {
    return IBMSG_INVALID_ARGUMENT;
  }
  event_loop->event_channel = nullptr;
  event_loop->epollfd = -1;
  event_loop->connection_request = nullptr;
  event_loop->connection_established = nullptr;
  event_loop->message_received = nullptr;
  event_loop->ibmsg_private = nullptr;
  return guarded("ibmsg_init_event_loop", [&] {
    std::unique_ptr<Loop> loop;
    if (const int result = Loop::create(event_loop, loop); result != IBMSG_OK) {
      return result;
    }
    event_loop->ibmsg_private = loop.release();
    return static_cast<int>(IBMSG_OK);
  });
}

int ibmsg_destroy_event_loop(ibmsg_event_loop* event_loop) {
  Loop* loop = netio3::ibmsg::loop_of(event_loop);
  if (loop == nullptr || loop->dispatching()) {
    return IBMSG_INVALID_ARGUMENT; // not initialised, or called from inside a callback
  }
  event_loop->ibmsg_private = nullptr;
  delete loop; // noexcept: closes every socket, frees every buffer
  return IBMSG_OK;
}

int ibmsg_dispatch_event_loop(ibmsg_event_loop* event_loop) {
  return ibmsg_dispatch_event_loop_timeout(event_loop, -1);
}

int ibmsg_dispatch_event_loop_timeout(ibmsg_event_loop* event_loop, int timeout_ms) {
  Loop* loop = netio3::ibmsg::loop_of(event_loop);
  if (loop == nullptr) {
    return IBMSG_INVALID_ARGUMENT;
  }
  return guarded("ibmsg_dispatch_event_loop", [&] { return loop->dispatch(timeout_ms); });
}

int ibmsg_connect(ibmsg_event_loop* event_loop, ibmsg_socket* connection, char* ip, unsigned short port) {
  Loop* loop = netio3::ibmsg::loop_of(event_loop);
  if (loop == nullptr || connection == nullptr || ip == nullptr) {
    return IBMSG_INVALID_ARGUMENT;
  }
  return guarded("ibmsg_connect", [&] { return loop->connect(connection, ip, port); });
}

int ibmsg_listen(ibmsg_event_loop* event_loop, ibmsg_socket* socket, char* ip, short port, int max_connections) {
  (void)max_connections; // the original passed it as the listen backlog only; the transport chooses that
  Loop* loop = netio3::ibmsg::loop_of(event_loop);
  if (loop == nullptr || socket == nullptr || ip == nullptr) {
    return IBMSG_INVALID_ARGUMENT;
  }
  // The original declares the port `short`: ports above 32767 arrive negative.
  return guarded("ibmsg_listen", [&] { return loop->listen(socket, ip, static_cast<std::uint16_t>(port)); });
}

int ibmsg_disconnect(ibmsg_socket* connection) {
  if (connection == nullptr) {
    return IBMSG_INVALID_ARGUMENT;
  }
  SocketState* state = netio3::ibmsg::state_of(connection);
  if (state == nullptr) {
    connection->status = IBMSG_UNCONNECTED; // already closed or failed
    return IBMSG_OK;
  }
  return guarded("ibmsg_disconnect", [&] {
    int result{IBMSG_DISCONNECT_FAILED};
    Loop* loop = state->loop();
    switch (state->kind()) {
    case SocketKind::Send: result = static_cast<SendEndpoint*>(state)->disconnect(); break;
    case SocketKind::Listen: result = static_cast<ListenEndpoint*>(state)->disconnect(); break;
    case SocketKind::Recv: result = static_cast<RecvConnection*>(state)->disconnect(); break;
    }
    loop->collect(); // `state` may be gone from here on
    return result;
  });
}

int ibmsg_accept(ibmsg_connection_request* request, ibmsg_socket* connection) {
  if (request == nullptr || connection == nullptr) {
    return IBMSG_INVALID_ARGUMENT;
  }
  auto* listener = static_cast<ListenEndpoint*>(request->ibmsg_private);
  if (listener == nullptr || request->status != IBMSG_UNDECIDED) {
    return IBMSG_ACCEPT_FAILED;
  }
  return guarded("ibmsg_accept", [&] {
    const int result = listener->accept(connection);
    if (result == IBMSG_OK) {
      request->status = IBMSG_ACCEPTED;
    }
    return result;
  });
}

int ibmsg_alloc_msg(ibmsg_buffer* msg, ibmsg_socket* connection, size_t size) {
  if (msg == nullptr) {
    return IBMSG_INVALID_ARGUMENT;
  }
  msg->mr = nullptr;
  msg->data = nullptr;
  msg->size = 0;
  msg->status = IBMSG_WAITING;
  msg->ibmsg_private = nullptr;
  SocketState* state = netio3::ibmsg::state_of(connection);
  Loop* loop = state == nullptr ? nullptr : state->loop();
  BufferRecord* record{nullptr};
  if (state != nullptr && state->kind() == SocketKind::Send && size <= loop->max_message_size()) {
    record = static_cast<SendEndpoint*>(state)->acquire_slot(size);
  }
  if (record == nullptr) {
    // Larger than the limit (post_send will say so), more buffers held than the slab has, or not a
    // SEND socket: heap memory, sent with a copying send.
    record = netio3::ibmsg::allocate_heap_buffer(loop, size);
  }
  if (record == nullptr) {
    return IBMSG_ALLOC_FAILED;
  }
  record->user = msg;
  record->usable = size;
  msg->data = record->data;
  msg->size = size;
  msg->ibmsg_private = record;
  return IBMSG_OK;
}

int ibmsg_free_msg(ibmsg_buffer* msg) {
  if (msg == nullptr || msg->ibmsg_private == nullptr) {
    return IBMSG_FREE_BUFFER_FAILED;
  }
  auto* record = static_cast<BufferRecord*>(msg->ibmsg_private);
  switch (record->state) {
  case BufferState::Held: netio3::ibmsg::release_buffer(record); break;
  case BufferState::InFlight:
    // The transport may still read it: reclaimed when its send ends.
    record->state = BufferState::InFlightOrphaned;
    record->user = nullptr;
    break;
  case BufferState::Free:
  case BufferState::InFlightOrphaned: return IBMSG_FREE_BUFFER_FAILED; // freed twice
  }
  msg->ibmsg_private = nullptr;
  msg->data = nullptr;
  return IBMSG_OK;
}

int ibmsg_post_send(ibmsg_socket* connection, ibmsg_buffer* msg) {
  if (connection == nullptr || msg == nullptr) {
    return IBMSG_INVALID_ARGUMENT;
  }
  auto* record = static_cast<BufferRecord*>(msg->ibmsg_private);
  if (record == nullptr || record->state != BufferState::Held) {
    return IBMSG_INVALID_ARGUMENT; // not allocated, freed, or already being sent
  }
  SocketState* state = netio3::ibmsg::state_of(connection);
  if (state == nullptr) {
    return msg->size > record->usable ? IBMSG_INVALID_ARGUMENT : IBMSG_NOT_CONNECTED;
  }
  if (state->kind() != SocketKind::Send) {
    return IBMSG_INVALID_ARGUMENT; // data flow from SEND sockets to RECV sockets only
  }
  return guarded("ibmsg_post_send", [&] { return static_cast<SendEndpoint*>(state)->post_send(msg, record); });
}

const char* ibmsg_strerror(int error) {
  switch (error) {
  case IBMSG_OK: return "success";
  case IBMSG_FCNTL_FAILED: return "fcntl failed";
  case IBMSG_GETADDRINFO_FAILED: return "the address is invalid or cannot be resolved";
  case IBMSG_CREATE_ID_FAILED: return "the connection could not be created";
  case IBMSG_BIND_FAILED: return "the address could not be bound (in use, or not a local address)";
  case IBMSG_LISTEN_FAILED: return "listening failed";
  case IBMSG_ADDRESS_RESOLUTION_FAILED: return "address resolution failed";
  case IBMSG_FETCH_EVENT_FAILED: return "fetching an event failed";
  case IBMSG_ACK_EVENT_FAILED: return "acknowledging an event failed";
  case IBMSG_ALLOC_FAILED: return "out of memory";
  case IBMSG_MEMORY_REGISTRATION_FAILED: return "memory registration failed";
  case IBMSG_POST_SEND_FAILED: return "the transport refused the send (connection broken)";
  case IBMSG_DISCONNECT_FAILED: return "closing the socket failed";
  case IBMSG_FREE_BUFFER_FAILED: return "the buffer is not allocated (freed twice or never allocated)";
  case IBMSG_CREATE_QP_FAILED: return "creating a queue pair failed";
  case IBMSG_ACCEPT_FAILED: return "accept is only possible once, inside the connection_request callback";
  case IBMSG_EPOLL_FAILED: return "the event loop could not be created";
  case IBMSG_EPOLL_ADD_FD_FAILED: return "adding a file descriptor to the event loop failed";
  case IBMSG_EPOLL_WAIT_FAILED: return "the event loop failed while waiting for events";
  case IBMSG_MESSAGE_TOO_LARGE: return "the message is larger than the largest message of the sender or receiver";
  case IBMSG_NO_RESOURCES: return "no queue space or buffer right now (dispatch the event loop, then retry)";
  case IBMSG_TRANSPORT_UNAVAILABLE: return "the requested transport (IBMSG_TRANSPORT) is not available";
  case IBMSG_INVALID_ARGUMENT: return "invalid argument";
  case IBMSG_CONNECTION_REFUSED: return "the connection was refused, rejected, unreachable or timed out";
  case IBMSG_NOT_CONNECTED: return "the socket is not connected";
  case IBMSG_SEND_FAILED: return "a posted send could not complete (the connection closed or failed)";
  case IBMSG_CONNECTION_CLOSED: return "the connection was closed by the peer or lost";
  case IBMSG_INTERNAL_ERROR: return "internal error (set NETIO3_LOG=error to see it)";
  default: return "unknown error code";
  }
}

int ibmsg_set_max_msgsize(ibmsg_event_loop* event_loop, size_t max_msgsize) {
  Loop* loop = netio3::ibmsg::loop_of(event_loop);
  if (loop == nullptr) {
    return IBMSG_INVALID_ARGUMENT;
  }
  return guarded("ibmsg_set_max_msgsize", [&] { return loop->set_max_message_size(max_msgsize); });
}

size_t ibmsg_get_max_msgsize(const ibmsg_event_loop* event_loop) {
  const Loop* loop = netio3::ibmsg::loop_of(event_loop);
  return loop == nullptr ? 0 : loop->max_message_size();
}

const char* ibmsg_transport_name(const ibmsg_event_loop* event_loop) {
  const Loop* loop = netio3::ibmsg::loop_of(event_loop);
  return loop == nullptr ? nullptr : netio3::ibmsg::transport_name(loop->transport());
}

int ibmsg_socket_error(const ibmsg_socket* socket) {
  return socket == nullptr ? IBMSG_INVALID_ARGUMENT : socket->ibmsg_private_error;
}

unsigned short ibmsg_socket_port(const ibmsg_socket* socket) {
  SocketState* state = netio3::ibmsg::state_of(socket);
  if (state == nullptr) {
    return 0;
  }
  switch (state->kind()) {
  case SocketKind::Send: return static_cast<SendEndpoint*>(state)->port();
  case SocketKind::Listen: return static_cast<ListenEndpoint*>(state)->port();
  case SocketKind::Recv: return static_cast<RecvConnection*>(state)->remote().port();
  }
  return 0;
}

} // extern "C"
