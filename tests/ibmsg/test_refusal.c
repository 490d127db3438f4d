/*
 * Every connect ends in IBMSG_CONNECTED or IBMSG_ERROR: refused (nobody listens), rejected by the
 * connection_request callback, rejected because there is no callback, an invalid address; and
 * ibmsg_accept outside the callback is refused. After each failure the loop still works.
 * Everything listens and connects on NETIO3_TEST_ADDRESS (default 127.0.0.1).
 *
 *   test_refusal              every case but the unanswered peer (ctest: ibmsg.test_refusal)
 *   test_refusal unanswered   a peer that never answers (ctest: ibmsg.test_refusal_unanswered); it
 *                             exits with TEST_SKIPPED (77, ctest's SKIP_RETURN_CODE) over rdma
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ibmsg_test_support.h"

/* A plain TCP listener on the test address that never accepts and never answers; returns its fd. */
static int silent_listener(unsigned short* port) {
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
  struct addrinfo* resolved = NULL;
  CHECK(getaddrinfo(test_address(), "0", &hints, &resolved) == 0);
  const int fd = socket(resolved->ai_family, SOCK_STREAM, 0);
  CHECK(fd >= 0);
  CHECK(bind(fd, resolved->ai_addr, resolved->ai_addrlen) == 0);
  freeaddrinfo(resolved);
  CHECK(listen(fd, 4) == 0);
  struct sockaddr_storage bound;
  socklen_t length = sizeof bound;
  CHECK(getsockname(fd, (struct sockaddr*)&bound, &length) == 0);
  *port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6*)&bound)->sin6_port
                                            : ((struct sockaddr_in*)&bound)->sin_port);
  return fd;
}

static int requests_seen = 0;
static int accept_in_callback = 0;
static ibmsg_socket accepted_socket;
static ibmsg_connection_request saved_request;

static void on_request(ibmsg_connection_request* request) {
  ++requests_seen;
  CHECK(request->cmid == NULL);
  CHECK(request->status == IBMSG_UNDECIDED);
  saved_request = *request; /* a copy, used after the callback returned */
  if (accept_in_callback) {
    CHECK_RC(ibmsg_accept(request, &accepted_socket), IBMSG_OK);
  }
}

/* Connects and waits for the outcome; returns the final status. */
static int connect_and_wait(ibmsg_event_loop* loop, ibmsg_socket* socket, unsigned short port) {
  CHECK_RC(ibmsg_connect(loop, socket, test_address(), port), IBMSG_OK);
  CHECK(socket->status == IBMSG_UNCONNECTED);
  /* The original example's loop: blocking dispatch until connected, giving up on IBMSG_ERROR. */
  while (socket->status != IBMSG_CONNECTED) {
    CHECK_RC(ibmsg_dispatch_event_loop(loop), IBMSG_OK);
    if (socket->status == IBMSG_ERROR) {
      break;
    }
  }
  return socket->status;
}

