/*
 * Size limits and backpressure:
 * - a message above the sender's limit fails at once with IBMSG_MESSAGE_TOO_LARGE (the connection
 *   stays usable); so does one above the receiver's smaller limit (learnt at connection set-up);
 * - ibmsg_set_max_msgsize only before the first socket; IBMSG_MAX_MSGSIZE sets the default;
 * - a sender whose receiver does not dispatch gets IBMSG_NO_RESOURCES instead of growing memory,
 *   and once the receiver dispatches again every accepted message arrives, in order;
 * - a program that holds received buffers and frees them later gets intact data.
 */
#include "ibmsg_test_support.h"

static ibmsg_socket accepted_socket;
static int accepted = 0;
static uint64_t received = 0;
static size_t last_size = 0;
static int hold_messages = 0;
static ibmsg_buffer held[64];
static int held_count = 0;

static void on_request(ibmsg_connection_request* request) {
  CHECK_RC(ibmsg_accept(request, &accepted_socket), IBMSG_OK);
  accepted = 1;
}

static void on_message(ibmsg_socket* socket, ibmsg_buffer* msg) {
  CHECK(socket == &accepted_socket);
  CHECK(check_pattern(msg->data, msg->size, received) == msg->size);
  last_size = msg->size;
  ++received;
  if (hold_messages && held_count < 64) {
    held[held_count++] = *msg; /* keep a copy of the struct; free later */
  } else {
    CHECK_RC(ibmsg_free_msg(msg), IBMSG_OK);
  }
}

static void setup_pair(ibmsg_event_loop* send_loop, ibmsg_event_loop* recv_loop, ibmsg_socket* listener,
                       ibmsg_socket* sender) {
  recv_loop->connection_request = on_request;
  recv_loop->message_received = on_message;
  accepted = 0;
  received = 0;
  CHECK_RC(ibmsg_listen(recv_loop, listener, test_address(), 0, 4), IBMSG_OK);
  CHECK_RC(ibmsg_connect(send_loop, sender, test_address(), ibmsg_socket_port(listener)), IBMSG_OK);
  WAIT_UNTIL(send_loop, recv_loop,
             sender->status == IBMSG_CONNECTED && accepted && accepted_socket.status == IBMSG_CONNECTED);
}

static int try_send(ibmsg_event_loop* send_loop, ibmsg_event_loop* recv_loop, ibmsg_socket* sender, size_t size,
                    uint64_t sequence) {
  ibmsg_buffer msg;
  CHECK_RC(ibmsg_alloc_msg(&msg, sender, size), IBMSG_OK);
  fill_pattern(msg.data, size, sequence);
  const int rc = ibmsg_post_send(sender, &msg);
  if (rc == IBMSG_OK) {
    WAIT_UNTIL(send_loop, recv_loop, msg.status == IBMSG_SENT);
  }
  CHECK_RC(ibmsg_free_msg(&msg), IBMSG_OK);
  return rc;
}

static void test_sender_limit(void) {
  ibmsg_event_loop loop;
  CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_OK);
  CHECK(ibmsg_get_max_msgsize(&loop) == IBMSG_MAX_MSGSIZE);
  ibmsg_socket listener;
  ibmsg_socket sender;
  setup_pair(&loop, &loop, &listener, &sender);
  /* Too large for the sender's own limit: at once, nothing sent, the connection stays usable. */
  CHECK_RC(try_send(&loop, &loop, &sender, IBMSG_MAX_MSGSIZE + 1, 0), IBMSG_MESSAGE_TOO_LARGE);
  CHECK_RC(try_send(&loop, &loop, &sender, 1u << 20, 0), IBMSG_MESSAGE_TOO_LARGE);
  CHECK(sender.status == IBMSG_CONNECTED);
  CHECK_RC(try_send(&loop, &loop, &sender, IBMSG_MAX_MSGSIZE, 0), IBMSG_OK);
  WAIT_UNTIL(&loop, NULL, received == 1);
  CHECK(last_size == IBMSG_MAX_MSGSIZE);
  /* A smaller size than allocated may be sent. */
  ibmsg_buffer msg;
  CHECK_RC(ibmsg_alloc_msg(&msg, &sender, 1000), IBMSG_OK);
  fill_pattern(msg.data, 10, 1);
  msg.size = 10;
  CHECK_RC(ibmsg_post_send(&sender, &msg), IBMSG_OK);
  WAIT_UNTIL(&loop, NULL, received == 2 && msg.status == IBMSG_SENT);
  CHECK(last_size == 10);
  msg.size = 2000; /* larger than allocated */
  CHECK_RC(ibmsg_post_send(&sender, &msg), IBMSG_INVALID_ARGUMENT);
  CHECK_RC(ibmsg_free_msg(&msg), IBMSG_OK);
  /* The limit is fixed once sockets exist. */
  CHECK_RC(ibmsg_set_max_msgsize(&loop, 8192), IBMSG_INVALID_ARGUMENT);
  CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
}

