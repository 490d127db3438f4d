#pragma once

/// @file
/// The GoogleTest fixture of the conformance suite: one instantiation per backend under test
/// (`NETIO3_INSTANTIATE_CONFORMANCE`), a probe that skips backends that are not built or whose
/// provider is missing (never the TCP backend), nodes owned by the test, and the callback-contract
/// check after every test.

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "conformance/Node.hpp"
#include "conformance/Recorder.hpp"
#include "conformance/Support.hpp"
#include "conformance/Traffic.hpp"
#include "netio3/EpollEventLoop.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::conformance {

/// Base fixture of every conformance test; the parameter is the backend under test.
class ConformanceTest : public ::testing::TestWithParam<BackendUnderTest> {
public:
  /// Test-name suffix: the backend's name.
  static std::string param_name(const ::testing::TestParamInfo<BackendUnderTest>& info) { return info.param.name; }

protected:
  void SetUp() override {
    const BackendUnderTest& under_test = GetParam();
    // Generous: every wait of a test has its own deadline; this only ends real hangs.
    m_watchdog = std::make_unique<Watchdog>(
        4 * test_environment().deadline, std::string{::testing::UnitTest::GetInstance()->current_test_info()->name()});
    std::optional<std::string> unavailable;
    try {
      unavailable = backend_unavailable(under_test);
    } catch (const std::runtime_error& error) {
      FAIL() << error.what();
    }
    if (unavailable) {
      GTEST_SKIP() << under_test.name << " is not available in this build or on this machine: " << *unavailable;
    }
  }

  void TearDown() override {
    for (std::size_t i = 0; i < m_nodes.size(); ++i) {
      EXPECT_EQ(m_nodes[i]->recorder().violation_count(), 0U) << "callback contract violations at node " << i << ":\n"
                                                              << m_nodes[i]->recorder().violations_text();
    }
    if (HasFailure()) {
      // What each node saw, to tell a backend bug from a test bug.
      for (std::size_t i = 0; i < m_nodes.size(); ++i) {
        std::cerr << "  node " << i << ": " << m_nodes[i]->recorder().summary() << '\n';
      }
    }
    while (!m_nodes.empty()) {
      m_nodes.pop_back();
    }
    // Zero-copy regions go last: a backend may read them until it is destroyed.
    m_regions.clear();
    m_watchdog.reset();
  }

  /// The backend under test.
  [[nodiscard]] const BackendUnderTest& under_test() const { return GetParam(); }

  /// A message or connection count: `normal` scaled for the environment (`scaled`) and divided by
  /// the backend's slowness, never below `minimum`.
  [[nodiscard]] std::size_t count(std::size_t normal, std::size_t minimum = 1) const {
    return std::max(scaled(normal, minimum) / under_test().slowness, minimum);
  }

  /// A node owned by the test (destroyed after the contract check in `TearDown`, newest first).
  Node& make_node(const NodeOptions& options = {}, std::shared_ptr<LoopThread> loop_thread = nullptr) {
    m_nodes.push_back(std::make_unique<Node>(under_test(), options, std::move(loop_thread)));
    return *m_nodes.back();
  }

  /// Page-aligned zero-copy memory owned by the test and freed only after every node is destroyed
  /// (a backend may read a zero-copy payload until its key comes back or it is destroyed).
  AlignedMemory& make_region(std::size_t size) {
    m_regions.push_back(std::make_unique<AlignedMemory>(size));
    return *m_regions.back();
  }

  /// Destroys a node made by `make_node` now (checking its callback contract first).
  void destroy_node(Node& node) {
    const auto found = std::find_if(m_nodes.begin(), m_nodes.end(),
                                    [&](const std::unique_ptr<Node>& held) { return held.get() == &node; });
    ASSERT_NE(found, m_nodes.end());
    EXPECT_EQ(node.recorder().violation_count(), 0U) << node.recorder().violations_text();
    m_nodes.erase(found);
  }

  /// Receiver parameters for messages of up to `max_payload` payload bytes plus the test header.
  static ConnectionParametersRecv receive_params(std::size_t max_payload, std::size_t num_buf = 16) {
    ConnectionParametersRecv params;
    params.buf_size = max_payload + message_header_size;
    params.num_buf = num_buf;
    return params;
  }

  /// Sender parameters: a buffered pool (`num_buf` buffers for messages of `max_payload`) and the
  /// zero-copy region `region` (always set: RDMA needs it).
  static ConnectionParameters send_params(std::size_t max_payload, std::size_t num_buf, AlignedMemory* region) {
    ConnectionParameters params;
    params.buf_size = max_payload + message_header_size;
    params.num_buf = num_buf;
    if (region != nullptr) {
      params.mr_start = region->data();
      params.mr_size = region->size();
    }
    return params;
  }

private:
  std::vector<std::unique_ptr<Node>> m_nodes;
  std::vector<std::unique_ptr<AlignedMemory>> m_regions;
  std::unique_ptr<Watchdog> m_watchdog;
};

} // namespace netio3::conformance

/// Instantiates the conformance suite `suite` (a subclass of `ConformanceTest`) for every selected
/// backend, named after it: `Backends/<suite>.<test>/<backend>`.
#define NETIO3_INSTANTIATE_CONFORMANCE(suite)                                                                          \
  INSTANTIATE_TEST_SUITE_P(Backends, suite, ::testing::ValuesIn(::netio3::conformance::selected_backends()),           \
                           ::netio3::conformance::ConformanceTest::param_name)
