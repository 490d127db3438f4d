/*
 * Helpers shared by the ibmsg C tests: checks that stop the test with a message, a deadline that
 * only guards against hangs (never a timing assertion), and the message pattern the tests send.
 */
#ifndef IBMSG_TEST_SUPPORT_H
#define IBMSG_TEST_SUPPORT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ibmsg.h>

/* Every wait gives up after this many seconds: a hang becomes a failure, not a stuck CI job. */
#define TEST_HANG_GUARD_SECONDS (60.0)

/* Exit code of a test program whose case cannot run here: ctest reports it as skipped
 * (SKIP_RETURN_CODE in tests/ibmsg/CMakeLists.txt), and so does the Soft-RoCE runner. */
#define TEST_SKIPPED 77

#define CHECK(condition)                                                                                               \
  do {                                                                                                                 \
    if (!(condition)) {                                                                                                \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition);                                    \
      exit(EXIT_FAILURE);                                                                                              \
    }                                                                                                                  \
  } while (0)

#define CHECK_RC(expression, expected)                                                                                 \
  do {                                                                                                                 \
    const int check_rc_result = (expression);                                                                          \
    if (check_rc_result != (expected)) {                                                                               \
      fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", __FILE__, __LINE__, #expression,               \
              check_rc_result, ibmsg_strerror(check_rc_result), (int)(expected), ibmsg_strerror(expected));            \
      exit(EXIT_FAILURE);                                                                                              \
    }                                                                                                                  \
  } while (0)

/* The address every test listens on and connects to: NETIO3_TEST_ADDRESS when set (the Soft-RoCE
 * machine sets rxe0's address, because libfabric's verbs provider cannot connect to 127.0.0.1),
 * else 127.0.0.1. */
static inline char* test_address(void) { /* char*: the original API takes char* */
  char* address = getenv("NETIO3_TEST_ADDRESS");
  return address != NULL && address[0] != '\0' ? address : "127.0.0.1";
}

/* True when `loop` runs over RDMA (the verbs provider: forced by IBMSG_TRANSPORT=rdma or picked
 * because an RDMA device exists). Cases that only make sense over TCP are skipped then, visibly. */
static inline int test_loop_is_rdma(const ibmsg_event_loop* loop) {
  const char* transport = ibmsg_transport_name(loop);
  return transport != NULL && strcmp(transport, "rdma") == 0;
}

static inline double test_now(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* Dispatches `loop` (and `other`, if not NULL) until `condition` holds. Each dispatch waits at
 * most 10 ms, so that two loops in one thread both make progress. */
#define WAIT_UNTIL(loop, other, condition)                                                                             \
  do {                                                                                                                 \
    const double wait_deadline = test_now() + TEST_HANG_GUARD_SECONDS;                                                 \
    while (!(condition)) {                                                                                             \
      if (test_now() > wait_deadline) {                                                                                \
        fprintf(stderr, "%s:%d: gave up waiting for: %s\n", __FILE__, __LINE__, #condition);                           \
        exit(EXIT_FAILURE);                                                                                            \
      }                                                                                                                \
      CHECK_RC(ibmsg_dispatch_event_loop_timeout((loop), (other) == NULL ? 10 : 1), IBMSG_OK);                         \
      if ((other) != NULL) {                                                                                           \
        CHECK_RC(ibmsg_dispatch_event_loop_timeout((other), 1), IBMSG_OK);                                             \
      }                                                                                                                \
    }                                                                                                                  \
  } while (0)

/* The byte at `offset` of message number `sequence`: every message differs from its neighbours. */
static inline uint8_t pattern_byte(uint64_t sequence, size_t offset) {
  return (uint8_t)((sequence * 131u + offset * 7u + (offset >> 8)) & 0xffu);
}

static inline void fill_pattern(void* data, size_t size, uint64_t sequence) {
  uint8_t* bytes = (uint8_t*)data;
  for (size_t offset = 0; offset < size; ++offset) {
    bytes[offset] = pattern_byte(sequence, offset);
  }
}

/* Index of the first byte that differs from the pattern, or `size` if all match. */
static inline size_t check_pattern(const void* data, size_t size, uint64_t sequence) {
  const uint8_t* bytes = (const uint8_t*)data;
  for (size_t offset = 0; offset < size; ++offset) {
    if (bytes[offset] != pattern_byte(sequence, offset)) {
      return offset;
    }
  }
  return size;
}

#endif /* IBMSG_TEST_SUPPORT_H */