static void test_receiver_limit(void) {
  ibmsg_event_loop send_loop;
  ibmsg_event_loop recv_loop;
  CHECK_RC(ibmsg_init_event_loop(&send_loop), IBMSG_OK);
  CHECK_RC(ibmsg_init_event_loop(&recv_loop), IBMSG_OK);
  CHECK_RC(ibmsg_set_max_msgsize(&send_loop, 0), IBMSG_INVALID_ARGUMENT);
  CHECK_RC(ibmsg_set_max_msgsize(&send_loop, (size_t)1 << 40), IBMSG_INVALID_ARGUMENT);
  CHECK_RC(ibmsg_set_max_msgsize(&send_loop, 16384), IBMSG_OK);
  CHECK_RC(ibmsg_set_max_msgsize(&recv_loop, 1000), IBMSG_OK);
  ibmsg_socket listener;
  ibmsg_socket sender;
  setup_pair(&send_loop, &recv_loop, &listener, &sender);
  /* Within the sender's limit but above the receiver's: refused at once. */
  CHECK_RC(try_send(&send_loop, &recv_loop, &sender, 1001, 0), IBMSG_MESSAGE_TOO_LARGE);
  CHECK(sender.status == IBMSG_CONNECTED);
  CHECK_RC(try_send(&send_loop, &recv_loop, &sender, 1000, 0), IBMSG_OK);
  WAIT_UNTIL(&send_loop, &recv_loop, received == 1);
  CHECK(last_size == 1000);
  CHECK_RC(ibmsg_destroy_event_loop(&send_loop), IBMSG_OK);
  CHECK_RC(ibmsg_destroy_event_loop(&recv_loop), IBMSG_OK);
}

static void test_environment_limit(void) {
  ibmsg_event_loop loop;
  setenv("IBMSG_MAX_MSGSIZE", "65536", 1);
  CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_OK);
  CHECK(ibmsg_get_max_msgsize(&loop) == 65536);
  CHECK_RC(ibmsg_destroy_event_loop(&loop), IBMSG_OK);
  setenv("IBMSG_MAX_MSGSIZE", "lots", 1);
  CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_INVALID_ARGUMENT);
  setenv("IBMSG_MAX_MSGSIZE", "0", 1);
  CHECK_RC(ibmsg_init_event_loop(&loop), IBMSG_INVALID_ARGUMENT);
  unsetenv("IBMSG_MAX_MSGSIZE");
}

enum { WINDOW = 8192, LIMIT = 200000 };
static ibmsg_buffer buffers[WINDOW];
static int in_flight[WINDOW];

/* True when every posted buffer has completed. */
static int all_sent(void) {
  for (int index = 0; index < WINDOW; ++index) {
    if (in_flight[index] && buffers[index].status != IBMSG_SENT) {
      return 0;
    }
  }
  return 1;
}

static void test_backpressure(void) {
  ibmsg_event_loop send_loop;
  ibmsg_event_loop recv_loop;
  CHECK_RC(ibmsg_init_event_loop(&send_loop), IBMSG_OK);
  CHECK_RC(ibmsg_init_event_loop(&recv_loop), IBMSG_OK);
  ibmsg_socket listener;
  ibmsg_socket sender;
  setup_pair(&send_loop, &recv_loop, &listener, &sender);

  /* The receiver's loop is not dispatched: the sender must run into IBMSG_NO_RESOURCES. Buffers are
   * reused as soon as they are SENT; at most WINDOW are held, more than the transport may queue
   * (32 MiB here against netio3's default of 8 MiB unsent bytes per connection plus socket buffers). */
  for (int index = 0; index < WINDOW; ++index) {
    CHECK_RC(ibmsg_alloc_msg(&buffers[index], &sender, IBMSG_MAX_MSGSIZE), IBMSG_OK);
  }
  uint64_t posted = 0;
  int backpressure = 0;
  const double deadline = test_now() + TEST_HANG_GUARD_SECONDS;
  while (!backpressure) {
    CHECK(test_now() < deadline);
    CHECK(posted < LIMIT); /* ~800 MB accepted without backpressure would mean unbounded buffering */
    for (int index = 0; index < WINDOW && !backpressure; ++index) {
      if (in_flight[index] && buffers[index].status != IBMSG_SENT) {
        continue;
      }
      in_flight[index] = 0;
      fill_pattern(buffers[index].data, IBMSG_MAX_MSGSIZE, posted);
      const int rc = ibmsg_post_send(&sender, &buffers[index]);
      if (rc == IBMSG_NO_RESOURCES) {
        backpressure = 1;
        break;
      }
      CHECK_RC(rc, IBMSG_OK);
      in_flight[index] = 1;
      ++posted;
    }
    CHECK_RC(ibmsg_dispatch_event_loop_timeout(&send_loop, 0), IBMSG_OK);
  }
  /* Now the receiver catches up; the sender finishes what it posted. Everything arrives in order. */
  hold_messages = 1;
  WAIT_UNTIL(&send_loop, &recv_loop, received == posted && all_sent());
  for (int index = 0; index < WINDOW; ++index) {
    CHECK_RC(ibmsg_free_msg(&buffers[index]), IBMSG_OK);
  }
  /* The held buffers are still intact (later messages went to other pool slots). */
  CHECK(held_count == 64);
  for (int index = 0; index < held_count; ++index) {
    CHECK(held[index].size == IBMSG_MAX_MSGSIZE);
    CHECK(held[index].status == IBMSG_RECEIVED);
    CHECK(check_pattern(held[index].data, held[index].size, (uint64_t)index) == held[index].size);
  }
  for (int index = 0; index < held_count; ++index) {
    CHECK_RC(ibmsg_free_msg(&held[index]), IBMSG_OK);
    CHECK_RC(ibmsg_free_msg(&held[index]), IBMSG_FREE_BUFFER_FAILED);
  }
  hold_messages = 0;
  printf("backpressure after %llu messages of %d bytes; all arrived in order\n", (unsigned long long)posted,
         IBMSG_MAX_MSGSIZE);
  CHECK_RC(ibmsg_destroy_event_loop(&send_loop), IBMSG_OK);
  CHECK_RC(ibmsg_destroy_event_loop(&recv_loop), IBMSG_OK);
}

int main(void) {
  test_sender_limit();
  test_receiver_limit();
  test_environment_limit();
  test_backpressure();
  printf("oversized sends fail at once; limits and backpressure behave\n");
  return EXIT_SUCCESS;
}
