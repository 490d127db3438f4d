/*
 * Disconnects from either side: the sender closes (the receiver's socket becomes unconnected after
 * the last message), the receiver closes a RECV socket (the sender's socket becomes unconnected and
 * further sends fail with IBMSG_NOT_CONNECTED), a disconnect with sends in flight (every buffer
 * ends IBMSG_SENT or IBMSG_NOT_SENT, none stays waiting), freeing a buffer that is in flight, and a
 * disconnect before the connection is established. Sender and receiver use separate loops.
 */
#include "ibmsg_test_support.h"

#define MAX_ACCEPTED (8)

static ibmsg_socket accepted[MAX_ACCEPTED];
static int accepted_count = 0;
static uint64_t received_on[MAX_ACCEPTED];

static void on_request(ibmsg_connection_request* request) {
  CHECK(accepted_count < MAX_ACCEPTED);
  CHECK_RC(ibmsg_accept(request, &accepted[accepted_count++]), IBMSG_OK);
}

static void on_message(ibmsg_socket* socket, ibmsg_buffer* msg) {
  const int index = (int)(socket - accepted);
  CHECK(index >= 0 && index < accepted_count);
  CHECK(msg->size == 100);
  CHECK(check_pattern(msg->data, msg->size, received_on[index]) == msg->size);
  ++received_on[index];
  CHECK_RC(ibmsg_free_msg(msg), IBMSG_OK);
}

static ibmsg_event_loop send_loop;
static ibmsg_event_loop recv_loop;
static unsigned short port;

/* Connects a new sender; returns the index of its RECV socket on the receiver. */
static int connect_pair(ibmsg_socket* sender) {
  const int index = accepted_count;
  CHECK_RC(ibmsg_connect(&send_loop, sender, test_address(), port), IBMSG_OK);
  WAIT_UNTIL(&send_loop, &recv_loop,
             sender->status == IBMSG_CONNECTED && accepted_count > index && accepted[index].status == IBMSG_CONNECTED);
  return index;
}

static void send_and_wait(ibmsg_socket* sender, uint64_t sequence) {
  ibmsg_buffer msg;
  CHECK_RC(ibmsg_alloc_msg(&msg, sender, 100), IBMSG_OK);
  fill_pattern(msg.data, msg.size, sequence);
  CHECK_RC(ibmsg_post_send(sender, &msg), IBMSG_OK);
  WAIT_UNTIL(&send_loop, &recv_loop, msg.status == IBMSG_SENT);
  CHECK_RC(ibmsg_free_msg(&msg), IBMSG_OK);
  CHECK_RC(ibmsg_free_msg(&msg), IBMSG_FREE_BUFFER_FAILED); /* twice: detected */
}

/* Dispatches both loops until `done`; the sender loop may report failed sends. */
static int dispatch_both(void) {
  int send_failed = 0;
  const int rc = ibmsg_dispatch_event_loop_timeout(&send_loop, 1);
  if (rc == IBMSG_SEND_FAILED) {
    send_failed = 1;
  } else {
    CHECK_RC(rc, IBMSG_OK);
  }
  CHECK_RC(ibmsg_dispatch_event_loop_timeout(&recv_loop, 1), IBMSG_OK);
  return send_failed;
}

