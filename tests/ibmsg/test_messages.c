/*
 * Many messages over one connection: every size from 1 byte to the limit, intact and in order,
 * received with size = the received length; with the default limit (4096) and with a raised one.
 * The sender keeps a window of sends in flight and retries after IBMSG_NO_RESOURCES; a second
 * phase sends one message at a time in the original example's style.
 */
#include "ibmsg_test_support.h"

static ibmsg_socket accepted_socket;
static int accepted = 0;
static int established_callbacks = 0;
static uint64_t next_expected = 0;
static size_t (*expected_size)(uint64_t sequence) = NULL;

static void on_request(ibmsg_connection_request* request) {
  CHECK(request->status == IBMSG_UNDECIDED);
  CHECK(!accepted);
  CHECK_RC(ibmsg_accept(request, &accepted_socket), IBMSG_OK);
  CHECK(request->status == IBMSG_ACCEPTED);
  CHECK(accepted_socket.socket_type == IBMSG_RECV_SOCKET);
  accepted = 1;
}

static void on_established(ibmsg_socket* socket) {
  CHECK(socket->status == IBMSG_CONNECTED);
  ++established_callbacks;
}

static void on_message(ibmsg_socket* socket, ibmsg_buffer* msg) {
  CHECK(socket == &accepted_socket);
  CHECK(msg == &socket->recv_buffer);
  CHECK(msg->status == IBMSG_RECEIVED);
  CHECK(msg->mr == NULL);
  const size_t want = expected_size(next_expected);
  if (msg->size != want) {
    fprintf(stderr, "message %llu: size %zu, expected %zu\n", (unsigned long long)next_expected, msg->size, want);
    exit(EXIT_FAILURE);
  }
  const size_t bad = check_pattern(msg->data, msg->size, next_expected);
  if (bad != msg->size) {
    fprintf(stderr, "message %llu of %zu bytes differs at byte %zu\n", (unsigned long long)next_expected, msg->size,
            bad);
    exit(EXIT_FAILURE);
  }
  ++next_expected;
  CHECK_RC(ibmsg_free_msg(msg), IBMSG_OK);
}

static size_t limit_for_test = 0;
static uint64_t count_for_test = 0;

/* Sizes 1, 2, ..., limit, then again from 1 (phase one sends `limit` messages or more). */
static size_t every_size(uint64_t sequence) {
  return (size_t)(sequence % limit_for_test) + 1;
}

/* Sizes spread over 1..limit with a stride, ending with exactly the limit. */
static size_t strided_size(uint64_t sequence) {
  if (sequence + 1 == count_for_test) {
    return limit_for_test;
  }
  return (size_t)((sequence * 997u) % limit_for_test) + 1;
}

/* Sends `count` messages of expected_size(i) with up to `window` in flight; checks all arrive. */
static void send_windowed(ibmsg_event_loop* loop, ibmsg_socket* sender, uint64_t count, size_t window) {
  ibmsg_buffer* buffers = calloc(window, sizeof(ibmsg_buffer));
  uint64_t* sequence_of = calloc(window, sizeof(uint64_t));
  char* in_flight = calloc(window, 1);
  CHECK(buffers != NULL && sequence_of != NULL && in_flight != NULL);
  const uint64_t first = next_expected;
  uint64_t posted = first;
  uint64_t completed = 0;
  const double deadline = test_now() + TEST_HANG_GUARD_SECONDS;
  while (completed < count || next_expected < first + count) {
    CHECK(test_now() < deadline);
    for (size_t index = 0; index < window && posted < first + count; ++index) {
      if (in_flight[index]) {
        continue;
      }
      const size_t size = expected_size(posted);
      CHECK_RC(ibmsg_alloc_msg(&buffers[index], sender, size), IBMSG_OK);
      CHECK(buffers[index].status == IBMSG_WAITING);
      CHECK(buffers[index].size == size);
      fill_pattern(buffers[index].data, size, posted);
      const int rc = ibmsg_post_send(sender, &buffers[index]);
      if (rc == IBMSG_NO_RESOURCES) {
        CHECK_RC(ibmsg_free_msg(&buffers[index]), IBMSG_OK);
        break;
      }
      CHECK_RC(rc, IBMSG_OK);
      sequence_of[index] = posted++;
      in_flight[index] = 1;
    }
    CHECK_RC(ibmsg_dispatch_event_loop(loop), IBMSG_OK);
    for (size_t index = 0; index < window; ++index) {
      if (in_flight[index] && buffers[index].status == IBMSG_SENT) {
        CHECK_RC(ibmsg_free_msg(&buffers[index]), IBMSG_OK);
        in_flight[index] = 0;
        ++completed;
      }
      CHECK(!in_flight[index] || buffers[index].status == IBMSG_WAITING);
    }
    CHECK(sender->status == IBMSG_CONNECTED);
  }
  free(buffers);
  free(sequence_of);
  free(in_flight);
}

