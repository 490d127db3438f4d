// netio3-cat: publish and subscribe by hand, for debugging a running system (like nng's nngcat).
//
//   netio3-cat publish --listen ADDR --tag TAGS [options]     lines of stdin, or generated messages
//   netio3-cat subscribe --tag TAGS [options] PUBLISHER       prints what arrives

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>

#include "Common.hpp"
#include "Parse.hpp"
#include "Publisher.hpp"
#include "Subscriber.hpp"
#include "netio3/BufferFormatter.hpp"
#include "netio3/Log.hpp"

namespace netio3::cat {
namespace {

constexpr const char* description = R"(netio3-cat publishes and subscribes to netio3 messages by hand, for debugging a
running system: publish lines you type (or a file, or generated messages) on tags, and watch what a
publisher sends. Messages travel over the same protocol as NetioPublisher/NetioSubscriber, so
netio3-cat talks to any program built on them, and they to it.

Roles:
  publish    listen for subscribers and publish messages by tag
  subscribe  subscribe to tags of one publisher and print each message

Examples (two terminals):
  netio3-cat publish --listen 127.0.0.1:5555 --tag 7                 type lines; each is a message
  netio3-cat subscribe --tag 7 127.0.0.1:5555                        prints them

  seq 1000 | netio3-cat publish --listen :5555 --tag 1-4             lines to tags 1,2,3,4 in turn
  netio3-cat subscribe --tag 2,4 --show-tag --count 500 HOST:5555

  netio3-cat publish --listen :5555 --tag 7 --size 64                64-byte messages, full speed
  netio3-cat subscribe --tag 7 --format count HOST:5555              live rate, counts at the end)";

constexpr const char* footer = R"(Addresses: HOST:PORT, [IPV6]:PORT (brackets needed with a port), or a host name.
Run 'netio3-cat ROLE --help' for the options of each role.
Exit status: 0 done (input ended, --count reached, or Ctrl-C), 1 failed (publisher lost or unreachable,
cannot listen...), 2 bad command line. Ctrl-C ends cleanly; twice, at once.
Library log messages: warnings and errors are shown; NETIO3_LOG=info|debug|trace|off changes that.)";

/// The option text, turned into values once parsing has succeeded.
struct Arguments {
  std::string backend{"asyncmsg"};
  std::string provider;
  bool quiet{false};
  std::string tags;
  std::uint64_t count{0};
  // publish
  std::string listen;
  std::string size;
  double rate{0.0};
  std::string method{"buffered"};
  std::int64_t flush_interval_us{1000};
  std::string buffer_size;
  std::size_t buffers{16};
  std::size_t wait_for{1};
  // subscribe
  std::string publisher;
  std::string format{"text"};
  bool show_tag{false};
  std::string local_ip{"0.0.0.0"};
  std::string max_size{"1m"};
};

void add_common_options(CLI::App& app, Arguments& arguments) {
  app.add_option("--backend", arguments.backend,
                 "What carries the data: asyncmsg (TCP sockets) or libfabric. Publisher and subscriber must use "
                 "the same. Example: --backend libfabric")
      ->check(CLI::IsMember({"asyncmsg", "libfabric"}))
      ->capture_default_str();
  app.add_option("--provider", arguments.provider,
                 "libfabric provider: tcp (the default), sockets, or verbs (RDMA). Needs --backend libfabric. "
                 "Example: --provider verbs")
      ->check(CLI::IsMember({"tcp", "sockets", "verbs"}));
  app.add_flag("--quiet,-q", arguments.quiet,
               "No notes on stderr (subscriber changes, events, summary); errors and the 'listening on' line "
               "still appear.");
}

BackendChoice backend_choice(const Arguments& arguments) {
  BackendChoice choice;
  choice.type = arguments.backend == "libfabric" ? NetworkType::LIBFABRIC : NetworkType::ASYNCMSG;
  if (!arguments.provider.empty() && choice.type != NetworkType::LIBFABRIC) {
    throw UsageError("--provider " + arguments.provider + " needs --backend libfabric");
  }
  choice.provider = arguments.provider;
  choice.mode = arguments.provider == "verbs" ? NetworkMode::RDMA : NetworkMode::TCP;
  return choice;
}

