/*
 * ibmsg-recv: listens for ibmsg-send connections and receives their messages.
 *
 *   ibmsg-recv [-n COUNT] [-s SIZE] [-c] [-q] IP [PORT]
 *
 * Without options it behaves as the original example: listen on IP:PORT (default port 12345),
 * accept every connection, print "connection established" and "message received" for each, until
 * interrupted. -n stops after COUNT messages and prints the receiver-side throughput (from the first
 * message to the last); -s accepts messages of up to SIZE bytes; -c checks every message against
 * what ibmsg-send writes (sequence numbers consecutive per connection, pattern intact) and exits
 * with status 1 on a mismatch; -q prints only the summary. SIGINT/SIGTERM end it cleanly.
 */
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ibmsg.h>

#define APPLICATION_NAME "ibmsg-recv"
#define DEFAULT_PORT (12345)
#define MAX_CONNECTIONS (64)

/* One accepted connection. The socket comes first, so that the socket pointer the callbacks get
 * is also the pointer to its connection. */
typedef struct connection {
  ibmsg_socket socket;
  uint64_t next_sequence;
  int was_established;
  struct connection* next;
} connection;

static volatile sig_atomic_t interrupted = 0;
static connection* connections = NULL;
static int quiet = 0;
static int check_content = 0;
static unsigned long long received = 0;
static unsigned long long received_bytes = 0;
static unsigned long long mismatches = 0;
static double first_message_time = 0;
static double last_message_time = 0;

static void usage(FILE* out) {
  fprintf(out,
          "usage: " APPLICATION_NAME " [-n COUNT] [-s SIZE] [-c] [-q] IP [PORT]\n"
          "  Listens on IP:PORT (default port %d) and receives messages from ibmsg-send. IP: an IPv4 or\n"
          "  IPv6 address (fe80::1%%eth0 for a link-local one) or a host name; 0.0.0.0 or :: for all.\n"
          "  -n COUNT  stop after COUNT messages and print the throughput\n"
          "  -s SIZE   accept messages of up to SIZE bytes (default 4096, or IBMSG_MAX_MSGSIZE)\n"
          "  -c        check sequence numbers and contents of what ibmsg-send sends\n"
          "  -q        print only the summary\n"
          "  example: " APPLICATION_NAME " -n 100000 -s 1024 -q 127.0.0.1 12345\n",
          DEFAULT_PORT);
}