/* One message at a time, as the original example: alloc, post, wait for SENT, free. */
static void send_one_by_one(ibmsg_event_loop* loop, ibmsg_socket* sender, uint64_t count) {
  const uint64_t first = next_expected;
  for (uint64_t sequence = first; sequence < first + count; ++sequence) {
    ibmsg_buffer msg;
    CHECK_RC(ibmsg_alloc_msg(&msg, sender, expected_size(sequence)), IBMSG_OK);
    fill_pattern(msg.data, msg.size, sequence);
    CHECK_RC(ibmsg_post_send(sender, &msg), IBMSG_OK);
    while (msg.status != IBMSG_SENT) {
      CHECK_RC(ibmsg_dispatch_event_loop(loop), IBMSG_OK);
    }
    CHECK_RC(ibmsg_free_msg(&msg), IBMSG_OK);
  }
  while (next_expected < first + count) {
    CHECK_RC(ibmsg_dispatch_event_loop(loop), IBMSG_OK);
  }
}

static void run(size_t limit, uint64_t windowed_count, size_t (*sizes)(uint64_t)) {
  ibmsg_event_loop loop;
  CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_OK);
  CHECK(loop.connection_request == NULL && loop.connection_established == NULL && loop.message_received == NULL);
  if (limit != IBMSG_MAX_MSGSIZE) {
    CHECK_RC(ibmsg_set_max_msgsize(&loop, limit), IBMSG_OK);
  }
  CHECK(ibmsg_get_max_msgsize(&loop) == limit);
  loop.connection_request = on_request;
  loop.connection_established = on_established;
  loop.message_received = on_message;
  accepted = 0;
  established_callbacks = 0;
  next_expected = 0;
  limit_for_test = limit;
  count_for_test = windowed_count;
  expected_size = sizes;

  ibmsg_socket listener;
  CHECK_RC(ibmsg_listen(&loop, &listener, test_address(), 0, 8), IBMSG_OK);
  CHECK(listener.socket_type == IBMSG_LISTEN_SOCKET);
  const unsigned short port = ibmsg_socket_port(&listener);
  CHECK(port != 0);

  ibmsg_socket sender;
  CHECK_RC(ibmsg_connect(&loop, &sender, test_address(), port), IBMSG_OK);
  CHECK(sender.socket_type == IBMSG_SEND_SOCKET);
  CHECK(sender.cmid == NULL);
  /* The original example's wait: a blocking dispatch until connected. */
  while (sender.status != IBMSG_CONNECTED) {
    CHECK_RC(ibmsg_dispatch_event_loop(&loop), IBMSG_OK);
    CHECK(sender.status != IBMSG_ERROR);
  }
  WAIT_UNTIL(&loop, NULL, accepted && accepted_socket.status == IBMSG_CONNECTED);
  CHECK(established_callbacks == 2); /* both sides */

  send_windowed(&loop, &sender, windowed_count, 32);
  send_one_by_one(&loop, &sender, 200);

  CHECK_RC(ibmsg_disconnect(&sender), IBMSG_OK);
  while (sender.status != IBMSG_UNCONNECTED) {
    CHECK_RC(ibmsg_dispatch_event_loop(&loop), IBMSG_OK);
  }
  CHECK_RC(ibmsg_socket_error(&sender), IBMSG_OK);
  WAIT_UNTIL(&loop, NULL, accepted_socket.status == IBMSG_UNCONNECTED);
  CHECK_RC(ibmsg_disconnect(&listener), IBMSG_OK);
  CHECK(listener.status == IBMSG_UNCONNECTED);
  CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
  printf("limit %zu: %llu messages received intact and in order\n", limit, (unsigned long long)next_expected);
}

int main(void) {
  /* Every size from 1 to 4096 (the default limit), then once more from 1 to 904. */
  run(IBMSG_MAX_MSGSIZE, 5000, every_size);
  /* A raised limit: 2000 sizes spread over 1..65536, the last exactly 65536 bytes. */
  run(65536, 2000, strided_size);
  return EXIT_SUCCESS;
}