PublishOptions publish_options(const Arguments& arguments, bool buffer_size_given) {
  PublishOptions options;
  options.backend = backend_choice(arguments);
  options.listen = parse_listen_address(arguments.listen);
  options.tags = parse_tags(arguments.tags);
  options.rate = arguments.rate;
  options.count = arguments.count;
  options.method = arguments.method == "copy"       ? SendMethod::COPY
                   : arguments.method == "zerocopy" ? SendMethod::ZERO_COPY
                                                    : SendMethod::BUFFERED;
  options.flush_interval = std::chrono::microseconds{arguments.flush_interval_us};
  options.buffers = arguments.buffers;
  options.wait_for = arguments.wait_for;
  options.quiet = arguments.quiet;
  constexpr std::size_t overhead = BufferFormatter::max_overhead;
  if (buffer_size_given) {
    options.buffer_size = parse_size(arguments.buffer_size, "--buffer-size");
    if (options.buffer_size <= overhead || options.buffer_size > BufferFormatter::max_payload_size) {
      throw UsageError("--buffer-size: " + arguments.buffer_size + " is out of range (" + std::to_string(overhead + 1) +
                       " bytes to 1 GiB)");
    }
  }
  if (!arguments.size.empty()) {
    const std::size_t size = parse_size(arguments.size, "--size");
    if (size > BufferFormatter::max_payload_size - overhead) {
      throw UsageError("--size: " + arguments.size + " is larger than a netio3 message can be");
    }
    if (buffer_size_given && size > options.buffer_size - overhead) {
      throw UsageError("--size " + arguments.size + " does not fit in --buffer-size " + arguments.buffer_size +
                       ": a message holds at most " + std::to_string(options.buffer_size - overhead) + " bytes (" +
                       std::to_string(overhead) + " less than a buffer)");
    }
    if (!buffer_size_given) {
      options.buffer_size = std::max(options.buffer_size, size + overhead);
    }
    options.size = size;
  }
  return options;
}

SubscribeOptions subscribe_options(const Arguments& arguments) {
  SubscribeOptions options;
  options.backend = backend_choice(arguments);
  options.publisher = parse_publisher_address(arguments.publisher);
  options.tags = parse_tags(arguments.tags);
  options.format = arguments.format == "hex"     ? OutputFormat::hex
                   : arguments.format == "count" ? OutputFormat::count
                                                 : OutputFormat::text;
  options.show_tag = arguments.show_tag;
  options.count = arguments.count;
  try {
    (void)EndPointAddress{arguments.local_ip, 0};
  } catch (const std::exception& error) {
    throw UsageError(std::string{"--local-ip: "} + error.what());
  }
  options.local_ip = arguments.local_ip;
  options.max_size = parse_size(arguments.max_size, "--max-size");
  if (options.max_size <= BufferFormatter::max_overhead) {
    throw UsageError("--max-size: " + arguments.max_size + " cannot hold a message (" +
                     std::to_string(BufferFormatter::max_overhead + 1) + " bytes at least)");
  }
  options.quiet = arguments.quiet;
  return options;
}

/// Breaks an option's description into lines of at most `width` characters: CLI11 indents each
/// continuation line under the first, so the help stays readable in an 100-column terminal.
std::string wrap(const std::string& text, std::size_t width = 68) {
  std::string wrapped;
  std::size_t line_length = 0;
  std::size_t position = 0;
  while (position < text.size()) {
    const std::size_t space = text.find(' ', position);
    const std::size_t end = space == std::string::npos ? text.size() : space;
    const std::size_t word_length = end - position;
    if (line_length > 0 && line_length + 1 + word_length > width) {
      wrapped += '\n';
      line_length = 0;
    } else if (line_length > 0) {
      wrapped += ' ';
      ++line_length;
    }
    wrapped.append(text, position, word_length);
    line_length += word_length;
    position = end + 1;
  }
  return wrapped;
}

void wrap_descriptions(CLI::App& app) {
  for (CLI::Option* option : app.get_options()) {
    option->description(wrap(option->get_description()));
  }
}

void use_library_log() {
  // Tools show the library's warnings unless told otherwise: they explain failures (why a
  // publisher was lost, why a subscriber was refused). Through note(), so a live line is cleared.
  if (std::getenv("NETIO3_LOG") == nullptr) { // NOLINT(concurrency-mt-unsafe): before any thread starts
    set_log_level(LogLevel::Warning);
  }
  set_log_sink([](LogLevel level, std::string_view message) {
    std::fflush(stdout); // what was received before it comes first, also when both go to one file
    note(std::string{"[netio3 "} + std::string{to_string(level)} + "] " + std::string{message});
  });
}

} // namespace
} // namespace netio3::cat

