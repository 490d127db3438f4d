/*
 * IPv6 literals and host names through ibmsg_listen/ibmsg_connect, on loopback, for each transport
 * this build has (tcp and fabric-tcp; only the one IBMSG_TRANSPORT names when it is set):
 * - a listener on "::1" takes connections to "::1", "[::1]" and "0:0::1" (one address, written
 *   three ways), and messages arrive intact and in order on each;
 * - a listener on "::" takes connections to "::1" and, where the system makes it dual-stack
 *   (net.ipv6.bindv6only = 0, Linux's default), to "127.0.0.1" too;
 * - "localhost" works for both calls, and a dotted quad keeps working as before;
 * - a link-local address without its interface ("fe80::1") is refused by ibmsg_connect with
 *   IBMSG_GETADDRINFO_FAILED (the socket IBMSG_ERROR), as is an IPv6 text that is not one.
 * The two-host version (an IPv6-only pair of network namespaces) is in tests/faults
 * (faults_ipv6_test, IbmsgTools).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ibmsg_test_support.h"

#define MESSAGES (200)
#define MAX_SENDERS (8)

typedef struct {
  ibmsg_socket socket; /* first: the callbacks' socket pointer is the record's */
  uint64_t received;
  int established;
} receiver;

static receiver receivers[MAX_SENDERS];
static int accepted = 0;
static int failed_checks = 0;

static void on_request(ibmsg_connection_request* request) {
  CHECK(accepted < MAX_SENDERS);
  CHECK_RC(ibmsg_accept(request, &receivers[accepted++].socket), IBMSG_OK);
}

static void on_established(ibmsg_socket* socket) {
  if (socket->socket_type == IBMSG_RECV_SOCKET) {
    ((receiver*)socket)->established = 1;
  }
}

static void on_message(ibmsg_socket* socket, ibmsg_buffer* msg) {
  receiver* slot = (receiver*)socket;
  uint64_t sequence = 0;
  CHECK(msg->size >= sizeof sequence);
  memcpy(&sequence, msg->data, sizeof sequence);
  if (sequence != slot->received || check_pattern((uint8_t*)msg->data + sizeof sequence, msg->size - sizeof sequence,
                                                  sequence) != msg->size - sizeof sequence) {
    ++failed_checks;
  }
  ++slot->received;
  CHECK_RC(ibmsg_free_msg(msg), IBMSG_OK);
}

/* True when ::1 can be bound here (an IPv6 loopback exists). */
static int have_ipv6_loopback(void) {
  const int probe = socket(AF_INET6, SOCK_STREAM, 0);
  if (probe < 0) {
    return 0;
  }
  struct sockaddr_in6 loopback;
  memset(&loopback, 0, sizeof loopback);
  loopback.sin6_family = AF_INET6;
  loopback.sin6_addr = in6addr_loopback;
  const int ok = bind(probe, (struct sockaddr*)&loopback, sizeof loopback) == 0;
  close(probe);
  return ok;
}

/* net.ipv6.bindv6only: 0 means a socket bound to :: takes IPv4 connections too. */
static int ipv6_wildcard_takes_ipv4(void) {
  FILE* file = fopen("/proc/sys/net/ipv6/bindv6only", "r");
  int value = 1;
  if (file != NULL) {
    if (fscanf(file, "%d", &value) != 1) {
      value = 1;
    }
    fclose(file);
  }
  return value == 0;
}

/* Connects one sender per address in `targets` (same loop) to `port`, sends MESSAGES messages on
 * each and checks that each arrived on its own RECV socket, in order and intact. */
static void exchange(ibmsg_event_loop* loop, char* const* targets, int count, unsigned short port) {
  ibmsg_socket senders[MAX_SENDERS];
  CHECK(count <= MAX_SENDERS);
  memset(receivers, 0, sizeof receivers);
  accepted = 0;
  failed_checks = 0;
  for (int i = 0; i < count; ++i) {
    CHECK_RC(ibmsg_connect(loop, &senders[i], targets[i], port), IBMSG_OK);
  }
  int all_connected = 0;
  const double deadline = test_now() + TEST_HANG_GUARD_SECONDS;
  while (!all_connected) {
    CHECK(test_now() < deadline);
    CHECK_RC(ibmsg_dispatch_event_loop_timeout(loop, 10), IBMSG_OK);
    all_connected = accepted == count;
    for (int i = 0; i < count; ++i) {
      if (senders[i].status == IBMSG_ERROR) {
        fprintf(stderr, "connecting to %s port %u failed: %s\n", targets[i], port,
                ibmsg_strerror(ibmsg_socket_error(&senders[i])));
        exit(EXIT_FAILURE);
      }
      all_connected = all_connected && senders[i].status == IBMSG_CONNECTED && receivers[i].established;
    }
  }
  for (int i = 0; i < count; ++i) {
    for (uint64_t sequence = 0; sequence < MESSAGES; ++sequence) {
      ibmsg_buffer buffer;
      const size_t size = sizeof sequence + (size_t)(sequence * 13u % 700u);
      CHECK_RC(ibmsg_alloc_msg(&buffer, &senders[i], size), IBMSG_OK);
      memcpy(buffer.data, &sequence, sizeof sequence);
      fill_pattern((uint8_t*)buffer.data + sizeof sequence, size - sizeof sequence, sequence);
      int rc = ibmsg_post_send(&senders[i], &buffer);
      while (rc == IBMSG_NO_RESOURCES) {
        CHECK(test_now() < deadline);
        CHECK_RC(ibmsg_dispatch_event_loop_timeout(loop, 1), IBMSG_OK);
        rc = ibmsg_post_send(&senders[i], &buffer);
      }
      CHECK_RC(rc, IBMSG_OK);
      WAIT_UNTIL(loop, NULL, buffer.status == IBMSG_SENT);
      CHECK_RC(ibmsg_free_msg(&buffer), IBMSG_OK);
    }
  }
  int all_received = 0;
  while (!all_received) {
    CHECK(test_now() < deadline);
    CHECK_RC(ibmsg_dispatch_event_loop_timeout(loop, 10), IBMSG_OK);
    all_received = 1;
    for (int i = 0; i < count; ++i) {
      all_received = all_received && receivers[i].received == MESSAGES;
    }
  }
  CHECK(failed_checks == 0);
  for (int i = 0; i < count; ++i) {
    CHECK_RC(ibmsg_disconnect(&senders[i]), IBMSG_OK);
  }
  /* The RECV sockets are the library's until they are unconnected: only then may they be reused. */
  int all_closed = 0;
  while (!all_closed) {
    CHECK(test_now() < deadline);
    CHECK_RC(ibmsg_dispatch_event_loop_timeout(loop, 10), IBMSG_OK);
    all_closed = 1;
    for (int i = 0; i < count; ++i) {
      all_closed =
          all_closed && senders[i].status == IBMSG_UNCONNECTED && receivers[i].socket.status == IBMSG_UNCONNECTED;
    }
  }
}

