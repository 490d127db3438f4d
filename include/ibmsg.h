/**
 * @file
 * ibmsg: asynchronous messages between hosts, with the C API of the original ibmsg library.
 *
 * Programs written for the original ibmsg compile unchanged against this header and run on top of
 * netio3: over RDMA (libfabric, verbs provider) where an RDMA device is present, over TCP
 * everywhere else. The environment variable IBMSG_TRANSPORT=rdma|tcp forces the choice
 * (IBMSG_TRANSPORT=fabric-tcp runs the RDMA code path over libfabric's tcp provider, for tests).
 *
 * Model (see docs/ibmsg.md for the full description):
 * - Everything is non-blocking except ibmsg_dispatch_event_loop. Progress (connect, accept, sends,
 *   receives, disconnects) happens only inside ibmsg_dispatch_event_loop, which runs the callbacks
 *   of the event loop on the caller's thread. One event loop is used by one thread at a time.
 * - ibmsg_connect makes a SEND socket, ibmsg_listen a LISTEN socket and ibmsg_accept (only inside
 *   the connection_request callback) a RECV socket. Messages flow from SEND sockets to RECV sockets.
 * - Every type is a complete struct that the caller allocates and must not move or free while the
 *   library uses it (sockets: until they are IBMSG_UNCONNECTED after a disconnect, or the loop is
 *   destroyed; buffers: until ibmsg_free_msg; a sent buffer must not be freed before its status is
 *   IBMSG_SENT or IBMSG_NOT_SENT).
 * - Every function returns IBMSG_OK (0) on success and an error code otherwise
 *   (ibmsg_strerror describes it).
 * - The library prints nothing. NETIO3_LOG=debug (or warning, error, ...) makes it log to stderr.
 *
 * Differences from the original (defects fixed; nothing existing was renamed or renumbered):
 * - any number of messages per connection; received buffers have size = the received length;
 * - failures reach the program: a refused, rejected or unreachable connect ends in IBMSG_ERROR,
 *   a send that cannot complete ends in IBMSG_NOT_SENT (and dispatch returns IBMSG_SEND_FAILED);
 * - the largest message is configurable (ibmsg_set_max_msgsize or IBMSG_MAX_MSGSIZE, default
 *   IBMSG_MAX_MSGSIZE = 4096) and a larger send fails at once with IBMSG_MESSAGE_TOO_LARGE;
 * - receive buffers are pooled; a sender that outruns its receiver gets IBMSG_NO_RESOURCES from
 *   ibmsg_post_send and retries after dispatching;
 * - nothing leaks on disconnect or ibmsg_destroy_event_loop, which closes every socket.
 *
 * The pointer fields cmid and mr keep their types for source compatibility but are always NULL:
 * netio3 does not expose its transport's identifiers.
 */
#ifndef IBMSG_H
#define IBMSG_H

#include <stddef.h>

#include <rdma/rdma_cma.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The default largest message, in bytes (header-free payload). ibmsg_set_max_msgsize or the
 * environment variable IBMSG_MAX_MSGSIZE change the limit of an event loop. */
#define IBMSG_MAX_MSGSIZE (4096)

/** Error codes returned by every function. The first nineteen are the original's, in its order;
 * the others are additions of this implementation. */