int main(int argc, char** argv) {
  using namespace netio3::cat;
  CLI::App app{description, "netio3-cat"};
  app.require_subcommand(1);
  app.footer(footer);
  app.failure_message([](const CLI::App*, const CLI::Error& error) {
    return "netio3-cat: " + std::string{error.what()} + "\nRun with --help for more information.\n";
  });
  Arguments arguments;

  CLI::App* publish = app.add_subcommand("publish", "Listen for subscribers and publish messages by tag");
  publish
      ->add_option("--listen", arguments.listen,
                   "Where subscribers connect: HOST:PORT, [IPV6]:PORT, :PORT or PORT (every IPv4 interface), or "
                   "HOST alone (any free port). Port 0 picks a free one; the address is printed as 'listening on "
                   "HOST:PORT'. Example: --listen 127.0.0.1:5555")
      ->type_name("ADDR")
      ->required();
  publish
      ->add_option("--tag", arguments.tags,
                   "Tag(s) to publish on: T, T,T... or a range A-B (decimal or 0x hex); with several, messages go "
                   "to each in turn, in increasing order. Example: --tag 7, --tag 1-8")
      ->type_name("TAGS")
      ->required();
  publish
      ->add_option("--size", arguments.size,
                   "Publish generated messages of this many bytes ('#N ' then letters) instead of lines of "
                   "standard input (k, m suffixes). Example: --size 64")
      ->type_name("BYTES");
  publish
      ->add_option("--rate", arguments.rate,
                   "Messages per second (fractions allowed); 0: as fast as the subscribers take them. Example: "
                   "--rate 10")
      ->type_name("N")
      ->check(CLI::Range(0.0, 1e9))
      ->capture_default_str();
  publish
      ->add_option("--count", arguments.count,
                   "End the input after this many messages (lines read or messages generated); 0: no limit. "
                   "Example: --count 1000")
      ->type_name("N");
  publish
      ->add_option("--method", arguments.method,
                   "How messages are sent. buffered: many per network buffer, sent when full or --flush-interval "
                   "after its first message (for high rates); copy: each in a buffer of its own, at once; "
                   "zerocopy: from the tool's memory. Example: --method copy")
      ->check(CLI::IsMember({"buffered", "copy", "zerocopy"}))
      ->capture_default_str();
  publish
      ->add_option("--flush-interval", arguments.flush_interval_us,
                   "buffered: microseconds a message may wait for its buffer to fill; 0: only full buffers are "
                   "sent (and at the end of input). Example: --flush-interval 100")
      ->type_name("MICROSECONDS")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{60'000'000}))
      ->capture_default_str();
  auto* buffer_size =
      publish
          ->add_option("--buffer-size", arguments.buffer_size,
                       "Bytes per network buffer; the largest message is 13 less. Default 16k, or --size + 13 if "
                       "larger. Subscribers need --max-size at least this. Example: --buffer-size 64k")
          ->type_name("BYTES");
  publish
      ->add_option("--buffers", arguments.buffers,
                   "Buffers per subscriber: how much a slow subscriber may hold back before publishing waits "
                   "for it. Example: --buffers 64")
      ->type_name("N")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20U))
      ->capture_default_str();
  publish
      ->add_option("--wait-for", arguments.wait_for,
                   "Before the first message, wait until this many subscribers are connected and subscribed to "
                   "these tags (so that piped input is not published to nobody); 0: start at once. Example: "
                   "--wait-for 2")
      ->type_name("N")
      ->capture_default_str();
  add_common_options(*publish, arguments);
  publish->footer(R"(Input: without --size, each line of standard input is one message (without its newline; a
last line without one counts too), published as soon as it is read: type them, pipe them, or
redirect a file. With --size, generated messages. Lines longer than the largest message are skipped
with a note. While the publisher has no subscriber at all, generating pauses; a line nobody
subscribes to is dropped (counted in the summary).
End: when the input ends (end of file, Ctrl-D, --count), the publisher flushes and serves until its
subscribers have left, then exits; Ctrl-C ends at once.
Prints on stderr: 'listening on HOST:PORT', 'subscribers: N' when that changes, a summary at the end.

