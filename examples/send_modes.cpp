// Every way of sending, in one process over 127.0.0.1 (docs/guide.md, "Send modes"): a receiving
// backend and a sending backend on one event loop, and the same for the frontend's NetioSender and
// NetioReceiver. Prints one line per mode with how many messages arrived; exits 1 if any is missing.
//
//   netio3-example-send-modes [ADDRESS]      default: 127.0.0.1

#include <netio3/Netio3.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

constexpr int kMessages = 100;

void wait_for(const std::function<bool()>& done, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error(std::string("timed out waiting for ") + what);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
}

/// Retries a send while it returns NO_RESOURCES ("nothing was kept, try again later").
netio3::NetioStatus retry(const std::function<netio3::NetioStatus()>& send) {
  netio3::NetioStatus status = send();
  while (status == netio3::NetioStatus::NO_RESOURCES) {
    std::this_thread::yield();
    status = send();
  }
  return status;
}

void check(netio3::NetioStatus status, const char* call) {
  if (status != netio3::NetioStatus::OK) {
    throw std::runtime_error(std::string(call) + ": " + std::string{netio3::to_string(status)});
  }
}

// Zero-copy slots: a payload is read from its slot until its key comes back.
constexpr std::size_t kSlots = 8;
constexpr std::size_t kSlotSize = 4096;
constexpr std::uint64_t kCopyKey = 1000; // keys of copying sends; 0..kSlots-1 are slots

int backend_modes(const std::string& host) {
  auto loop = std::make_shared<netio3::EpollEventLoop>();
  std::atomic<int> received{0};
  netio3::NetworkConfig receiver_config;
  receiver_config.on_data_cb = [&](std::span<const std::uint8_t> /*message*/) { ++received; };
  auto receiver = netio3::NetworkBackend::create(netio3::NetworkType::ASYNCMSG, receiver_config, loop);
  const netio3::EndPointAddress address = receiver->open_listen_endpoint({host, 0}, {});

  // [guide:zero-copy-memory]
  alignas(64) static std::array<std::array<std::uint8_t, kSlotSize>, kSlots> slots{};
  std::array<std::atomic<bool>, kSlots> slot_busy{}; // true from the send until its key is back
  std::atomic<bool> connected{false};
  std::atomic<int> copies_completed{0};
  netio3::NetworkConfig sender_config;
  sender_config.on_connection_established_cb = [&](const netio3::EndPointAddress&) { connected = true; };
  sender_config.on_send_completed_cb = [&](const netio3::EndPointAddress&, std::uint64_t key) {
    if (key < kSlots) {
      slot_busy[key] = false; // the slot is ours again
    } else {
      ++copies_completed;
    }
  };
  auto sender = netio3::NetworkBackend::create(netio3::NetworkType::ASYNCMSG, sender_config, loop);
  netio3::ConnectionParameters params;
  params.buf_size = 8192; // buffered sends: 16 pool buffers of 8 KiB
  params.num_buf = 16;
  params.mr_start = slots.data()->data(); // zero-copy payloads lie here (registered once on RDMA)
  params.mr_size = sizeof(slots);
  // [guide:zero-copy-memory-end]
  std::thread loop_thread{[&] { loop->run(); }};
  sender->open_send_endpoint(address, params);
  wait_for([&] { return connected.load(); }, "the connection");

  const std::array<std::uint8_t, 4> header{'m', 's', 'g', ':'};
  // [guide:copy]
  // Copy: the bytes are copied before OK is returned; the buffer may be reused at once.
  std::array<std::uint8_t, 64> scratch{};
  for (int i = 0; i < kMessages; ++i) {
    std::memset(scratch.data(), i, scratch.size());
    check(retry([&] { return sender->send_data_copy(address, scratch, header, kCopyKey + i); }), "send_data_copy");
  }
  // [guide:copy-end]
  wait_for([&] { return received == kMessages; }, "the copied messages");
  std::printf("copy: %d of %d messages arrived\n", received.load(), kMessages);

  // [guide:zero-copy]
  // Zero-copy: the slot is read until on_send_completed_cb returns its key; only then is it reused.
  for (int i = 0; i < kMessages; ++i) {
    const std::size_t slot = static_cast<std::size_t>(i) % kSlots;
    wait_for([&] { return !slot_busy[slot]; }, "a free slot");
    std::memset(slots[slot].data(), i, kSlotSize);
    slot_busy[slot] = true;
    check(retry([&] { return sender->send_data(address, slots[slot], header, slot); }), "send_data");
  }
  // [guide:zero-copy-end]
  wait_for([&] { return received == 2 * kMessages; }, "the zero-copy messages");
  std::printf("zero-copy: %d of %d messages arrived\n", received.load() - kMessages, kMessages);

  // [guide:buffered]
  // Buffered: write into a buffer of the endpoint's pool, then hand it back; no key, no callback.
  for (int i = 0; i < kMessages; ++i) {
    netio3::NetworkBuffer* buffer = sender->get_buffer(address);
    while (buffer == nullptr) { // every buffer is being sent: wait for one to come back
      std::this_thread::yield();
      buffer = sender->get_buffer(address);
    }
    std::memset(buffer->data().data(), i, 256);
    buffer->set_pos(256);
    check(sender->send_buffer(address, buffer), "send_buffer"); // on failure the buffer stays ours
  }
  // [guide:buffered-end]
  wait_for([&] { return received == 3 * kMessages; }, "the buffered messages");
  std::printf("buffered: %d of %d messages arrived\n", received.load() - 2 * kMessages, kMessages);

  wait_for([&] { return copies_completed == kMessages; }, "the copy completions");
  sender->close_send_endpoint(address);
  loop->stop();
  loop_thread.join();
  return 0;
}

int frontend(const std::string& host) {
  auto loop = std::make_shared<netio3::EpollEventLoop>();
  // [guide:frontend]
  std::atomic<int> received{0};
  netio3::NetioReceiverConfig receiver_config;
  receiver_config.on_data_cb = [&](std::uint64_t /*tag*/, std::span<const std::uint8_t> /*data*/,
                                   std::uint8_t /*status*/) { ++received; };
  netio3::NetioReceiver receiver{receiver_config, loop};
  const netio3::EndPointAddress address = receiver.listen({host, 0});

  std::atomic<bool> connected{false};
  netio3::NetioSenderConfig sender_config;                       // BUFFERED: many messages per network buffer
  sender_config.flush_interval = std::chrono::microseconds{500}; // a buffer leaves within 0.5 ms
  sender_config.on_connection_established_cb = [&](const netio3::EndPointAddress&) { connected = true; };
  netio3::NetioSender sender{sender_config, loop};
  std::thread loop_thread{[&] { loop->run(); }};
  sender.connect(address);
  wait_for([&] { return connected.load(); }, "the connection");
  const std::array<std::uint8_t, 32> payload{};
  for (std::uint64_t tag = 0; tag < kMessages; ++tag) {
    check(retry([&] { return sender.send(address, tag, payload); }), "NetioSender::send");
  }
  sender.flush(); // or wait for flush_interval
  // [guide:frontend-end]
  wait_for([&] { return received == kMessages; }, "the frontend's messages");
  std::printf("NetioSender/NetioReceiver: %d of %d messages arrived\n", received.load(), kMessages);
  sender.disconnect(address);
  loop->stop();
  loop_thread.join();
  return 0;
}

} // namespace

int main(int argc, char** argv) try {
  const std::string host = argc > 1 ? argv[1] : "127.0.0.1";
  return backend_modes(host) + frontend(host);
} catch (const std::exception& error) {
  std::fprintf(stderr, "send modes: %s\n", error.what());
  return 1;
}