enum {
  IBMSG_OK,
  IBMSG_FCNTL_FAILED,
  IBMSG_GETADDRINFO_FAILED, /**< the address of connect/listen is invalid or does not resolve */
  IBMSG_CREATE_ID_FAILED,   /**< a connection could not be created (see the log for why) */
  IBMSG_BIND_FAILED,        /**< listen: binding the address failed (in use, no such address) */
  IBMSG_LISTEN_FAILED,      /**< listen: failed for another reason */
  IBMSG_ADDRESS_RESOLUTION_FAILED,
  IBMSG_FETCH_EVENT_FAILED,
  IBMSG_ACK_EVENT_FAILED,
  IBMSG_ALLOC_FAILED, /**< out of memory */
  IBMSG_MEMORY_REGISTRATION_FAILED,
  IBMSG_POST_SEND_FAILED,   /**< the transport refused the send (connection broken) */
  IBMSG_DISCONNECT_FAILED,  /**< the socket is not open, or closing it failed */
  IBMSG_FREE_BUFFER_FAILED, /**< the buffer is not allocated (freed twice, never allocated) */
  IBMSG_CREATE_QP_FAILED,
  IBMSG_ACCEPT_FAILED, /**< accept outside connection_request, or the request was decided */
  IBMSG_EPOLL_FAILED,  /**< the event loop could not be created */
  IBMSG_EPOLL_ADD_FD_FAILED,
  IBMSG_EPOLL_WAIT_FAILED, /**< the event loop failed while dispatching */
  /* additions */
  IBMSG_MESSAGE_TOO_LARGE,     /**< the message exceeds the largest message (sender's or receiver's) */
  IBMSG_NO_RESOURCES,          /**< backpressure: no queue space now; dispatch, then retry */
  IBMSG_TRANSPORT_UNAVAILABLE, /**< IBMSG_TRANSPORT asks for a transport this machine/build lacks */
  IBMSG_INVALID_ARGUMENT,      /**< a NULL pointer, a socket of the wrong kind, a bad setting */
  IBMSG_CONNECTION_REFUSED,    /**< connect: refused, rejected, unreachable or timed out */
  IBMSG_NOT_CONNECTED,         /**< post_send on a socket that is not IBMSG_CONNECTED */
  IBMSG_SEND_FAILED,           /**< a posted send could not complete (its buffer is IBMSG_NOT_SENT) */
  IBMSG_CONNECTION_CLOSED,     /**< the connection was closed by the peer or lost */
  IBMSG_INTERNAL_ERROR         /**< an unexpected failure inside the library (see the log) */
};

/** Status of an ibmsg_connection_request. */
enum ibmsg_request_status { IBMSG_UNDECIDED, IBMSG_ACCEPTED };

/** Status of an ibmsg_buffer. */
enum ibmsg_buffer_status {
  IBMSG_WAITING,  /**< allocated, or posted and not yet completed */
  IBMSG_SENT,     /**< the send completed: the buffer may be freed or reused */
  IBMSG_RECEIVED, /**< a received message, handed to message_received */
  IBMSG_NOT_SENT  /**< addition: the send could not complete (connection closed or failed) */
};

/** Status of an ibmsg_socket. */
enum ibmsg_socket_status {
  IBMSG_UNCONNECTED,
  IBMSG_ADDRESS_RESOLVED,
  IBMSG_ROUTE_RESOLVED,
  IBMSG_CONNECTED,
  IBMSG_DISCONNECTING,
  IBMSG_ERROR /**< the connection failed; ibmsg_socket_error tells why */
};

/** Kind of an ibmsg_socket. */
enum ibmsg_socket_type { IBMSG_LISTEN_SOCKET, IBMSG_RECV_SOCKET, IBMSG_SEND_SOCKET };

/** An incoming connection, handed to the connection_request callback. Accept it by calling
 * ibmsg_accept inside the callback; otherwise it is rejected. */
typedef struct {
  struct rdma_cm_id* cmid;          /**< always NULL */
  enum ibmsg_request_status status; /**< IBMSG_ACCEPTED once ibmsg_accept took the request */
  void* ibmsg_private;              /**< private to the library */
} ibmsg_connection_request;

/** A message. Allocate with ibmsg_alloc_msg, free with ibmsg_free_msg. `data` holds `size` bytes;
 * `size` may be lowered before ibmsg_post_send to send fewer bytes. A received buffer has `size`
 * equal to the received length. */
typedef struct {
  struct ibv_mr* mr;               /**< always NULL */
  void* data;                      /**< the message's bytes, in library memory */
  size_t size;                     /**< bytes to send (at most the allocated size), or received */
  enum ibmsg_buffer_status status; /**< where the buffer is in its life; set by the library */
  void* ibmsg_private;             /**< private to the library */
} ibmsg_buffer;

