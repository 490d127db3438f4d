#pragma once

// Running a piece of work on an event loop's thread and waiting for it (private).

#include <functional>
#include <memory>

#include "netio3/BaseEventLoop.hpp"

namespace netio3::detail {

/// Runs `work` on the thread of `loop` and returns when it has run; rethrows what it threw.
///
/// Why: objects whose state only the loop thread changes (a control connection's fd, its
/// connect attempts) can be torn down from another thread only by the loop thread itself, or a
/// callback that runs at that moment races with the teardown.
///
/// Runs `work` at once on the calling thread when that is the loop thread or the loop is not
/// running (then nothing else runs callbacks of the loop). If the loop stops before it handled
/// the request, the request is withdrawn and `work` runs on the calling thread.
void run_on_loop_thread(const std::shared_ptr<BaseEventLoop>& loop, const std::function<void()>& work);

} // namespace netio3::detail
