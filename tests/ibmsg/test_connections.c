/*
 * Several connections into one listener: senders in the same loop (several connections to the
 * same address and port) and in a second loop; every connection's messages arrive intact and in
 * order on its own RECV socket, and connection_established fires once per socket on each side.
 */
#include "ibmsg_test_support.h"

#define SENDERS_SAME_LOOP (6)
#define SENDERS_OTHER_LOOP (3)
#define SENDERS (SENDERS_SAME_LOOP + SENDERS_OTHER_LOOP)
#define MESSAGES_PER_SENDER (400)
#define HEADER_SIZE (12)

/* A RECV socket with what it has received. The socket comes first: the callbacks' socket pointer
 * is the pointer to the whole record. */
typedef struct {
  ibmsg_socket socket;
  int sender;        /* which sender it turned out to be (-1 until the first message) */
  uint64_t received; /* messages so far */
  int established;
} receiver;

static receiver receivers[SENDERS];
static int accepted_count = 0;
static int recv_established = 0;
static int send_established = 0;
static uint64_t total_received = 0;

static void on_request(ibmsg_connection_request* request) {
  CHECK(accepted_count < SENDERS);
  receiver* slot = &receivers[accepted_count++];
  slot->sender = -1;
  CHECK_RC(ibmsg_accept(request, &slot->socket), IBMSG_OK);
  /* A second accept of the same request is refused. */
  ibmsg_socket spare;
  CHECK_RC(ibmsg_accept(request, &spare), IBMSG_ACCEPT_FAILED);
}

static void on_established(ibmsg_socket* socket) {
  if (socket->socket_type == IBMSG_RECV_SOCKET) {
    receiver* slot = (receiver*)socket;
    CHECK(!slot->established);
    slot->established = 1;
    ++recv_established;
  } else {
    CHECK(socket->socket_type == IBMSG_SEND_SOCKET);
    ++send_established;
  }
}

/* Message layout: 4 bytes sender number, 8 bytes sequence, then the pattern. */
static void on_message(ibmsg_socket* socket, ibmsg_buffer* msg) {
  receiver* slot = (receiver*)socket;
  CHECK(msg->size >= HEADER_SIZE);
  uint32_t sender;
  uint64_t sequence;
  memcpy(&sender, msg->data, sizeof sender);
  memcpy(&sequence, (uint8_t*)msg->data + 4, sizeof sequence);
  CHECK(sender < SENDERS);
  if (slot->sender < 0) {
    slot->sender = (int)sender;
  }
  CHECK(slot->sender == (int)sender); /* a connection carries one sender's messages only */
  CHECK(sequence == slot->received);  /* in order, none lost or duplicated */
  CHECK(msg->size == HEADER_SIZE + (size_t)((sequence * 37u + sender * 101u) % 2000u));
  CHECK(check_pattern((uint8_t*)msg->data + HEADER_SIZE, msg->size - HEADER_SIZE, sequence + sender) ==
        msg->size - HEADER_SIZE);
  ++slot->received;
  ++total_received;
  CHECK_RC(ibmsg_free_msg(msg), IBMSG_OK);
}

typedef struct {
  ibmsg_event_loop* loop;
  ibmsg_socket socket;
  ibmsg_buffer buffer;
  int busy;
  uint64_t next;
} sender_state;

static sender_state senders[SENDERS];

/* Posts the next message of `index` if its buffer is free; returns 1 if it is done. */
static int pump_sender(int index) {
  sender_state* state = &senders[index];
  if (state->busy && state->buffer.status == IBMSG_SENT) {
    CHECK_RC(ibmsg_free_msg(&state->buffer), IBMSG_OK);
    state->busy = 0;
  }
  if (state->busy || state->next == MESSAGES_PER_SENDER) {
    return !state->busy && state->next == MESSAGES_PER_SENDER;
  }
  const uint64_t sequence = state->next;
  const uint32_t sender = (uint32_t)index;
  const size_t size = HEADER_SIZE + (size_t)((sequence * 37u + sender * 101u) % 2000u);
  CHECK_RC(ibmsg_alloc_msg(&state->buffer, &state->socket, size), IBMSG_OK);
  memcpy(state->buffer.data, &sender, sizeof sender);
  memcpy((uint8_t*)state->buffer.data + 4, &sequence, sizeof sequence);
  fill_pattern((uint8_t*)state->buffer.data + HEADER_SIZE, size - HEADER_SIZE, sequence + sender);
  const int rc = ibmsg_post_send(&state->socket, &state->buffer);
  if (rc == IBMSG_NO_RESOURCES) {
    CHECK_RC(ibmsg_free_msg(&state->buffer), IBMSG_OK);
    return 0;
  }
  CHECK_RC(rc, IBMSG_OK);
  state->busy = 1;
  ++state->next;
  return 0;
}

