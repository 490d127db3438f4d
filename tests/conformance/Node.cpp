#include "conformance/Node.hpp"

#include <exception>
#include <stdexcept>

namespace netio3::conformance {

// --- LoopThread -----------------------------------------------------------------------------------

LoopThread::LoopThread()
  : m_loop{std::make_shared<EpollEventLoop>([this] {
      {
        std::lock_guard lock{m_mutex};
        m_running = true;
      }
      m_changed.notify_all();
    })} {
  m_task_signal = m_loop->create_signal([this] { run_queued_tasks(); });
  m_thread = std::thread{[this] { m_loop->run(); }};
  m_thread_id = m_thread.get_id();
  std::unique_lock lock{m_mutex};
  if (!m_changed.wait_until(lock, deadline_from_now(), [this] { return m_running; })) {
    lock.unlock();
    m_loop->stop();
    m_thread.join();
    throw std::runtime_error("LoopThread: the event loop did not start running");
  }
}

LoopThread::~LoopThread() {
  // stop() before run() starts would be forgotten; run() has started (constructor waited).
  m_loop->stop();
  m_thread.join();
  m_task_signal.reset();
}

void LoopThread::run_queued_tasks() {
  for (;;) {
    std::function<void()> task;
    {
      std::lock_guard lock{m_mutex};
      if (m_tasks.empty()) {
        return;
      }
      task = std::move(m_tasks.front());
      m_tasks.pop_front();
    }
    task();
  }
}

void LoopThread::run_on_loop(const std::function<void()>& task) {
  if (std::this_thread::get_id() == m_thread_id) {
    task();
    return;
  }
  struct Outcome {
    std::mutex mutex;
    std::condition_variable done_changed;
    bool done{false};
    std::exception_ptr error;
  };
  auto outcome = std::make_shared<Outcome>();
  {
    std::lock_guard lock{m_mutex};
    m_tasks.emplace_back([task, outcome] {
      std::exception_ptr error;
      try {
        task();
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard done_lock{outcome->mutex};
        outcome->error = error;
        outcome->done = true;
      }
      outcome->done_changed.notify_all();
    });
  }
  m_task_signal.fire();
  std::unique_lock lock{outcome->mutex};
  if (!outcome->done_changed.wait_until(lock, deadline_from_now(), [&] { return outcome->done; })) {
    throw std::runtime_error("run_on_loop: the event loop did not run the task before the deadline");
  }
  if (outcome->error) {
    std::rethrow_exception(outcome->error);
  }
}

// --- Node -----------------------------------------------------------------------------------------

Node::Node(const BackendUnderTest& backend, const NodeOptions& options, std::shared_ptr<LoopThread> loop_thread)
  : m_loop_thread{loop_thread ? std::move(loop_thread) : std::make_shared<LoopThread>()},
    m_recorder{std::make_unique<Recorder>(m_loop_thread->thread_id())}, m_thread_safety{options.thread_safety} {
  m_config.mode = backend.mode;
  m_config.provider = backend.provider;
  m_config.thread_safety = options.thread_safety;
  if (options.configure) {
    options.configure(m_config);
  }
  m_recorder->attach(m_config, options.use_on_data_from, options.set_both_data_callbacks);
  if (m_thread_safety == ThreadSafetyModel::UNSAFE) {
    // UNSAFE: one thread at a time; with the loop running, that is the loop thread.
    m_loop_thread->run_on_loop(
        [&] { m_backend = NetworkBackend::create(backend.type, m_config, m_loop_thread->loop()); });
  } else {
    m_backend = NetworkBackend::create(backend.type, m_config, m_loop_thread->loop());
  }
}

Node::~Node() {
  m_recorder->pause_data(false);
  destroy_backend();
}

void Node::destroy_backend() {
  m_recorder->pause_data(false);
  if (!m_backend) {
    return;
  }
  if (m_thread_safety == ThreadSafetyModel::UNSAFE) {
    m_loop_thread->run_on_loop([this] { m_backend.reset(); });
  } else {
    m_backend.reset();
  }
}

void Node::call(const std::function<void()>& task) {
  if (m_thread_safety == ThreadSafetyModel::UNSAFE) {
    m_loop_thread->run_on_loop(task);
  } else {
    task();
  }
}

EndPointAddress Node::listen(const ConnectionParametersRecv& params, std::uint16_t port) {
  EndPointAddress real;
  call([&] { real = m_backend->open_listen_endpoint(EndPointAddress{test_environment().address, port}, params); });
  return real;
}

void Node::open_send(const EndPointAddress& address, const ConnectionParameters& params) {
  m_recorder->expect_reopen(address);
  call([&] { m_backend->open_send_endpoint(address, params); });
}

bool Node::connect(const EndPointAddress& address, const ConnectionParameters& params) {
  const std::size_t before = m_recorder->inspect([&](const RecorderState& s) { return s.established_count(address); });
  const std::size_t refused_before =
      m_recorder->inspect([&](const RecorderState& s) { return s.refused_count(address); });
  open_send(address, params);
  m_recorder->wait([&](const RecorderState& s) {
    return s.established_count(address) > before || s.refused_count(address) > refused_before;
  });
  return m_recorder->inspect([&](const RecorderState& s) { return s.established_count(address) > before; });
}

bool Node::wait_established(const EndPointAddress& address, std::size_t count) {
  return m_recorder->wait([&](const RecorderState& s) { return s.established_count(address) >= count; });
}

bool Node::wait_closed(const EndPointAddress& address, std::size_t count) {
  return m_recorder->wait([&](const RecorderState& s) { return s.closed_count(address) >= count; });
}

bool Node::wait_refused(const EndPointAddress& address, std::size_t count) {
  return m_recorder->wait([&](const RecorderState& s) { return s.refused_count(address) >= count; });
}

} // namespace netio3::conformance