/* One transport: every case above. Returns 0 when it ran, 1 when the transport is not here. */
static int run_cases(const char* transport) {
  ibmsg_event_loop loop;
  const int init = ibmsg_init_event_loop(&loop);
  if (init == IBMSG_TRANSPORT_UNAVAILABLE) {
    printf("transport %s: not available in this build, not tested\n", transport);
    return 1;
  }
  CHECK_RC(init, IBMSG_OK);
  loop.connection_request = on_request;
  loop.connection_established = on_established;
  loop.message_received = on_message;

  /* One address written three ways. */
  ibmsg_socket listener;
  CHECK_RC(ibmsg_listen(&loop, &listener, "::1", 0, 8), IBMSG_OK);
  char* const loopback_forms[] = {"::1", "[::1]", "0:0::1"};
  exchange(&loop, loopback_forms, 3, ibmsg_socket_port(&listener));
  CHECK_RC(ibmsg_disconnect(&listener), IBMSG_OK);

  /* The IPv6 wildcard. */
  CHECK_RC(ibmsg_listen(&loop, &listener, "::", 0, 8), IBMSG_OK);
  char* const wildcard_targets[] = {"::1", "127.0.0.1"};
  const int dual_stack = ipv6_wildcard_takes_ipv4();
  exchange(&loop, wildcard_targets, dual_stack ? 2 : 1, ibmsg_socket_port(&listener));
  if (!dual_stack) {
    printf("transport %s: net.ipv6.bindv6only is 1 here: a listener on :: takes IPv6 only, 127.0.0.1 not tried\n",
           transport);
  }
  CHECK_RC(ibmsg_disconnect(&listener), IBMSG_OK);

  /* A host name on both sides, and a dotted quad as before. */
  CHECK_RC(ibmsg_listen(&loop, &listener, "localhost", 0, 8), IBMSG_OK);
  char* const name_targets[] = {"localhost"};
  exchange(&loop, name_targets, 1, ibmsg_socket_port(&listener));
  CHECK_RC(ibmsg_disconnect(&listener), IBMSG_OK);
  CHECK_RC(ibmsg_listen(&loop, &listener, "127.0.0.1", 0, 8), IBMSG_OK);
  char* const quad_targets[] = {"127.0.0.1"};
  exchange(&loop, quad_targets, 1, ibmsg_socket_port(&listener));
  CHECK_RC(ibmsg_disconnect(&listener), IBMSG_OK);

  /* Addresses that cannot be used: refused by the call, the socket in IBMSG_ERROR. */
  ibmsg_socket bad;
  CHECK_RC(ibmsg_connect(&loop, &bad, "fe80::1", 4000), IBMSG_GETADDRINFO_FAILED);
  CHECK(bad.status == IBMSG_ERROR);
  CHECK_RC(ibmsg_connect(&loop, &bad, "::1::2", 4000), IBMSG_GETADDRINFO_FAILED);
  CHECK(bad.status == IBMSG_ERROR);
  CHECK_RC(ibmsg_listen(&loop, &bad, "fe80::1", 0, 1), IBMSG_GETADDRINFO_FAILED);

  CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
  printf("transport %s: IPv6 literals, ::, names and dotted quads work\n", transport);
  return 0;
}

int main(void) {
  if (!have_ipv6_loopback()) {
    printf("SKIPPED: ::1 is not configured on this machine (no IPv6 loopback)\n");
    return TEST_SKIPPED;
  }
  const char* forced = getenv("IBMSG_TRANSPORT");
  if (forced != NULL && forced[0] != '\0') {
    if (strcmp(forced, "rdma") == 0) {
      /* The verbs provider cannot connect over the loopback device (docs/rdma-vm.md). */
      printf("SKIPPED: IBMSG_TRANSPORT=rdma: verbs has no loopback device (no IPv6 over verbs here)\n");
      return TEST_SKIPPED;
    }
    CHECK(run_cases(forced) == 0);
    return EXIT_SUCCESS;
  }
  int ran = 0;
  const char* const transports[] = {"tcp", "fabric-tcp"};
  for (size_t i = 0; i < sizeof transports / sizeof transports[0]; ++i) {
    CHECK(setenv("IBMSG_TRANSPORT", transports[i], 1) == 0);
    ran += run_cases(transports[i]) == 0;
  }
  CHECK(ran > 0);
  return EXIT_SUCCESS;
}
