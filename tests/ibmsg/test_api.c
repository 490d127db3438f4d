/*
 * The API surface: numeric values of the original enumerators, ibmsg_strerror, argument checks,
 * the transport choice (IBMSG_TRANSPORT), and the dispatch decision: ibmsg_dispatch_event_loop
 * blocks until at least one event was handled (checked with a peer in another thread that connects
 * later: when the single blocking dispatch returns, an event has been handled), returns at once
 * when the loop has no socket, and ibmsg_dispatch_event_loop_timeout returns when nothing happens.
 */
#include <dirent.h>
#include <pthread.h>

#include "ibmsg_test_support.h"

static void check_original_values(void) {
  /* The original's numbering, which compiled programs and stored codes rely on. */
  CHECK(IBMSG_OK == 0 && IBMSG_FCNTL_FAILED == 1 && IBMSG_GETADDRINFO_FAILED == 2 && IBMSG_CREATE_ID_FAILED == 3);
  CHECK(IBMSG_BIND_FAILED == 4 && IBMSG_LISTEN_FAILED == 5 && IBMSG_ADDRESS_RESOLUTION_FAILED == 6);
  CHECK(IBMSG_FETCH_EVENT_FAILED == 7 && IBMSG_ACK_EVENT_FAILED == 8 && IBMSG_ALLOC_FAILED == 9);
  CHECK(IBMSG_MEMORY_REGISTRATION_FAILED == 10 && IBMSG_POST_SEND_FAILED == 11 && IBMSG_DISCONNECT_FAILED == 12);
  CHECK(IBMSG_FREE_BUFFER_FAILED == 13 && IBMSG_CREATE_QP_FAILED == 14 && IBMSG_ACCEPT_FAILED == 15);
  CHECK(IBMSG_EPOLL_FAILED == 16 && IBMSG_EPOLL_ADD_FD_FAILED == 17 && IBMSG_EPOLL_WAIT_FAILED == 18);
  CHECK(IBMSG_UNDECIDED == 0 && IBMSG_ACCEPTED == 1);
  CHECK(IBMSG_WAITING == 0 && IBMSG_SENT == 1 && IBMSG_RECEIVED == 2);
  CHECK(IBMSG_UNCONNECTED == 0 && IBMSG_ADDRESS_RESOLVED == 1 && IBMSG_ROUTE_RESOLVED == 2 && IBMSG_CONNECTED == 3);
  CHECK(IBMSG_DISCONNECTING == 4 && IBMSG_ERROR == 5);
  CHECK(IBMSG_LISTEN_SOCKET == 0 && IBMSG_RECV_SOCKET == 1 && IBMSG_SEND_SOCKET == 2);
  CHECK(IBMSG_MAX_MSGSIZE == 4096);
  CHECK(sizeof(ibmsg_connection) == sizeof(ibmsg_socket)); /* the earlier name of the socket type */
  /* Additions come after the original codes. */
  CHECK(IBMSG_MESSAGE_TOO_LARGE > IBMSG_EPOLL_WAIT_FAILED && IBMSG_NOT_SENT > IBMSG_RECEIVED);
}

static void check_strerror(void) {
  for (int code = IBMSG_OK; code <= IBMSG_INTERNAL_ERROR; ++code) {
    const char* text = ibmsg_strerror(code);
    CHECK(text != NULL && text[0] != '\0');
    CHECK(strcmp(text, "unknown error code") != 0);
    for (int other = IBMSG_OK; other < code; ++other) {
      CHECK(strcmp(text, ibmsg_strerror(other)) != 0);
    }
  }
  CHECK(strcmp(ibmsg_strerror(-1), "unknown error code") == 0);
  CHECK(strcmp(ibmsg_strerror(IBMSG_INTERNAL_ERROR + 1), "unknown error code") == 0);
}

