#include "RunOnLoop.hpp"

#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>

namespace netio3::detail {

void run_on_loop_thread(const std::shared_ptr<BaseEventLoop>& loop, const std::function<void()>& work) {
  if (loop->in_loop_thread() || !loop->is_running()) {
    work();
    return;
  }
  std::mutex mutex;
  std::condition_variable finished;
  bool done = false;
  std::exception_ptr failure;
  EventSignalHandle request = loop->create_signal([&] {
    try {
      work();
    } catch (...) {
      failure = std::current_exception();
    }
    const std::lock_guard lock{mutex};
    done = true;
    finished.notify_all();
  });
  request.fire();
  {
    std::unique_lock lock{mutex};
    // The loop may stop without handling the request; look again every few milliseconds.
    while (!finished.wait_for(lock, std::chrono::milliseconds{10}, [&] { return done; }) && loop->is_running()) {
    }
  }
  request.reset(); // waits for the callback if it is running; afterwards it is not called
  bool ran = false;
  {
    const std::lock_guard lock{mutex};
    ran = done;
  }
  if (!ran) {
    work();
  }
  if (failure) {
    std::rethrow_exception(failure);
  }
}

} // namespace netio3::detail
