/*
 * ibmsg-send: connects to an ibmsg-recv and sends messages.
 *
 *   ibmsg-send [-n COUNT] [-s SIZE] [-w WINDOW] [-v] IP [PORT]
 *
 * Without options it behaves as the original example: connect to IP:PORT (default port 12345),
 * send one 4096-byte message, wait until it is sent, free it, disconnect and wait until the socket
 * is unconnected. -n sends COUNT messages, -s makes them SIZE bytes (raising the largest message of
 * the loop if needed; the receiver needs the same -s), -w keeps up to WINDOW sends in flight
 * (default 64). With -n, -s or -v a summary with the sender-side throughput is printed.
 *
 * Each message starts with its sequence number (8 bytes, little endian) when it is at least 8
 * bytes long, followed by a pattern that ibmsg-recv -c checks.
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ibmsg.h>

#define APPLICATION_NAME "ibmsg-send"
#define DEFAULT_PORT (12345)
#define DEFAULT_SIZE (4096)
#define DEFAULT_WINDOW (64)

static void usage(FILE* out) {
  fprintf(out,
          "usage: " APPLICATION_NAME " [-n COUNT] [-s SIZE] [-w WINDOW] [-v] IP [PORT]\n"
          "  Connects to an ibmsg-recv at IP:PORT (default port %d) and sends messages. IP: an IPv4 or\n"
          "  IPv6 address (fe80::1%%eth0 for a link-local one) or a host name (each address tried in turn).\n"
          "  -n COUNT   number of messages (default 1)\n"
          "  -s SIZE    bytes per message (default %d; the receiver needs -s SIZE too if larger)\n"
          "  -w WINDOW  sends in flight at once (default %d)\n"
          "  -v         print a summary even without -n/-s\n"
          "  The transport is RDMA when an RDMA device is present, TCP otherwise\n"
          "  (IBMSG_TRANSPORT=rdma|tcp forces it). NETIO3_LOG=debug logs what the library does.\n"
          "  example: " APPLICATION_NAME " -n 100000 -s 1024 127.0.0.1 12345\n",
          DEFAULT_PORT, DEFAULT_SIZE, DEFAULT_WINDOW);
}

static double now_seconds(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
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

/* Writes the sequence number and the pattern ibmsg-recv -c expects. */
static void fill_message(uint8_t* data, size_t size, uint64_t sequence) {
  size_t offset = 0;
  for (; offset < 8 && offset < size; ++offset) {
    data[offset] = (uint8_t)(sequence >> (8 * offset));
  }
  for (; offset < size; ++offset) {
    data[offset] = (uint8_t)((sequence + offset) & 0xffu);
  }
}

static void fail(const char* what, int error) {
  fprintf(stderr, APPLICATION_NAME ": error: %s: %s\n", what, ibmsg_strerror(error));
  exit(EXIT_FAILURE);
}

