/*
 * Teardown with everything still open: connections, sends in flight, buffers the program still
 * holds (from the send slab, from the heap, received ones), a listener. ibmsg_destroy_event_loop
 * closes every socket (the peer sees its connection end) and releases every buffer: under the
 * address sanitizer a leak fails the test. Also: destroy and dispatch from inside a callback are
 * refused, and a loop without a message_received callback discards what arrives.
 */
#include "ibmsg_test_support.h"

static ibmsg_socket accepted[4];
static int accepted_count = 0;
static ibmsg_buffer held[8];
static int held_count = 0;
static ibmsg_event_loop* loop_in_callback = NULL;
static int nested_calls_checked = 0;

static void on_request(ibmsg_connection_request* request) {
  CHECK(accepted_count < 4);
  CHECK_RC(ibmsg_accept(request, &accepted[accepted_count++]), IBMSG_OK);
}

static void on_message(ibmsg_socket* socket, ibmsg_buffer* msg) {
  (void)socket;
  if (loop_in_callback != NULL && !nested_calls_checked) {
    /* Neither dispatch nor destroy may run inside a callback. */
    CHECK_RC(ibmsg_dispatch_event_loop(loop_in_callback), IBMSG_INVALID_ARGUMENT);
    CHECK_RC(ibmsg_destroy_event_loop(loop_in_callback), IBMSG_INVALID_ARGUMENT);
    nested_calls_checked = 1;
  }
  if (held_count < 8) {
    held[held_count++] = *msg; /* never freed by the program: destroy must release it */
  } else {
    CHECK_RC(ibmsg_free_msg(msg), IBMSG_OK);
  }
}

int main(void) {
  ibmsg_event_loop send_loop;
  ibmsg_event_loop recv_loop;
  CHECK_RC(ibmsg_init_event_loop(&send_loop), IBMSG_OK);
  CHECK_RC(ibmsg_init_event_loop(&recv_loop), IBMSG_OK);
  recv_loop.connection_request = on_request;
  recv_loop.message_received = on_message;
  loop_in_callback = &recv_loop;

  ibmsg_socket listener;
  CHECK_RC(ibmsg_listen(&recv_loop, &listener, test_address(), 0, 4), IBMSG_OK);
  const unsigned short port = ibmsg_socket_port(&listener);
  ibmsg_socket senders[2];
  for (int index = 0; index < 2; ++index) {
    CHECK_RC(ibmsg_connect(&send_loop, &senders[index], test_address(), port), IBMSG_OK);
  }
  WAIT_UNTIL(&send_loop, &recv_loop,
             senders[0].status == IBMSG_CONNECTED && senders[1].status == IBMSG_CONNECTED && accepted_count == 2 &&
                 accepted[0].status == IBMSG_CONNECTED && accepted[1].status == IBMSG_CONNECTED);

  /* Buffers in every state: sent and received (held by the receiver), in flight, allocated only. */
  ibmsg_buffer buffers[300];
  for (int index = 0; index < 300; ++index) {
    CHECK_RC(ibmsg_alloc_msg(&buffers[index], &senders[index % 2], 512), IBMSG_OK); /* slab, then heap */
    fill_pattern(buffers[index].data, 512, (uint64_t)index);
  }
  for (int index = 0; index < 20; ++index) {
    CHECK_RC(ibmsg_post_send(&senders[index % 2], &buffers[index]), IBMSG_OK);
  }
  WAIT_UNTIL(&send_loop, &recv_loop, held_count == 8 && nested_calls_checked);
  for (int index = 20; index < 40; ++index) {
    CHECK_RC(ibmsg_post_send(&senders[index % 2], &buffers[index]), IBMSG_OK); /* left in flight */
  }
  ibmsg_buffer unattached;
  CHECK_RC(ibmsg_alloc_msg(&unattached, NULL, 100), IBMSG_OK); /* no socket: plain heap memory */

  /* The sender's loop goes away with its connections open: the receiver sees them close. */
  CHECK_RC(ibmsg_destroy_event_loop(&send_loop), IBMSG_OK);
  CHECK_RC(ibmsg_dispatch_event_loop(&send_loop), IBMSG_INVALID_ARGUMENT); /* no longer initialised */
  WAIT_UNTIL(&recv_loop, NULL, accepted[0].status == IBMSG_UNCONNECTED && accepted[1].status == IBMSG_UNCONNECTED);
  CHECK_RC(ibmsg_socket_error(&accepted[0]), IBMSG_CONNECTION_CLOSED);

  /* A new connection to the same listener, then the receiver's loop goes away with it open and
   * with the received buffers still held. */
  ibmsg_event_loop third_loop;
  CHECK_RC(ibmsg_init_event_loop(&third_loop), IBMSG_OK);
  ibmsg_socket third;
  CHECK_RC(ibmsg_connect(&third_loop, &third, test_address(), port), IBMSG_OK);
  WAIT_UNTIL(&third_loop, &recv_loop,
             third.status == IBMSG_CONNECTED && accepted_count == 3 && accepted[2].status == IBMSG_CONNECTED);
  CHECK_RC(ibmsg_destroy_event_loop(&recv_loop), IBMSG_OK);
  WAIT_UNTIL(&third_loop, NULL, third.status == IBMSG_UNCONNECTED);
  CHECK_RC(ibmsg_socket_error(&third), IBMSG_CONNECTION_CLOSED);

  /* A loop without message_received: messages are discarded by the library, sends complete. */
  ibmsg_event_loop quiet_loop;
  CHECK_RC(ibmsg_init_event_loop(&quiet_loop), IBMSG_OK);
  ibmsg_socket quiet_listener;
  CHECK_RC(ibmsg_listen(&quiet_loop, &quiet_listener, test_address(), 0, 4), IBMSG_OK);
  quiet_loop.connection_request = on_request;
  ibmsg_socket fourth;
  CHECK_RC(ibmsg_connect(&third_loop, &fourth, test_address(), ibmsg_socket_port(&quiet_listener)), IBMSG_OK);
  WAIT_UNTIL(&third_loop, &quiet_loop, fourth.status == IBMSG_CONNECTED);
  for (int round = 0; round < 100; ++round) {
    ibmsg_buffer msg;
    CHECK_RC(ibmsg_alloc_msg(&msg, &fourth, 1000), IBMSG_OK);
    CHECK_RC(ibmsg_post_send(&fourth, &msg), IBMSG_OK);
    WAIT_UNTIL(&third_loop, &quiet_loop, msg.status == IBMSG_SENT);
    CHECK_RC(ibmsg_free_msg(&msg), IBMSG_OK);
  }
  /* Teardown with the listener and the connection open on both loops. */
  CHECK_RC(ibmsg_destroy_event_loop(&quiet_loop), IBMSG_OK);
  CHECK_RC(ibmsg_destroy_event_loop(&third_loop), IBMSG_OK);

  CHECK_RC(ibmsg_free_msg(&unattached), IBMSG_OK);
  /* Init and destroy over and over: nothing accumulates (the sanitizer would see it). */
  for (int round = 0; round < 50; ++round) {
    ibmsg_event_loop loop;
    ibmsg_socket socket;
    CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_OK);
    CHECK_RC(ibmsg_listen(&loop, &socket, test_address(), 0, 4), IBMSG_OK);
    CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
  }
  printf("teardown with open connections, sends in flight and held buffers completed\n");
  return EXIT_SUCCESS;
}