int main(void) {
  CHECK_RC(ibmsg_init_event_loop(&send_loop), IBMSG_OK);
  CHECK_RC(ibmsg_init_event_loop(&recv_loop), IBMSG_OK);
  recv_loop.connection_request = on_request;
  recv_loop.message_received = on_message;
  ibmsg_socket listener;
  CHECK_RC(ibmsg_listen(&recv_loop, &listener, test_address(), 0, 8), IBMSG_OK);
  port = ibmsg_socket_port(&listener);

  /* 1. The sender disconnects after its messages: they all arrive, then the RECV socket closes. */
  ibmsg_socket first;
  const int first_index = connect_pair(&first);
  for (uint64_t sequence = 0; sequence < 50; ++sequence) {
    send_and_wait(&first, sequence);
  }
  CHECK_RC(ibmsg_disconnect(&first), IBMSG_OK);
  CHECK(first.status == IBMSG_DISCONNECTING || first.status == IBMSG_UNCONNECTED);
  WAIT_UNTIL(&send_loop, &recv_loop, first.status == IBMSG_UNCONNECTED);
  CHECK_RC(ibmsg_socket_error(&first), IBMSG_OK);
  WAIT_UNTIL(&send_loop, &recv_loop, accepted[first_index].status == IBMSG_UNCONNECTED);
  CHECK(received_on[first_index] == 50);
  CHECK_RC(ibmsg_socket_error(&accepted[first_index]), IBMSG_CONNECTION_CLOSED);
  CHECK_RC(ibmsg_disconnect(&first), IBMSG_OK); /* again: nothing to do */

  /* 2. A disconnect with sends in flight: each buffer ends SENT or NOT_SENT. One buffer is freed
   *    while in flight (allowed: reclaimed when its send ends). */
  ibmsg_socket third;
  (void)connect_pair(&third);
  enum { IN_FLIGHT = 40 };
  ibmsg_buffer buffers[IN_FLIGHT];
  int was_posted[IN_FLIGHT];
  int posted = 0;
  for (int index = 0; index < IN_FLIGHT; ++index) {
    CHECK_RC(ibmsg_alloc_msg(&buffers[index], &third, 100), IBMSG_OK);
    fill_pattern(buffers[index].data, 100, (uint64_t)index);
    const int rc = ibmsg_post_send(&third, &buffers[index]);
    CHECK(rc == IBMSG_OK || rc == IBMSG_NO_RESOURCES);
    was_posted[index] = rc == IBMSG_OK;
    posted += rc == IBMSG_OK;
    CHECK(rc != IBMSG_OK || buffers[index].status == IBMSG_WAITING);
  }
  CHECK(was_posted[0]);
  CHECK_RC(ibmsg_post_send(&third, &buffers[0]), IBMSG_INVALID_ARGUMENT); /* already being sent */
  CHECK_RC(ibmsg_free_msg(&buffers[0]), IBMSG_OK);                        /* freed while in flight */
  CHECK_RC(ibmsg_disconnect(&third), IBMSG_OK);
  const double deadline = test_now() + TEST_HANG_GUARD_SECONDS;
  int send_failed_reported = 0;
  while (third.status != IBMSG_UNCONNECTED) {
    CHECK(test_now() < deadline);
    send_failed_reported |= dispatch_both();
  }
  int not_sent = 0;
  for (int index = 1; index < IN_FLIGHT; ++index) {
    CHECK(!was_posted[index] || buffers[index].status == IBMSG_SENT || buffers[index].status == IBMSG_NOT_SENT);
    not_sent += was_posted[index] && buffers[index].status == IBMSG_NOT_SENT;
  }
  for (int index = 1; index < IN_FLIGHT; ++index) {
    CHECK_RC(ibmsg_free_msg(&buffers[index]), IBMSG_OK);
  }
  /* A failed send is reported by dispatch and by the socket's error. */
  CHECK(!not_sent || (send_failed_reported && ibmsg_socket_error(&third) == IBMSG_SEND_FAILED));

  /* 3. A disconnect before the connection is established still ends in IBMSG_UNCONNECTED. */
  ibmsg_socket fourth;
  CHECK_RC(ibmsg_connect(&send_loop, &fourth, test_address(), port), IBMSG_OK);
  CHECK_RC(ibmsg_disconnect(&fourth), IBMSG_OK);
  while (fourth.status != IBMSG_UNCONNECTED) {
    CHECK(test_now() < deadline);
    dispatch_both();
  }

  /* 4. The listener closes while a connection is open: both ends become unconnected. */
  ibmsg_socket fifth;
  const int fifth_index = connect_pair(&fifth);
  CHECK_RC(ibmsg_disconnect(&listener), IBMSG_OK);
  CHECK(listener.status == IBMSG_UNCONNECTED);
  WAIT_UNTIL(&send_loop, &recv_loop,
             fifth.status == IBMSG_UNCONNECTED && accepted[fifth_index].status == IBMSG_UNCONNECTED);

  CHECK_RC(ibmsg_listen(&recv_loop, &listener, test_address(), 0, 8), IBMSG_OK);
  port = ibmsg_socket_port(&listener);
  /* 5. On a new listener, the receiver disconnects its RECV socket: the sender sees the connection end. */
  ibmsg_socket second;
  const int second_index = connect_pair(&second);
  send_and_wait(&second, 0);
  WAIT_UNTIL(&send_loop, &recv_loop, received_on[second_index] == 1);
  CHECK_RC(ibmsg_disconnect(&accepted[second_index]), IBMSG_OK);
  WAIT_UNTIL(&send_loop, &recv_loop, accepted[second_index].status == IBMSG_UNCONNECTED);
  CHECK_RC(ibmsg_socket_error(&accepted[second_index]), IBMSG_OK);
  WAIT_UNTIL(&send_loop, &recv_loop, second.status == IBMSG_UNCONNECTED);
  CHECK_RC(ibmsg_socket_error(&second), IBMSG_CONNECTION_CLOSED);
  ibmsg_buffer late;
  CHECK_RC(ibmsg_alloc_msg(&late, &second, 100), IBMSG_OK);
  CHECK_RC(ibmsg_post_send(&second, &late), IBMSG_NOT_CONNECTED);
  CHECK_RC(ibmsg_free_msg(&late), IBMSG_OK);
  CHECK_RC(ibmsg_disconnect(&second), IBMSG_OK);
  CHECK(second.status == IBMSG_UNCONNECTED);

  CHECK_RC(ibmsg_destroy_event_loop(&send_loop), IBMSG_OK);
  CHECK_RC(ibmsg_destroy_event_loop(&recv_loop), IBMSG_OK);
  printf("disconnects from the sender, the receiver, with sends in flight, before establishment and of "
         "the listener all ended cleanly\n");
  return EXIT_SUCCESS;
}