int main(int argc, char** argv) {
  unsigned long long count = 1;
  unsigned long long size = DEFAULT_SIZE;
  unsigned long long window = DEFAULT_WINDOW;
  int summary = 0;
  int option;
  while ((option = getopt(argc, argv, "n:s:w:vh")) != -1) {
    switch (option) {
    case 'n':
      if (!parse_number(optarg, 1, UINT64_MAX, &count)) {
        fprintf(stderr, APPLICATION_NAME ": error: -n needs a positive number, got '%s'\n", optarg);
        return EXIT_FAILURE;
      }
      summary = 1;
      break;
    case 's':
      if (!parse_number(optarg, 0, 64ull << 20, &size)) {
        fprintf(stderr, APPLICATION_NAME ": error: -s needs a size from 0 to 67108864, got '%s'\n", optarg);
        return EXIT_FAILURE;
      }
      summary = 1;
      break;
    case 'w':
      if (!parse_number(optarg, 1, 4096, &window)) {
        fprintf(stderr, APPLICATION_NAME ": error: -w needs a number from 1 to 4096, got '%s'\n", optarg);
        return EXIT_FAILURE;
      }
      break;
    case 'v': summary = 1; break;
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
  if (argc - optind == 2 && !parse_number(argv[optind + 1], 1, 65535, &port)) {
    fprintf(stderr, APPLICATION_NAME ": error: PORT must be a number from 1 to 65535, got '%s'\n", argv[optind + 1]);
    return EXIT_FAILURE;
  }
  if (window > count) {
    window = count;
  }

  ibmsg_event_loop event_loop;
  int rc = ibmsg_init_event_loop(&event_loop);
  if (rc != IBMSG_OK) {
    fail("could not initialize the event loop", rc);
  }
  if (size > ibmsg_get_max_msgsize(&event_loop) && (rc = ibmsg_set_max_msgsize(&event_loop, size)) != IBMSG_OK) {
    fail("could not raise the largest message size", rc);
  }

  ibmsg_socket connection;
  if ((rc = ibmsg_connect(&event_loop, &connection, ip, (unsigned short)port)) != IBMSG_OK) {
    fail("could not connect to the remote host", rc);
  }
  while (connection.status != IBMSG_CONNECTED) {
    ibmsg_dispatch_event_loop(&event_loop);
    if (connection.status == IBMSG_ERROR) {
      fail("could not connect to the remote host", ibmsg_socket_error(&connection));
    }
  }

  ibmsg_buffer* buffers = calloc((size_t)window, sizeof(ibmsg_buffer));
  char* in_flight = calloc((size_t)window, 1);
  if (buffers == NULL || in_flight == NULL) {
    fail("could not allocate the send window", IBMSG_ALLOC_FAILED);
  }
  for (unsigned long long index = 0; index < window; ++index) {
    if ((rc = ibmsg_alloc_msg(&buffers[index], &connection, (size_t)size)) != IBMSG_OK) {
      fail("could not allocate message memory", rc);
    }
  }

  const double start = now_seconds();
  unsigned long long posted = 0;
  unsigned long long completed = 0;
  unsigned long long retries = 0;
  while (completed < count) {
    for (unsigned long long index = 0; index < window && posted < count; ++index) {
      if (in_flight[index]) {
        continue;
      }
      fill_message(buffers[index].data, buffers[index].size, posted);
      rc = ibmsg_post_send(&connection, &buffers[index]);
      if (rc == IBMSG_NO_RESOURCES) {
        ++retries; /* backpressure: dispatch, then retry */
        break;
      }
      if (rc != IBMSG_OK) {
        fail("could not send a message", rc);
      }
      in_flight[index] = 1;
      ++posted;
    }
    rc = ibmsg_dispatch_event_loop(&event_loop);
    if (rc != IBMSG_OK) {
      fail("something went wrong while working in the event loop", rc);
    }
    if (connection.status == IBMSG_ERROR) {
      fail("the connection failed", ibmsg_socket_error(&connection));
    }
    for (unsigned long long index = 0; index < window; ++index) {
      if (in_flight[index] && buffers[index].status == IBMSG_SENT) {
        in_flight[index] = 0;
        ++completed;
      } else if (in_flight[index] && buffers[index].status == IBMSG_NOT_SENT) {
        fail("a message could not be sent", IBMSG_SEND_FAILED);
      }
    }
  }
  const double elapsed = now_seconds() - start;

  for (unsigned long long index = 0; index < window; ++index) {
    if (ibmsg_free_msg(&buffers[index]) != IBMSG_OK) {
      fprintf(stderr, APPLICATION_NAME ": error: could not free memory\n");
    }
  }
  free(buffers);
  free(in_flight);

  if ((rc = ibmsg_disconnect(&connection)) != IBMSG_OK) {
    fprintf(stderr, APPLICATION_NAME ": error: could not disconnect: %s\n", ibmsg_strerror(rc));
  }
  while (connection.status != IBMSG_UNCONNECTED) {
    if ((rc = ibmsg_dispatch_event_loop(&event_loop)) != IBMSG_OK) {
      fprintf(stderr, APPLICATION_NAME ": error: something went wrong while working in the event loop: %s\n",
              ibmsg_strerror(rc));
      break;
    }
  }

  if (summary) {
    const double seconds = elapsed > 0 ? elapsed : 1e-9;
    printf("sent %llu messages of %llu bytes over %s in %.3f s: %.0f msg/s, %.1f MB/s (%llu retries after "
           "backpressure)\n",
           count, size, ibmsg_transport_name(&event_loop), elapsed, (double)count / seconds,
           (double)count * (double)size / seconds / 1e6, retries);
  }
  if ((rc = ibmsg_destroy_event_loop(&event_loop)) != IBMSG_OK) {
    fail("could not destroy the event loop", rc);
  }
  return EXIT_SUCCESS;
}