static void check_arguments(void) {
  ibmsg_event_loop loop;
  ibmsg_socket socket;
  ibmsg_buffer msg;
  CHECK_RC(ibmsg_init_event_loop(NULL), IBMSG_INVALID_ARGUMENT);
  CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_OK);
  CHECK(loop.epollfd == -1 && loop.event_channel == NULL);
  CHECK_RC(ibmsg_connect(&loop, &socket, NULL, 1), IBMSG_INVALID_ARGUMENT);
  CHECK_RC(ibmsg_connect(&loop, NULL, test_address(), 1), IBMSG_INVALID_ARGUMENT);
  CHECK_RC(ibmsg_listen(&loop, NULL, test_address(), 0, 1), IBMSG_INVALID_ARGUMENT);
  CHECK_RC(ibmsg_disconnect(NULL), IBMSG_INVALID_ARGUMENT);
  CHECK_RC(ibmsg_accept(NULL, &socket), IBMSG_INVALID_ARGUMENT);
  CHECK_RC(ibmsg_alloc_msg(NULL, &socket, 1), IBMSG_INVALID_ARGUMENT);
  CHECK_RC(ibmsg_free_msg(NULL), IBMSG_FREE_BUFFER_FAILED);
  CHECK_RC(ibmsg_post_send(NULL, &msg), IBMSG_INVALID_ARGUMENT);
  CHECK_RC(ibmsg_set_max_msgsize(NULL, 100), IBMSG_INVALID_ARGUMENT);
  CHECK(ibmsg_get_max_msgsize(NULL) == 0);
  CHECK(ibmsg_transport_name(NULL) == NULL);
  CHECK(ibmsg_socket_port(NULL) == 0);
  CHECK_RC(ibmsg_socket_error(NULL), IBMSG_INVALID_ARGUMENT);

  /* Sending needs a SEND socket: not a listener, not a buffer that was never allocated. */
  ibmsg_socket listener;
  CHECK_RC(ibmsg_listen(&loop, &listener, test_address(), 0, 0), IBMSG_OK);
  CHECK_RC(ibmsg_alloc_msg(&msg, &listener, 64), IBMSG_OK);
  CHECK_RC(ibmsg_post_send(&listener, &msg), IBMSG_INVALID_ARGUMENT);
  CHECK_RC(ibmsg_free_msg(&msg), IBMSG_OK);
  CHECK_RC(ibmsg_free_msg(&msg), IBMSG_FREE_BUFFER_FAILED);
  ibmsg_buffer never_allocated = {NULL, NULL, 0, IBMSG_WAITING, NULL};
  CHECK_RC(ibmsg_free_msg(&never_allocated), IBMSG_FREE_BUFFER_FAILED);
  CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
  CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_INVALID_ARGUMENT); /* twice */
}

/* True when the machine lists an RDMA device (as libibverbs does, through sysfs). */
static int rdma_device_present(void) {
  DIR* directory = opendir("/sys/class/infiniband");
  if (directory == NULL) {
    return 0;
  }
  int found = 0;
  struct dirent* entry;
  while ((entry = readdir(directory)) != NULL) {
    found |= entry->d_name[0] != '.';
  }
  closedir(directory);
  return found;
}

static void check_transport_choice(void) {
  ibmsg_event_loop loop;
  const char* forced = getenv("IBMSG_TRANSPORT");
  char* saved = forced == NULL ? NULL : strdup(forced);

  setenv("IBMSG_TRANSPORT", "carrier-pigeon", 1);
  CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_INVALID_ARGUMENT);

  setenv("IBMSG_TRANSPORT", "tcp", 1);
  if (IBMSG_TEST_HAVE_TCP) {
    CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_OK);
    CHECK(strcmp(ibmsg_transport_name(&loop), "tcp") == 0);
    CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
  } else {
    CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_TRANSPORT_UNAVAILABLE); /* not in this build */
  }

  setenv("IBMSG_TRANSPORT", "rdma", 1);
  const int rc = ibmsg_init_event_loop(&loop);
  if (!rdma_device_present()) {
    CHECK_RC(rc, IBMSG_TRANSPORT_UNAVAILABLE); /* forced, but this machine has no RDMA device */
  } else if (rc == IBMSG_OK) {
    CHECK(strcmp(ibmsg_transport_name(&loop), "rdma") == 0);
    CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
  } else {
    CHECK_RC(rc, IBMSG_TRANSPORT_UNAVAILABLE); /* a device, but no libfabric backend in this build */
  }

  unsetenv("IBMSG_TRANSPORT");
  if (IBMSG_TEST_HAVE_TCP || rdma_device_present()) {
    CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_OK);
    const char* chosen = ibmsg_transport_name(&loop);
    CHECK(strcmp(chosen, "tcp") == 0 || strcmp(chosen, "rdma") == 0);
    CHECK(rdma_device_present() || strcmp(chosen, "tcp") == 0);
    CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
  }

  if (saved != NULL) {
    setenv("IBMSG_TRANSPORT", saved, 1);
    free(saved);
  }
}