/* Every case but the unanswered peer. */
static int refusals(void) {
  ibmsg_event_loop loop;
  CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_OK);

  /* A port where nobody listens: listen on port 0, note the port, close the listener. */
  ibmsg_socket probe;
  CHECK_RC(ibmsg_listen(&loop, &probe, test_address(), 0, 4), IBMSG_OK);
  const unsigned short closed_port = ibmsg_socket_port(&probe);
  CHECK_RC(ibmsg_disconnect(&probe), IBMSG_OK);
  CHECK(ibmsg_socket_port(&probe) == 0);

  ibmsg_socket refused;
  CHECK(connect_and_wait(&loop, &refused, closed_port) == IBMSG_ERROR);
  CHECK_RC(ibmsg_socket_error(&refused), IBMSG_CONNECTION_REFUSED);
  ibmsg_buffer msg;
  CHECK_RC(ibmsg_alloc_msg(&msg, &refused, 16), IBMSG_OK);
  CHECK_RC(ibmsg_post_send(&refused, &msg), IBMSG_NOT_CONNECTED);
  CHECK_RC(ibmsg_free_msg(&msg), IBMSG_OK);
  CHECK_RC(ibmsg_disconnect(&refused), IBMSG_OK); /* as the example does after a failure */
  CHECK(refused.status == IBMSG_UNCONNECTED);
  /* Nothing is open: dispatch returns at once instead of blocking for ever. */
  CHECK_RC(ibmsg_dispatch_event_loop(&loop), IBMSG_OK);

  /* A listener without a connection_request callback rejects every request. */
  ibmsg_socket listener;
  CHECK_RC(ibmsg_listen(&loop, &listener, test_address(), 0, 4), IBMSG_OK);
  CHECK(listener.status == IBMSG_CONNECTED);
  const unsigned short port = ibmsg_socket_port(&listener);
  ibmsg_socket no_callback;
  CHECK(connect_and_wait(&loop, &no_callback, port) == IBMSG_ERROR);
  CHECK_RC(ibmsg_socket_error(&no_callback), IBMSG_CONNECTION_REFUSED);

  /* A callback that does not accept rejects. */
  loop.connection_request = on_request;
  ibmsg_socket rejected;
  CHECK(connect_and_wait(&loop, &rejected, port) == IBMSG_ERROR);
  CHECK_RC(ibmsg_socket_error(&rejected), IBMSG_CONNECTION_REFUSED);
  CHECK(requests_seen == 1);
  /* Accepting the request after its callback returned is refused. */
  ibmsg_socket too_late;
  CHECK_RC(ibmsg_accept(&saved_request, &too_late), IBMSG_ACCEPT_FAILED);
  ibmsg_connection_request not_from_callback = {NULL, IBMSG_UNDECIDED, NULL};
  CHECK_RC(ibmsg_accept(&not_from_callback, &too_late), IBMSG_ACCEPT_FAILED);

  /* The listener still works: accepted this time. */
  accept_in_callback = 1;
  ibmsg_socket accepted;
  CHECK(connect_and_wait(&loop, &accepted, port) == IBMSG_CONNECTED);
  CHECK(requests_seen == 2);
  WAIT_UNTIL(&loop, NULL, accepted_socket.status == IBMSG_CONNECTED);

  /* Invalid addresses fail at once. */
  ibmsg_socket invalid;
  CHECK_RC(ibmsg_connect(&loop, &invalid, "300.1.2.3", 1234), IBMSG_GETADDRINFO_FAILED);
  CHECK(invalid.status == IBMSG_ERROR);
  CHECK_RC(ibmsg_connect(&loop, &invalid, "not a host name", 1234), IBMSG_GETADDRINFO_FAILED);
  ibmsg_socket bad_listener;
  CHECK_RC(ibmsg_listen(&loop, &bad_listener, "::1::2", 0, 4), IBMSG_GETADDRINFO_FAILED);
  /* Listening twice on the same port fails. */
  CHECK(ibmsg_listen(&loop, &bad_listener, test_address(), (short)port, 4) == IBMSG_BIND_FAILED);

  CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
  printf("refused, rejected (with and without callback) and invalid connects all ended in IBMSG_ERROR\n");
  return EXIT_SUCCESS;
}

/* A peer that never answers (as good as unreachable): the connect gives up after the transport's
 * connect timeout (10 s) and ends in IBMSG_ERROR too, instead of hanging. The silent peer is a
 * plain TCP listener: over TCP (also libfabric's tcp provider) it takes the connection in the
 * kernel and never says a word. Over verbs the RDMA connection manager does not talk to TCP
 * listeners at all, so it would only be "nobody listens" again: skipped there, as its own ctest
 * test, so that ctest and the Soft-RoCE runner show the skip. */
static int unanswered(void) {
  ibmsg_event_loop loop;
  CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_OK);
  if (test_loop_is_rdma(&loop)) {
    CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
    printf("SKIPPED: the peer that never answers: the loop runs over rdma, and the RDMA connection manager "
           "ignores the plain TCP listener that plays that peer\n");
    return TEST_SKIPPED;
  }
  unsigned short silent_port = 0;
  const int silent_fd = silent_listener(&silent_port);
  ibmsg_socket unanswered_socket;
  CHECK(connect_and_wait(&loop, &unanswered_socket, silent_port) == IBMSG_ERROR);
  CHECK_RC(ibmsg_socket_error(&unanswered_socket), IBMSG_CONNECTION_REFUSED);
  close(silent_fd);
  CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
  printf("the connect to a peer that never answers ended in IBMSG_ERROR\n");
  return EXIT_SUCCESS;
}

int main(int argc, char** argv) {
  if (argc == 2 && strcmp(argv[1], "unanswered") == 0) {
    return unanswered();
  }
  if (argc != 1) {
    fprintf(stderr, "usage: test_refusal [unanswered]\n");
    return EXIT_FAILURE;
  }
  return refusals();
}
