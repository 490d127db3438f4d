#pragma once

// Containers of the frontend's send path that never allocate after construction (private).

#include <cassert>
#include <chrono>
#include <cstddef>
#include <vector>

namespace netio3::detail {

/// A FIFO of at most `capacity` items whose storage is allocated once, at construction.
template <typename Item>
class FixedRing {
public:
  explicit FixedRing(std::size_t capacity) : m_items(capacity) {}

  [[nodiscard]] bool empty() const noexcept { return m_count == 0; }
  [[nodiscard]] bool full() const noexcept { return m_count == m_items.size(); }
  [[nodiscard]] std::size_t size() const noexcept { return m_count; }
  [[nodiscard]] std::size_t capacity() const noexcept { return m_items.size(); }

  /// Appends `item`; the ring must not be full.
  void push(const Item& item) noexcept {
    assert(!full());
    m_items[(m_head + m_count) % m_items.size()] = item;
    ++m_count;
  }
  /// The oldest item; the ring must not be empty.
  [[nodiscard]] Item& front() noexcept { return m_items[m_head]; }
  /// Removes the oldest item; the ring must not be empty.
  void pop() noexcept {
    m_head = (m_head + 1) % m_items.size();
    --m_count;
  }
  /// Calls `visit(item)` for each item, oldest first, then empties the ring.
  template <typename Visit>
  void drain_into(Visit&& visit) {
    for (; m_count > 0; pop()) {
      visit(front());
    }
  }

private:
  std::vector<Item> m_items;
  std::size_t m_head{0};
  std::size_t m_count{0};
};

/// The links of an object in one `DeadlineList`.
template <typename Node>
struct DeadlineLink {
  Node* previous{nullptr};
  Node* next{nullptr};
  bool linked{false};
  std::chrono::steady_clock::time_point deadline{};
};

/// An intrusive list of objects in the order of their deadlines, for deadlines that are always
/// "now plus one fixed interval": appending keeps the order, so inserting, removing and finding
/// the earliest are O(1). `Link` is the member that holds an object's links.
template <typename Node, DeadlineLink<Node> Node::*Link>
class DeadlineList {
public:
  [[nodiscard]] bool empty() const noexcept { return m_head == nullptr; }
  [[nodiscard]] Node* front() const noexcept { return m_head; }

  /// Appends `node` with `deadline` (not before the last one's); a node already in the list keeps
  /// its place and deadline.
  void push_back(Node& node, std::chrono::steady_clock::time_point deadline) noexcept {
    DeadlineLink<Node>& link = node.*Link;
    if (link.linked) {
      return;
    }
    link = DeadlineLink<Node>{m_tail, nullptr, true, deadline};
    if (m_tail != nullptr) {
      (m_tail->*Link).next = &node;
    } else {
      m_head = &node;
    }
    m_tail = &node;
  }

  /// Removes `node` if it is in the list.
  void remove(Node& node) noexcept {
    DeadlineLink<Node>& link = node.*Link;
    if (!link.linked) {
      return;
    }
    (link.previous != nullptr ? (link.previous->*Link).next : m_head) = link.next;
    (link.next != nullptr ? (link.next->*Link).previous : m_tail) = link.previous;
    link = DeadlineLink<Node>{};
  }

private:
  Node* m_head{nullptr};
  Node* m_tail{nullptr};
};

} // namespace netio3::detail
