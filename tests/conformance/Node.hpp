#pragma once

/// @file
/// `LoopThread` (an `EpollEventLoop` running on a thread of its own) and `Node` (one backend on such
/// a loop, with a `Recorder` attached to every callback): the two sides of every conformance test.

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "conformance/Recorder.hpp"
#include "conformance/Support.hpp"
#include "netio3/EpollEventLoop.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::conformance {

/// An `EpollEventLoop` running on its own thread from construction to destruction.
class LoopThread {
public:
  /// Starts the thread and returns once the loop runs.
  LoopThread();
  /// Stops the loop and joins the thread.
  ~LoopThread();
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;
  LoopThread(LoopThread&&) = delete;
  LoopThread& operator=(LoopThread&&) = delete;

  [[nodiscard]] const std::shared_ptr<EpollEventLoop>& loop() const noexcept { return m_loop; }
  /// The thread every callback of a backend on this loop must run on.
  [[nodiscard]] std::thread::id thread_id() const noexcept { return m_thread_id; }

  /// Runs `task` on the loop thread and returns when it has run; rethrows what it throws.
  /// @throws std::runtime_error if the loop does not run the task within the deadline
  void run_on_loop(const std::function<void()>& task);

private:
  void run_queued_tasks();

  std::shared_ptr<EpollEventLoop> m_loop;
  EventSignalHandle m_task_signal;
  std::mutex m_mutex;
  std::condition_variable m_changed;
  std::deque<std::function<void()>> m_tasks;
  bool m_running{false};
  std::thread::id m_thread_id;
  std::thread m_thread;
};

/// How a `Node` configures its backend.
struct NodeOptions {
  ThreadSafetyModel thread_safety{ThreadSafetyModel::SAFE};
  /// Received data through `on_data_from_cb` (true) or `on_data_cb` (false).
  bool use_on_data_from{true};
  /// Set both data callbacks (the backend must use only `on_data_from_cb`).
  bool set_both_data_callbacks{false};
  /// Further changes to the configuration (pools, limits); callbacks are set afterwards.
  std::function<void(NetworkConfig&)> configure{};
};

/// One backend under test on a `LoopThread`, every callback going to a `Recorder`.
class Node {
public:
  /// Creates the backend (and, unless `loop_thread` is given, a loop thread of its own).
  /// @throws whatever `NetworkBackend::create` throws
  explicit Node(const BackendUnderTest& backend, const NodeOptions& options = {},
                std::shared_ptr<LoopThread> loop_thread = nullptr);
  /// Destroys the backend (on the loop thread in UNSAFE mode, with the loop running in SAFE mode),
  /// then releases the loop thread. Releases paused data callbacks first.
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  Node(Node&&) = delete;
  Node& operator=(Node&&) = delete;

  [[nodiscard]] NetworkBackend& backend() { return *m_backend; }
  [[nodiscard]] Recorder& recorder() { return *m_recorder; }
  [[nodiscard]] LoopThread& loop_thread() { return *m_loop_thread; }
  [[nodiscard]] const std::shared_ptr<LoopThread>& shared_loop_thread() const { return m_loop_thread; }
  [[nodiscard]] const NetworkConfig& config() const { return m_config; }

  /// Opens a listen endpoint on the test address (port 0 unless given); returns the real address.
  EndPointAddress listen(const ConnectionParametersRecv& params, std::uint16_t port = 0);
  /// Opens a send endpoint (telling the recorder that callbacks for `address` may come again).
  void open_send(const EndPointAddress& address, const ConnectionParameters& params);
  /// Opens a send endpoint and waits for its established callback; false if it did not come (or
  /// the connection was refused) before the deadline.
  [[nodiscard]] bool connect(const EndPointAddress& address, const ConnectionParameters& params);
  /// Waits for `count` established callbacks for `address` in total.
  [[nodiscard]] bool wait_established(const EndPointAddress& address, std::size_t count = 1);
  /// Waits for `count` closed callbacks for `address` in total.
  [[nodiscard]] bool wait_closed(const EndPointAddress& address, std::size_t count = 1);
  /// Waits for `count` refused callbacks for `address` in total.
  [[nodiscard]] bool wait_refused(const EndPointAddress& address, std::size_t count = 1);

  /// Destroys the backend now (the recorder and loop stay), e.g. to simulate a process going away.
  void destroy_backend();

  /// Runs `task` where this node's thread-safety model allows backend calls: on the loop thread in
  /// UNSAFE mode, on the calling thread in SAFE mode.
  void call(const std::function<void()>& task);

private:
  std::shared_ptr<LoopThread> m_loop_thread;
  std::unique_ptr<Recorder> m_recorder;
  NetworkConfig m_config;
  ThreadSafetyModel m_thread_safety;
  std::unique_ptr<NetworkBackend> m_backend;
};

} // namespace netio3::conformance