/** A connection (SEND or RECV socket) or a listening socket. */
typedef struct {
  struct rdma_cm_id* cmid;            /**< always NULL */
  enum ibmsg_socket_status status;    /**< connection state, changed by the library */
  enum ibmsg_socket_type socket_type; /**< LISTEN, RECV or SEND: set by listen, accept or connect */
  ibmsg_buffer recv_buffer;           /**< RECV sockets: the buffer handed to message_received */
  int ibmsg_private_error;            /**< private to the library (read it with ibmsg_socket_error) */
  void* ibmsg_private;                /**< private to the library */
} ibmsg_socket;

/** The name of ibmsg_socket in earlier versions of the original, for programs written against them. */
typedef ibmsg_socket ibmsg_connection;

/** An event loop. ibmsg_init_event_loop sets the callbacks to NULL: set them afterwards. */
typedef struct {
  struct rdma_event_channel* event_channel; /**< always NULL (kept for source compatibility) */
  int epollfd;                              /**< always -1 (kept for source compatibility) */

  /** Called inside dispatch for each incoming connection; call ibmsg_accept to accept it. Without
   * this callback every request is rejected. */
  void (*connection_request)(ibmsg_connection_request*);
  /** Called inside dispatch when a SEND or RECV socket became IBMSG_CONNECTED. */
  void (*connection_established)(ibmsg_socket*);
  /** Called inside dispatch for each received message, in order per connection. The buffer belongs
   * to the program, which frees it with ibmsg_free_msg (now or later). Without this callback
   * received messages are freed by the library. */
  void (*message_received)(ibmsg_socket*, ibmsg_buffer*);

  void* ibmsg_private; /**< private to the library */
} ibmsg_event_loop;

/** Creates the event loop and chooses the transport (IBMSG_TRANSPORT=rdma|tcp forces it; an
 * unavailable forced transport gives IBMSG_TRANSPORT_UNAVAILABLE, an unknown value
 * IBMSG_INVALID_ARGUMENT). Reads IBMSG_MAX_MSGSIZE. */
int ibmsg_init_event_loop(ibmsg_event_loop* event_loop);
/** Closes every socket of the loop (the peers see their connections close), releases every buffer
 * still held (do not free them afterwards) and the loop. Not from inside a callback. Socket and
 * buffer structs of the program are not written to. */
int ibmsg_destroy_event_loop(ibmsg_event_loop* event_loop);
/** Blocks until at least one event was handled (a connection established, refused, requested or
 * closed, a message received, a send completed), runs the callbacks, and returns. Returns at once
 * when the loop has no open socket. Returns IBMSG_SEND_FAILED when a posted send failed during the
 * call (its buffer is IBMSG_NOT_SENT), IBMSG_EPOLL_WAIT_FAILED when the loop itself failed, and
 * IBMSG_OK otherwise. */
int ibmsg_dispatch_event_loop(ibmsg_event_loop* event_loop);
/** Starts connecting a SEND socket to ip:port. ip: an IPv4 dotted quad, an IPv6 literal (with or
 * without brackets; "fe80::1%eth0" for a link-local one) or a host name, whose addresses are tried
 * in turn. The socket becomes IBMSG_CONNECTED (and connection_established is called) or IBMSG_ERROR
 * (ibmsg_socket_error: IBMSG_CONNECTION_REFUSED, after every address failed) inside a later
 * dispatch. */
int ibmsg_connect(ibmsg_event_loop* event_loop, ibmsg_socket* connection, char* ip, unsigned short port);
/** Closes a SEND or RECV socket (status IBMSG_DISCONNECTING, then IBMSG_UNCONNECTED inside a later
 * dispatch; the peer's socket becomes IBMSG_UNCONNECTED) or a LISTEN socket (IBMSG_UNCONNECTED at
 * once; its accepted RECV sockets become IBMSG_UNCONNECTED inside a later dispatch). A socket that
 * is already closed or failed becomes IBMSG_UNCONNECTED at once. */