Examples:
  netio3-cat publish --listen 127.0.0.1:5555 --tag 7
  seq 100 | netio3-cat publish --listen :5555 --tag 1-4 --wait-for 2
  netio3-cat publish --listen :5555 --tag 7 --size 1k --rate 1000 --method copy
  netio3-cat publish --listen 127.0.0.1:0 --tag 7 --size 64 --backend libfabric --provider tcp)");

  CLI::App* subscribe = app.add_subcommand("subscribe", "Subscribe to tags of a publisher and print each message");
  subscribe
      ->add_option("PUBLISHER", arguments.publisher,
                   "The publisher's address, as it printed it: HOST:PORT or [IPV6]:PORT. Example: 127.0.0.1:5555")
      ->type_name("HOST:PORT")
      ->required();
  subscribe
      ->add_option("--tag", arguments.tags,
                   "Tag(s) to subscribe to: T, T,T..., a range A-B, or a mix (decimal or 0x hex; at most 1048576 "
                   "tags). Example: --tag 7, --tag 1,5,100-199")
      ->type_name("TAGS")
      ->required();
  subscribe
      ->add_option("--format", arguments.format,
                   "text: each message on a line of its own, bytes other than printable ASCII escaped (\\n, \\t, "
                   "\\\\, \\xHH); hex: a header line and a hex dump per message; count: nothing per message, "
                   "messages and bytes per tag at the end. Example: --format hex")
      ->check(CLI::IsMember({"text", "hex", "count"}))
      ->capture_default_str();
  subscribe->add_flag("--show-tag", arguments.show_tag,
                      "text: start each line with 'tag T: ' ('tag T status S: ' for a non-zero status).");
  subscribe
      ->add_option("--count", arguments.count,
                   "Exit (status 0) after this many messages; 0: until Ctrl-C or the publisher is gone. "
                   "Example: --count 10")
      ->type_name("N");
  subscribe
      ->add_option("--local-ip", arguments.local_ip,
                   "Where this subscriber's data listener listens: the publisher connects back to it. 0.0.0.0: "
                   "the interface that reaches the publisher. Example: --local-ip 127.0.0.1")
      ->type_name("IP")
      ->capture_default_str();
  subscribe
      ->add_option("--max-size", arguments.max_size,
                   "Largest network buffer or message accepted; must be at least the publisher's --buffer-size "
                   "(else it refuses us, saying so). Example: --max-size 4m")
      ->type_name("BYTES")
      ->capture_default_str();
  add_common_options(*subscribe, arguments);
  subscribe->footer(R"(Prints each message on stdout; on stderr the events (subscribed, refused, unsubscribed,
publisher lost), a live rate line once a second when stderr is a terminal (and stdout is not, or
--format count), and a summary at the end. Exits 1 when the publisher cannot be reached, refuses
every tag, or is lost (after printing what arrived).

Examples:
  netio3-cat subscribe --tag 7 127.0.0.1:5555
  netio3-cat subscribe --tag 1-100 --format count HOST:5555
  netio3-cat subscribe --tag 7 --format hex --count 1 [::1]:5555)");

  wrap_descriptions(*publish);
  wrap_descriptions(*subscribe);
  if (argc > 1 && argv[1][0] != '-' && std::string_view{argv[1]} != "publish" &&
      std::string_view{argv[1]} != "subscribe") {
    // CLI11 would only say that a subcommand is required.
    std::cerr << "netio3-cat: unknown role '" << argv[1] << "' (publish or subscribe)\n"
              << "Run with --help for more information.\n";
    return exit_usage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int status = app.exit(error);
    return status == 0 ? 0 : exit_usage;
  }
  try {
    use_library_log();
    if (publish->parsed()) {
      const PublishOptions options = publish_options(arguments, buffer_size->count() > 0);
      return run_publish(options);
    }
    const SubscribeOptions options = subscribe_options(arguments);
    return run_subscribe(options);
  } catch (const UsageError& error) {
    std::cerr << "netio3-cat: " << error.what() << "\nRun with --help for more information.\n";
    return exit_usage;
  } catch (const std::exception& error) {
    std::cerr << "netio3-cat: " << error.what() << '\n';
    return exit_failure;
  }
}