/* --- the dispatch decision ----------------------------------------------------------------------- */

static int events_handled = 0;
static ibmsg_socket accepted_socket;

static void count_request(ibmsg_connection_request* request) {
  ++events_handled;
  CHECK_RC(ibmsg_accept(request, &accepted_socket), IBMSG_OK);
}

static void count_established(ibmsg_socket* socket) {
  (void)socket;
  ++events_handled;
}

typedef struct {
  unsigned short port;
  pthread_mutex_t mutex;
  int may_connect;
  int may_finish;
  pthread_cond_t changed;
} peer_control;

/* Another thread with its own loop: connects when told, waits, then disconnects. */
static void* peer_thread(void* argument) {
  peer_control* control = (peer_control*)argument;
  pthread_mutex_lock(&control->mutex);
  while (!control->may_connect) {
    pthread_cond_wait(&control->changed, &control->mutex);
  }
  pthread_mutex_unlock(&control->mutex);
  ibmsg_event_loop loop;
  ibmsg_socket socket;
  CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_OK);
  CHECK_RC(ibmsg_connect(&loop, &socket, test_address(), control->port), IBMSG_OK);
  while (socket.status != IBMSG_CONNECTED) {
    CHECK_RC(ibmsg_dispatch_event_loop(&loop), IBMSG_OK);
    CHECK(socket.status != IBMSG_ERROR);
  }
  pthread_mutex_lock(&control->mutex);
  while (!control->may_finish) {
    pthread_cond_wait(&control->changed, &control->mutex);
  }
  pthread_mutex_unlock(&control->mutex);
  CHECK_RC(ibmsg_disconnect(&socket), IBMSG_OK);
  while (socket.status != IBMSG_UNCONNECTED) {
    CHECK_RC(ibmsg_dispatch_event_loop(&loop), IBMSG_OK);
  }
  CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
  return NULL;
}

static void set_flag(peer_control* control, int* flag) {
  pthread_mutex_lock(&control->mutex);
  *flag = 1;
  pthread_cond_broadcast(&control->changed);
  pthread_mutex_unlock(&control->mutex);
}

static void check_dispatch_decision(void) {
  ibmsg_event_loop loop;
  CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_OK);
  /* No socket: nothing could ever happen, so even the blocking dispatch returns at once. */
  CHECK_RC(ibmsg_dispatch_event_loop(&loop), IBMSG_OK);

  loop.connection_request = count_request;
  loop.connection_established = count_established;
  ibmsg_socket listener;
  CHECK_RC(ibmsg_listen(&loop, &listener, test_address(), 0, 4), IBMSG_OK);
  /* With a timeout and nothing happening, dispatch returns without an event. */
  CHECK_RC(ibmsg_dispatch_event_loop_timeout(&loop, 20), IBMSG_OK);
  CHECK_RC(ibmsg_dispatch_event_loop_timeout(&loop, 0), IBMSG_OK);
  CHECK(events_handled == 0);

  peer_control control;
  memset(&control, 0, sizeof control);
  control.port = ibmsg_socket_port(&listener);
  pthread_mutex_init(&control.mutex, NULL);
  pthread_cond_init(&control.changed, NULL);
  pthread_t peer;
  CHECK(pthread_create(&peer, NULL, peer_thread, &control) == 0);
  set_flag(&control, &control.may_connect);
  /* One blocking dispatch: it may only return once it has handled an event (the request). */
  CHECK_RC(ibmsg_dispatch_event_loop(&loop), IBMSG_OK);
  CHECK(events_handled >= 1);
  WAIT_UNTIL(&loop, NULL, accepted_socket.status == IBMSG_CONNECTED);
  CHECK(events_handled == 2);
  set_flag(&control, &control.may_finish);
  /* Blocking dispatches until the peer's disconnect arrives. */
  while (accepted_socket.status != IBMSG_UNCONNECTED) {
    CHECK_RC(ibmsg_dispatch_event_loop(&loop), IBMSG_OK);
  }
  CHECK(pthread_join(peer, NULL) == 0);
  pthread_mutex_destroy(&control.mutex);
  pthread_cond_destroy(&control.changed);
  CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
}

int main(void) {
  check_original_values();
  check_strerror();
  check_arguments();
  check_transport_choice();
  check_dispatch_decision();
  printf("API values, arguments, transport choice and dispatch semantics as documented\n");
  return EXIT_SUCCESS;
}
