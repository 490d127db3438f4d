// Built into the libfabric test binaries: the sanitizer suppressions of tsan.supp (read it for the
// reasons), so that the tests need no environment variable.

extern "C" {

/// Default ThreadSanitizer suppressions (the sanitizer runtime calls this weak hook at start-up).
const char* __tsan_default_suppressions() {
  return "race:libfabric.so.1\n";
}

} // extern "C"
