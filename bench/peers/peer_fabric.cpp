// libfabric peer in the style of fabtests' fi_msg_bw: FI_EP_MSG endpoints, one message per fi_send,
// a window of sends in flight, the receiver keeping a window of receives posted, completion queues
// polled (as fabtests do by default). Two processes on loopback; provider tcp unless told.
//
//   peer-fabric --size 64 --duration 1 [--window 64] [--provider tcp]

#include <arpa/inet.h>
#include <cstring>
#include <netinet/in.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>

#include "PeerCommon.hpp"

namespace {

void check(int result, const char* what) {
  if (result < 0) {
    peer::die(std::string("peer-fabric: ") + what + ": " + fi_strerror(-result));
  }
}

/// One side's endpoint and its queues, registered buffer included.
struct Side {
  fi_info* info{nullptr};
  fid_fabric* fabric{nullptr};
  fid_eq* eq{nullptr};
  fid_pep* pep{nullptr};
  fid_domain* domain{nullptr};
  fid_cq* tx_cq{nullptr};
  fid_cq* rx_cq{nullptr};
  fid_ep* ep{nullptr};
  fid_mr* mr{nullptr};
  std::vector<char> memory;
  void* desc{nullptr};
  std::vector<fi_context> contexts;

  ~Side() {
    if (mr != nullptr) {
      fi_close(&mr->fid);
    }
    if (ep != nullptr) {
      fi_close(&ep->fid);
    }
    if (tx_cq != nullptr) {
      fi_close(&tx_cq->fid);
    }
    if (rx_cq != nullptr) {
      fi_close(&rx_cq->fid);
    }
    if (domain != nullptr) {
      fi_close(&domain->fid);
    }
    if (pep != nullptr) {
      fi_close(&pep->fid);
    }
    if (eq != nullptr) {
      fi_close(&eq->fid);
    }
    if (fabric != nullptr) {
      fi_close(&fabric->fid);
    }
    if (info != nullptr) {
      fi_freeinfo(info);
    }
  }
};

fi_info* make_hints(const std::string& provider) {
  fi_info* hints = fi_allocinfo();
  hints->ep_attr->type = FI_EP_MSG;
  hints->caps = FI_MSG;
  hints->mode = FI_CONTEXT;
  hints->addr_format = FI_SOCKADDR_IN;
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
  hints->fabric_attr->prov_name = strdup(provider.c_str());
  return hints;
}

void open_fabric(Side& side) {
  check(fi_fabric(side.info->fabric_attr, &side.fabric, nullptr), "fi_fabric");
  fi_eq_attr eq_attr{};
  eq_attr.wait_obj = FI_WAIT_UNSPEC;
  check(fi_eq_open(side.fabric, &eq_attr, &side.eq, nullptr), "fi_eq_open");
}

/// Domain, completion queues, endpoint and registered memory for `info`.
void open_endpoint(Side& side, fi_info* info, std::size_t memory_size, std::size_t contexts) {
  check(fi_domain(side.fabric, info, &side.domain, nullptr), "fi_domain");
  fi_cq_attr cq_attr{};
  cq_attr.format = FI_CQ_FORMAT_MSG;
  cq_attr.wait_obj = FI_WAIT_NONE;
  cq_attr.size = 1024;
  check(fi_cq_open(side.domain, &cq_attr, &side.tx_cq, nullptr), "fi_cq_open (tx)");
  check(fi_cq_open(side.domain, &cq_attr, &side.rx_cq, nullptr), "fi_cq_open (rx)");
  check(fi_endpoint(side.domain, info, &side.ep, nullptr), "fi_endpoint");
  check(fi_ep_bind(side.ep, &side.eq->fid, 0), "fi_ep_bind (eq)");
  check(fi_ep_bind(side.ep, &side.tx_cq->fid, FI_TRANSMIT), "fi_ep_bind (tx cq)");
  check(fi_ep_bind(side.ep, &side.rx_cq->fid, FI_RECV), "fi_ep_bind (rx cq)");
  check(fi_enable(side.ep), "fi_enable");
  side.memory.assign(memory_size, 'f');
  check(fi_mr_reg(side.domain, side.memory.data(), side.memory.size(), FI_SEND | FI_RECV, 0, 0, 0, &side.mr, nullptr),
        "fi_mr_reg");
  side.desc = fi_mr_desc(side.mr);
  side.contexts.resize(contexts);
}

void wait_event(Side& side, std::uint32_t wanted, fi_eq_cm_entry& entry) {
  std::uint32_t event = 0;
  const ssize_t got = fi_eq_sread(side.eq, &event, &entry, sizeof(entry), 30000, 0);
  if (got == -FI_EAVAIL) {
    fi_eq_err_entry error{};
    fi_eq_readerr(side.eq, &error, 0);
    peer::die(std::string("peer-fabric: connection event error: ") +
              fi_eq_strerror(side.eq, error.prov_errno, error.err_data, nullptr, 0));
  }
  check(static_cast<int>(got), "fi_eq_sread");
  if (event != wanted) {
    peer::die("peer-fabric: unexpected connection event " + std::to_string(event));
  }
}

/// Reads completions; returns how many, dies on an error entry.
std::size_t poll_cq(fid_cq* cq, fi_cq_msg_entry* entries, std::size_t capacity) {
  const ssize_t got = fi_cq_read(cq, entries, capacity);
  if (got == -FI_EAGAIN) {
    return 0;
  }
  if (got == -FI_EAVAIL) {
    fi_cq_err_entry error{};
    fi_cq_readerr(cq, &error, 0);
    peer::die(std::string("peer-fabric: completion error: ") +
              fi_cq_strerror(cq, error.prov_errno, error.err_data, nullptr, 0));
  }
  check(static_cast<int>(got), "fi_cq_read");
  return static_cast<std::size_t>(got);
}

void post_receive(Side& side, std::size_t slot, std::size_t size) {
  while (true) {
    const ssize_t result = fi_recv(side.ep, side.memory.data() + slot * size, size, side.desc, 0, &side.contexts[slot]);
    if (result != -FI_EAGAIN) {
      check(static_cast<int>(result), "fi_recv");
      return;
    }
    fi_cq_read(side.rx_cq, nullptr, 0); // drives progress, reads nothing
  }
}

/// The sending process: connects and streams `size`-byte messages, `window` in flight.
void run_sender(const peer::Settings& settings, std::uint16_t port) {
  Side side;
  fi_info* hints = make_hints(settings.provider);
  const std::string service = std::to_string(port);
  check(fi_getinfo(FI_VERSION(1, 17), "127.0.0.1", service.c_str(), 0, hints, &side.info), "fi_getinfo (client)");
  fi_freeinfo(hints);
  open_fabric(side);
  open_endpoint(side, side.info, settings.size + 64, settings.window + 1);
  // For the receiver's final acknowledgement, after the payload bytes.
  check(static_cast<int>(
            fi_recv(side.ep, side.memory.data() + settings.size, 64, side.desc, 0, &side.contexts[settings.window])),
        "fi_recv (ack)");
  check(fi_connect(side.ep, side.info->dest_addr, nullptr, 0), "fi_connect");
  fi_eq_cm_entry entry{};
  wait_event(side, FI_CONNECTED, entry);

  const auto deadline = peer::Clock::now() + std::chrono::duration_cast<peer::Clock::duration>(
                                                 std::chrono::duration<double>(settings.duration));
  std::uint64_t sent = 0;
  std::uint64_t in_flight = 0;
  fi_cq_msg_entry entries[64];
  auto more = [&] {
    return settings.messages != 0 ? sent < settings.messages : (sent % 1024 != 0 || peer::Clock::now() < deadline);
  };
  while (more()) {
    while (in_flight < settings.window && more()) {
      // FI_CONTEXT: each operation in flight has its own context.
      const ssize_t result =
          fi_send(side.ep, side.memory.data(), settings.size, side.desc, 0, &side.contexts[sent % settings.window]);
      if (result == -FI_EAGAIN) {
        break;
      }
      check(static_cast<int>(result), "fi_send");
      ++sent;
      ++in_flight;
    }
    in_flight -= poll_cq(side.tx_cq, entries, 64);
  }
  // The end mark: a 1-byte message; then wait for every completion and the receiver's ack.
  while (true) {
    const ssize_t result =
        fi_send(side.ep, side.memory.data(), 1, side.desc, 0, &side.contexts[sent % settings.window]);
    if (result != -FI_EAGAIN) {
      check(static_cast<int>(result), "fi_send (end)");
      ++in_flight;
      break;
    }
    in_flight -= poll_cq(side.tx_cq, entries, 64);
  }
  while (in_flight > 0) {
    in_flight -= poll_cq(side.tx_cq, entries, 64);
  }
  while (poll_cq(side.rx_cq, entries, 1) == 0) {
  }
}

int throughput(const peer::Settings& settings) {
  if (settings.size < 2) {
    peer::die("peer-fabric: --size must be at least 2 (1 byte is the end mark)");
  }
  Side side;
  fi_info* hints = make_hints(settings.provider);
  check(fi_getinfo(FI_VERSION(1, 17), "127.0.0.1", "0", FI_SOURCE, hints, &side.info), "fi_getinfo (server)");
  fi_freeinfo(hints);
  open_fabric(side);
  check(fi_passive_ep(side.fabric, side.info, &side.pep, nullptr), "fi_passive_ep");
  check(fi_pep_bind(side.pep, &side.eq->fid, 0), "fi_pep_bind");
  check(fi_listen(side.pep), "fi_listen");
  sockaddr_in address{};
  std::size_t length = sizeof(address);
  check(fi_getname(&side.pep->fid, &address, &length), "fi_getname");
  const std::uint16_t port = ntohs(address.sin_port);

  const pid_t child = fork();
  if (child == 0) {
    run_sender(settings, port);
    _exit(0);
  }
  fi_eq_cm_entry entry{};
  wait_event(side, FI_CONNREQ, entry);
  const std::size_t window = settings.window;
  open_endpoint(side, entry.info, window * settings.size, window + 1);
  for (std::size_t slot = 0; slot < window; ++slot) {
    post_receive(side, slot, settings.size);
  }
  check(fi_accept(side.ep, nullptr, 0), "fi_accept");
  wait_event(side, FI_CONNECTED, entry);
  fi_freeinfo(entry.info);

  std::uint64_t received = 0;
  peer::Clock::time_point first{};
  fi_cq_msg_entry entries[64];
  bool done = false;
  while (!done) {
    const std::size_t got = poll_cq(side.rx_cq, entries, 64);
    for (std::size_t i = 0; i < got; ++i) {
      if (entries[i].len != settings.size) {
        done = true; // the end mark
        continue;
      }
      if (received == 0) {
        first = peer::Clock::now();
      }
      ++received;
      const auto slot =
          static_cast<std::size_t>(static_cast<fi_context*>(entries[i].op_context) - side.contexts.data());
      post_receive(side, slot, settings.size);
    }
  }
  const double seconds = std::chrono::duration<double>(peer::Clock::now() - first).count();
  // Acknowledge, so that the sender closes only after everything arrived.
  while (true) {
    const ssize_t result = fi_send(side.ep, side.memory.data(), 1, side.desc, 0, &side.contexts[window]);
    if (result != -FI_EAGAIN) {
      check(static_cast<int>(result), "fi_send (ack)");
      break;
    }
    poll_cq(side.tx_cq, entries, 64);
  }
  while (poll_cq(side.tx_cq, entries, 64) == 0) {
  }
  int status = 0;
  waitpid(child, &status, 0);
  peer::print_throughput("libfabric-msg-bw", settings.size, received, seconds);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"libfabric peer for bench/compare: fi_msg_bw-style, one message per fi_send, a window in flight",
               "peer-fabric"};
  peer::Settings settings;
  peer::add_options(app, settings);
  app.add_option("--window", settings.window, "Sends in flight and receives posted")->capture_default_str();
  app.add_option("--provider", settings.provider, "libfabric provider (tcp, sockets, verbs)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return throughput(settings);
}