static double now_seconds(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

static void on_signal(int signal_number) {
  (void)signal_number;
  interrupted = 1;
}

static int parse_number(const char* text, unsigned long long minimum, unsigned long long maximum,
                        unsigned long long* value) {
  char* end = NULL;
  const unsigned long long parsed = strtoull(text, &end, 10);
  if (end == text || *end != '\0' || text[0] == '-' || parsed < minimum || parsed > maximum) {
    return 0;
  }
  *value = parsed;
  return 1;
}

static void connection_request(ibmsg_connection_request* request) {
  connection* accepted = calloc(1, sizeof(connection));
  if (accepted == NULL) {
    return; /* not accepted: rejected */
  }
  if (ibmsg_accept(request, &accepted->socket) != IBMSG_OK) {
    free(accepted);
    return;
  }
  accepted->next = connections;
  connections = accepted;
}

static void connection_established(ibmsg_socket* socket) {
  ((connection*)socket)->was_established = 1;
  if (!quiet) {
    printf("connection established\n");
  }
}

/* Checks what ibmsg-send writes: the sequence number, then (sequence + offset) & 0xff. */
static void check_message(connection* from, const uint8_t* data, size_t size) {
  uint64_t sequence = 0;
  size_t offset = 0;
  for (; offset < 8 && offset < size; ++offset) {
    sequence |= (uint64_t)data[offset] << (8 * offset);
  }
  if (size >= 8 && sequence != from->next_sequence) {
    fprintf(stderr, APPLICATION_NAME ": error: message %llu arrived where %llu was expected\n",
            (unsigned long long)sequence, (unsigned long long)from->next_sequence);
    ++mismatches;
  }
  if (size < 8) {
    sequence = from->next_sequence;
  }
  for (; offset < size; ++offset) {
    if (data[offset] != (uint8_t)((sequence + offset) & 0xffu)) {
      fprintf(stderr, APPLICATION_NAME ": error: message %llu is corrupt at byte %zu\n", (unsigned long long)sequence,
              offset);
      ++mismatches;
      break;
    }
  }
  from->next_sequence = sequence + 1;
}

static void message_received(ibmsg_socket* socket, ibmsg_buffer* msg) {
  const double now = now_seconds();
  if (received == 0) {
    first_message_time = now;
  }
  last_message_time = now;
  ++received;
  received_bytes += msg->size;
  if (check_content) {
    check_message((connection*)socket, msg->data, msg->size);
  }
  if (!quiet) {
    printf("message received\n");
  }
  if (ibmsg_free_msg(msg) != IBMSG_OK) {
    fprintf(stderr, APPLICATION_NAME ": error: could not free a message\n");
  }
}

/* Frees the connections whose socket the library no longer uses (closed after being established,
 * or failed; an accepted socket is IBMSG_UNCONNECTED until it is established). */
static void free_closed_connections(void) {
  connection** link = &connections;
  while (*link != NULL) {
    connection* current = *link;
    if ((current->was_established && current->socket.status == IBMSG_UNCONNECTED) ||
        current->socket.status == IBMSG_ERROR) {
      *link = current->next;
      free(current);
    } else {
      link = &current->next;
    }
  }
}

int main(int argc, char** argv) {
  unsigned long long count = 0;
  unsigned long long size = 0;
  int option;
  while ((option = getopt(argc, argv, "n:s:cqh")) != -1) {
    switch (option) {
    case 'n':
      if (!parse_number(optarg, 1, UINT64_MAX, &count)) {
        fprintf(stderr, APPLICATION_NAME ": error: -n needs a positive number, got '%s'\n", optarg);
        return EXIT_FAILURE;
      }
      break;
    case 's':
      if (!parse_number(optarg, 1, 64ull << 20, &size)) {
        fprintf(stderr, APPLICATION_NAME ": error: -s needs a size from 1 to 67108864, got '%s'\n", optarg);
        return EXIT_FAILURE;
      }
      break;
    case 'c': check_content = 1; break;
    case 'q': quiet = 1; break;
    case 'h': usage(stdout); return EXIT_SUCCESS;
    default: usage(stderr); return EXIT_FAILURE;
    }
  }
  if (argc - optind < 1 || argc - optind > 2) {
    fprintf(stderr, APPLICATION_NAME ": error: illegal number of arguments\n");
    usage(stderr);
    return EXIT_FAILURE;
  }
  char* ip = argv[optind];
  unsigned long long port = DEFAULT_PORT;
  if (argc - optind == 2 && !parse_number(argv[optind + 1], 0, 65535, &port)) {
    fprintf(stderr, APPLICATION_NAME ": error: PORT must be a number from 0 to 65535, got '%s'\n", argv[optind + 1]);
    return EXIT_FAILURE;
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  ibmsg_event_loop event_loop;
  int rc = ibmsg_init_event_loop(&event_loop);
  if (rc != IBMSG_OK) {
    fprintf(stderr, APPLICATION_NAME ": error: could not initialize the event loop: %s\n", ibmsg_strerror(rc));
    return EXIT_FAILURE;
  }
  if (size > ibmsg_get_max_msgsize(&event_loop) && (rc = ibmsg_set_max_msgsize(&event_loop, size)) != IBMSG_OK) {
    fprintf(stderr, APPLICATION_NAME ": error: could not set the largest message size: %s\n", ibmsg_strerror(rc));
    return EXIT_FAILURE;
  }
  event_loop.connection_request = connection_request;
  event_loop.connection_established = connection_established;
  event_loop.message_received = message_received;

  /* An IPv6 address is printed in brackets, "[::1]:12345", so that the port stands apart. */
  const int is_ipv6 = strchr(ip, ':') != NULL && ip[0] != '[';
  const char* const open_bracket = is_ipv6 ? "[" : "";
  const char* const close_bracket = is_ipv6 ? "]" : "";
  ibmsg_socket listen_socket;
  if ((rc = ibmsg_listen(&event_loop, &listen_socket, ip, (short)port, MAX_CONNECTIONS)) != IBMSG_OK) {
    fprintf(stderr, APPLICATION_NAME ": error: could not listen on %s%s%s:%llu: %s\n", open_bracket, ip, close_bracket,
            port, ibmsg_strerror(rc));
    return EXIT_FAILURE;
  }
  if (!quiet) {
    printf("listening on %s%s%s:%u over %s\n", open_bracket, ip, close_bracket, ibmsg_socket_port(&listen_socket),
           ibmsg_transport_name(&event_loop));
  }
  fflush(stdout);

  int status = EXIT_SUCCESS;
  while (!interrupted && (count == 0 || received < count)) {
    /* A bounded wait, so that a signal ends the loop promptly. */
    rc = ibmsg_dispatch_event_loop_timeout(&event_loop, 200);
    if (rc != IBMSG_OK) {
      fprintf(stderr, APPLICATION_NAME ": error: something went wrong while working in the event loop: %s\n",
              ibmsg_strerror(rc));
      status = EXIT_FAILURE;
      break;
    }
    free_closed_connections();
    if (!quiet) {
      fflush(stdout);
    }
  }

  if (count > 0) {
    const double elapsed = last_message_time - first_message_time;
    const double seconds = elapsed > 0 ? elapsed : 1e-9;
    printf("received %llu messages, %llu bytes over %s in %.3f s: %.0f msg/s, %.1f MB/s\n", received, received_bytes,
           ibmsg_transport_name(&event_loop), elapsed, (double)received / seconds,
           (double)received_bytes / seconds / 1e6);
  }
  if (check_content && mismatches > 0) {
    fprintf(stderr, APPLICATION_NAME ": error: %llu messages were out of order or corrupt\n", mismatches);
    status = EXIT_FAILURE;
  }

  if (ibmsg_disconnect(&listen_socket) != IBMSG_OK) {
    fprintf(stderr, APPLICATION_NAME ": error: could not disconnect the listening socket\n");
  }
  if (ibmsg_destroy_event_loop(&event_loop) != IBMSG_OK) {
    fprintf(stderr, APPLICATION_NAME ": error: could not destroy the event loop\n");
  }
  while (connections != NULL) { /* the library no longer uses them */
    connection* next = connections->next;
    free(connections);
    connections = next;
  }
  return status;
}