int main(void) {
  ibmsg_event_loop loop;
  ibmsg_event_loop other_loop;
  CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_OK);
  CHECK_RC(ibmsg_init_event_loop(&other_loop), IBMSG_OK);
  loop.connection_request = on_request;
  loop.connection_established = on_established;
  loop.message_received = on_message;
  other_loop.connection_established = on_established;

  ibmsg_socket listener;
  CHECK_RC(ibmsg_listen(&loop, &listener, test_address(), 0, 1 /* only a backlog: not a limit */), IBMSG_OK);
  const unsigned short port = ibmsg_socket_port(&listener);

  for (int index = 0; index < SENDERS; ++index) {
    senders[index].loop = index < SENDERS_SAME_LOOP ? &loop : &other_loop;
    CHECK_RC(ibmsg_connect(senders[index].loop, &senders[index].socket, test_address(), port), IBMSG_OK);
    CHECK(ibmsg_socket_port(&senders[index].socket) == port);
  }
  int all_connected = 0;
  const double deadline = test_now() + TEST_HANG_GUARD_SECONDS;
  while (!all_connected) {
    CHECK(test_now() < deadline);
    CHECK_RC(ibmsg_dispatch_event_loop_timeout(&loop, 1), IBMSG_OK);
    CHECK_RC(ibmsg_dispatch_event_loop_timeout(&other_loop, 1), IBMSG_OK);
    all_connected = recv_established == SENDERS;
    for (int index = 0; index < SENDERS; ++index) {
      CHECK(senders[index].socket.status != IBMSG_ERROR);
      all_connected = all_connected && senders[index].socket.status == IBMSG_CONNECTED;
    }
  }
  CHECK(send_established == SENDERS && accepted_count == SENDERS);

  int done = 0;
  while (!done || total_received < (uint64_t)SENDERS * MESSAGES_PER_SENDER) {
    CHECK(test_now() < deadline);
    done = 1;
    for (int index = 0; index < SENDERS; ++index) {
      done = pump_sender(index) && done;
    }
    CHECK_RC(ibmsg_dispatch_event_loop_timeout(&loop, 1), IBMSG_OK);
    CHECK_RC(ibmsg_dispatch_event_loop_timeout(&other_loop, 1), IBMSG_OK);
  }
  for (int index = 0; index < SENDERS; ++index) {
    CHECK(receivers[index].received == MESSAGES_PER_SENDER);
    CHECK(receivers[index].socket.status == IBMSG_CONNECTED);
  }

  /* Closing the listener closes every accepted connection; the senders see their connections end. */
  CHECK_RC(ibmsg_disconnect(&listener), IBMSG_OK);
  CHECK(listener.status == IBMSG_UNCONNECTED);
  int all_closed = 0;
  while (!all_closed) {
    CHECK(test_now() < deadline);
    CHECK_RC(ibmsg_dispatch_event_loop_timeout(&loop, 1), IBMSG_OK);
    CHECK_RC(ibmsg_dispatch_event_loop_timeout(&other_loop, 1), IBMSG_OK);
    all_closed = 1;
    for (int index = 0; index < SENDERS; ++index) {
      all_closed = all_closed && receivers[index].socket.status == IBMSG_UNCONNECTED &&
                   senders[index].socket.status == IBMSG_UNCONNECTED;
    }
  }
  for (int index = 0; index < SENDERS; ++index) {
    CHECK_RC(ibmsg_socket_error(&senders[index].socket), IBMSG_CONNECTION_CLOSED);
    CHECK_RC(ibmsg_disconnect(&senders[index].socket), IBMSG_OK); /* already closed: fine */
  }
  CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
  CHECK_RC(ibmsg_destroy_event_loop(&other_loop), IBMSG_OK);
  printf("%d connections into one listener delivered %llu messages intact and in order\n", SENDERS,
         (unsigned long long)total_received);
  return EXIT_SUCCESS;
}
