// libFuzzer target: the TCP backend's handshake decoders (Hello and Reply). Any 8 or 16 bytes must
// decode without crashing; whatever decodes cleanly must encode back to the same bytes.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "asyncmsg/WireProtocol.hpp"

using namespace netio3::asyncmsg;

namespace {

void check(bool condition) {
  if (!condition) {
    std::abort();
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size >= hello_size) {
    std::array<std::uint8_t, hello_size> bytes{};
    std::copy_n(data, hello_size, bytes.begin());
    Hello hello;
    const HandshakeError error = decode_hello(bytes, hello);
    check(to_string(error) != nullptr);
    if (error == HandshakeError::none) {
      check(encode_hello() == bytes);
    }
  }
  if (size >= reply_size) {
    std::array<std::uint8_t, reply_size> bytes{};
    std::copy_n(data + (size >= hello_size + reply_size ? hello_size : 0), reply_size, bytes.begin());
    Reply reply;
    const HandshakeError error = decode_reply(bytes, reply);
    check(to_string(error) != nullptr);
    if (error == HandshakeError::none) {
      check(reply.max_message_size <= max_frame_payload);
      check(to_string(reply.status) != nullptr);
      std::uint64_t claimed = 0;
      for (std::size_t index = 0; index < 8; ++index) {
        claimed |= static_cast<std::uint64_t>(bytes[8 + index]) << (8U * index);
      }
      if (reply.version == protocol_version && claimed <= max_frame_payload) {
        check(encode_reply(reply.status, reply.max_message_size) == bytes);
      }
    }
  }
  return 0;
}
