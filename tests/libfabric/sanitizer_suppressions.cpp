// Built into the libfabric test binaries: sanitizer suppressions, so that the tests need no
// environment variable.
//
// ThreadSanitizer: see tsan.supp for the reasons (races between libfabric's own provider threads).
//
// LeakSanitizer: the `sockets` provider sometimes leaks a few small callocs (4 x 400 bytes seen) of a
// connection request that is still in flight inside the provider when the domain is closed
// (DestroyingDuringConnectionSetUpIsClean/sockets, 4 to 7 runs in 10 under asan, with and without
// the backend's latest changes). The allocation stacks lie entirely inside libfabric.so.1, which has
// no symbols. The suppression hides leaks whose allocation happened inside libfabric; leaks of
// libfabric objects the backend itself opens and forgets to close are still caught by the fd and RSS
// checks of open_close_test (1,000 cycles), which fail when a completion queue is leaked per cycle.

extern "C" {

/// Default ThreadSanitizer suppressions (the sanitizer runtime calls this weak hook at start-up).
const char* __tsan_default_suppressions() {
  return "race:libfabric.so.1\n";
}

/// Default LeakSanitizer suppressions (weak hook, read at start-up).
const char* __lsan_default_suppressions() {
  return "leak:libfabric.so.1\n";
}

} // extern "C"
