// ibmsg.h from C++: it compiles inside extern "C", the enumerators are usable unqualified (as in C),
// and every original enumerator keeps its value. Linking proves the C functions have C linkage.
#include <ibmsg.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

static_assert(IBMSG_OK == 0 && IBMSG_EPOLL_WAIT_FAILED == 18, "error codes keep the original numbering");
static_assert(IBMSG_MESSAGE_TOO_LARGE == 19, "additions follow the original codes");
static_assert(IBMSG_UNDECIDED == 0 && IBMSG_ACCEPTED == 1, "request status");
static_assert(IBMSG_WAITING == 0 && IBMSG_SENT == 1 && IBMSG_RECEIVED == 2, "buffer status");
static_assert(IBMSG_UNCONNECTED == 0 && IBMSG_CONNECTED == 3 && IBMSG_ERROR == 5, "socket status");
static_assert(IBMSG_LISTEN_SOCKET == 0 && IBMSG_RECV_SOCKET == 1 && IBMSG_SEND_SOCKET == 2, "socket type");
static_assert(IBMSG_MAX_MSGSIZE == 4096, "the original default limit");

int main() {
  ibmsg_event_loop loop;
  if (ibmsg_init_event_loop(&loop) != IBMSG_OK) {
    std::fprintf(stderr, "ibmsg_init_event_loop failed\n");
    return 1;
  }
  // NETIO3_TEST_ADDRESS when set (the Soft-RoCE machine's rxe0 address), else 127.0.0.1.
  const char* const configured_address = std::getenv("NETIO3_TEST_ADDRESS");
  std::string address =
      configured_address != nullptr && configured_address[0] != '\0' ? configured_address : "127.0.0.1";
  ibmsg_socket socket;
  const int rc = ibmsg_listen(&loop, &socket, address.data(), 0, 1);
  const bool listening =
      rc == IBMSG_OK && socket.socket_type == IBMSG_LISTEN_SOCKET && socket.status == IBMSG_CONNECTED;
  const bool destroyed = ibmsg_destroy_event_loop(&loop) == IBMSG_OK;
  if (!listening || !destroyed || std::strlen(ibmsg_strerror(IBMSG_NO_RESOURCES)) == 0) {
    std::fprintf(stderr, "the C API did not behave from C++ (listen: %s)\n", ibmsg_strerror(rc));
    return 1;
  }
  return 0;
}