int ibmsg_disconnect(ibmsg_socket* connection);
/** Listens on ip:port: an IPv4 or IPv6 literal ("fe80::1%eth0" for a link-local one) or a host name
 * (its first address); "0.0.0.0" or "::" for every interface (see docs/decisions.md for what "::"
 * takes); port 0 picks a free port, see
 * ibmsg_socket_port). The socket is IBMSG_CONNECTED while listening. max_connections is accepted for source
 * compatibility; as in the original it limits nothing (the transport chooses its backlog). */
int ibmsg_listen(ibmsg_event_loop* event_loop, ibmsg_socket* socket, char* ip, short port, int max_connections);
/** Accepts `request` into the RECV socket `connection`. Only inside connection_request. */
int ibmsg_accept(ibmsg_connection_request* request, ibmsg_socket* connection);
/** Allocates a message of `size` bytes for `connection` (status IBMSG_WAITING). Buffers of a SEND
 * socket come from its pre-registered pool; a size above the loop's limit is allocated but cannot
 * be sent (ibmsg_post_send gives IBMSG_MESSAGE_TOO_LARGE). */
int ibmsg_alloc_msg(ibmsg_buffer* msg, ibmsg_socket* connection, size_t size);
/** Releases a buffer from ibmsg_alloc_msg or from message_received. Freeing a buffer whose send has
 * not completed is allowed: the memory is reclaimed when the transport is done with it. */
int ibmsg_free_msg(ibmsg_buffer* msg);
/** Sends msg->size bytes of msg->data on a connected SEND socket, without copying: the buffer must
 * stay untouched until its status is IBMSG_SENT (or IBMSG_NOT_SENT). Fails at once with
 * IBMSG_MESSAGE_TOO_LARGE, IBMSG_NO_RESOURCES (retry after dispatching), IBMSG_NOT_CONNECTED or
 * IBMSG_INVALID_ARGUMENT. */
int ibmsg_post_send(ibmsg_socket* connection, ibmsg_buffer* msg);

/* --- additions --------------------------------------------------------------------------------- */

/** A short English description of an error code ("unknown error code" for other values). */
const char* ibmsg_strerror(int error);
/** Like ibmsg_dispatch_event_loop, but returns after timeout_ms milliseconds at the latest even if
 * nothing happened (IBMSG_OK). timeout_ms < 0 waits without limit; 0 handles what is pending and
 * waits at most about one millisecond. */
int ibmsg_dispatch_event_loop_timeout(ibmsg_event_loop* event_loop, int timeout_ms);
/** Sets the largest message of the loop, in bytes (1 to 256 MiB): the largest message that sockets
 * of this loop send and receive. Only while the loop has no socket (IBMSG_INVALID_ARGUMENT
 * otherwise). */
int ibmsg_set_max_msgsize(ibmsg_event_loop* event_loop, size_t max_msgsize);
/** The largest message of the loop (0 if the loop is not initialised). */
size_t ibmsg_get_max_msgsize(const ibmsg_event_loop* event_loop);
/** "rdma", "tcp" or "fabric-tcp": the transport the loop uses (NULL if the loop is not initialised). */
const char* ibmsg_transport_name(const ibmsg_event_loop* event_loop);
/** Why a socket is IBMSG_ERROR or was closed: IBMSG_CONNECTION_REFUSED, IBMSG_CONNECTION_CLOSED,
 * IBMSG_SEND_FAILED, IBMSG_NO_RESOURCES, ...; IBMSG_OK when nothing went wrong. */
int ibmsg_socket_error(const ibmsg_socket* socket);
/** The port of a socket: for a LISTEN socket the port actually listened on (listening on port 0
 * picks a free port), for a SEND socket the port connected to, for a RECV socket the peer's port;
 * 0 if the socket is not open. */
unsigned short ibmsg_socket_port(const ibmsg_socket* socket);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* IBMSG_H */
