// netio3-cat's pure helpers: address splitting, tag lists, sizes, escaping and hex dumps.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "Format.hpp"
#include "Parse.hpp"

namespace netio3::cat {
namespace {

std::span<const std::uint8_t> bytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

TEST(Address, HostPortForms) {
  HostPort parts = split_host_port("127.0.0.1:5555", "X");
  EXPECT_EQ(parts.host, "127.0.0.1");
  EXPECT_EQ(parts.port, 5555);
  parts = split_host_port("[::1]:5555", "X");
  EXPECT_EQ(parts.host, "::1");
  EXPECT_EQ(parts.port, 5555);
  parts = split_host_port("[fe80::1]", "X");
  EXPECT_EQ(parts.host, "fe80::1");
  EXPECT_FALSE(parts.port.has_value());
  parts = split_host_port("::1", "X");
  EXPECT_EQ(parts.host, "::1");
  EXPECT_FALSE(parts.port.has_value());
  parts = split_host_port("localhost:0", "X");
  EXPECT_EQ(parts.host, "localhost");
  EXPECT_EQ(parts.port, 0);
  parts = split_host_port(":80", "X");
  EXPECT_EQ(parts.host, "");
  EXPECT_EQ(parts.port, 80);
  parts = split_host_port("example.org", "X");
  EXPECT_EQ(parts.host, "example.org");
  EXPECT_FALSE(parts.port.has_value());
}

TEST(Address, MalformedTextNamesTheOption) {
  for (const char* text : {"", "[::1", "[]:5", "[::1]5555", "host:", "host:65536", "host:12a", "[::1]:-1"}) {
    try {
      (void)split_host_port(text, "--listen");
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const UsageError& error) {
      EXPECT_NE(std::string{error.what()}.find("--listen"), std::string::npos) << error.what();
    }
  }
}

TEST(Address, ListenDefaults) {
  EXPECT_EQ(parse_listen_address("5555"), (EndPointAddress{"0.0.0.0", 5555}));
  EXPECT_EQ(parse_listen_address(":5555"), (EndPointAddress{"0.0.0.0", 5555}));
  EXPECT_EQ(parse_listen_address("127.0.0.1"), (EndPointAddress{"127.0.0.1", 0}));
  EXPECT_EQ(parse_listen_address("[::1]:7"), (EndPointAddress{"::1", 7}));
  EXPECT_EQ(parse_listen_address("::1"), (EndPointAddress{"::1", 0}));
  EXPECT_THROW((void)parse_listen_address("300.1.1.1:5"), UsageError);
  EXPECT_THROW((void)parse_listen_address("bad_name!:5"), UsageError);
}

TEST(Address, PublisherNeedsHostAndPort) {
  EXPECT_EQ(parse_publisher_address("127.0.0.1:5555"), (EndPointAddress{"127.0.0.1", 5555}));
  EXPECT_EQ(parse_publisher_address("[::1]:5555"), (EndPointAddress{"::1", 5555}));
  EXPECT_EQ(parse_publisher_address("localhost:1"), (EndPointAddress{"localhost", 1}));
  for (const char* text : {"127.0.0.1", ":5555", "127.0.0.1:0", "::1", "::1:5555", "300.0.0.1:5"}) {
    EXPECT_THROW((void)parse_publisher_address(text), UsageError) << text;
  }
}

TEST(Tags, ListsRangesAndHex) {
  EXPECT_EQ(parse_tags("7"), (std::vector<std::uint64_t>{7}));
  EXPECT_EQ(parse_tags("5,1,3,1"), (std::vector<std::uint64_t>{1, 3, 5}));
  EXPECT_EQ(parse_tags("2,4-6"), (std::vector<std::uint64_t>{2, 4, 5, 6}));
  EXPECT_EQ(parse_tags("0x10-0x12"), (std::vector<std::uint64_t>{16, 17, 18}));
  EXPECT_EQ(parse_tags("18446744073709551615"), (std::vector<std::uint64_t>{18446744073709551615ULL}));
  EXPECT_EQ(parse_tags("18446744073709551614-18446744073709551615").size(), 2U);
  EXPECT_EQ(parse_tags("0-1048575").size(), max_tags);
}

TEST(Tags, BadListsAreRefused) {
  for (const char* text : {"", "x", "1,", ",1", "1,,2", "5-3", "-5", "5-", "1-2-3", "0x", "18446744073709551616",
                           "0-1048576", "0-18446744073709551615", "1.5", " 1"}) {
    try {
      (void)parse_tags(text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const UsageError& error) {
      EXPECT_NE(std::string{error.what()}.find("--tag"), std::string::npos) << error.what();
    }
  }
}

TEST(Tags, Description) {
  EXPECT_EQ(describe_tags({7}), "7");
  EXPECT_EQ(describe_tags({1, 2}), "1,2");
  EXPECT_EQ(describe_tags({1, 2, 3, 7, 9, 10, 11, 12}), "1-3,7,9-12");
  EXPECT_EQ(describe_tags(parse_tags("100-199")), "100-199");
}

TEST(Sizes, UnitsAndErrors) {
  EXPECT_EQ(parse_size("64", "--size"), 64U);
  EXPECT_EQ(parse_size("4k", "--size"), 4096U);
  EXPECT_EQ(parse_size("64KiB", "--size"), 65536U);
  EXPECT_EQ(parse_size("1m", "--size"), std::size_t{1} << 20U);
  EXPECT_THROW((void)parse_size("", "--size"), UsageError);
  EXPECT_THROW((void)parse_size("k", "--size"), UsageError);
  EXPECT_THROW((void)parse_size("4x", "--size"), UsageError);
  EXPECT_THROW((void)parse_size("-1", "--size"), UsageError);
}

TEST(Format, EscapedText) {
  std::string out;
  append_escaped(out, bytes("plain text ~!"));
  EXPECT_EQ(out, "plain text ~!");
  out.clear();
  const std::string special{"a\tb\\c\r\n\x01\x7f\xff\0", 11}; // ends in a NUL byte
  append_escaped(out, bytes(special));
  EXPECT_EQ(out, "a\\tb\\\\c\\r\\n\\x01\\x7f\\xff\\x00");
}

TEST(Format, HexDumpLikeHexdumpC) {
  std::string out;
  append_hex_dump(out, bytes("hello\n"));
  EXPECT_EQ(out, "00000000  68 65 6c 6c 6f 0a                                 |hello.|\n");
  out.clear();
  append_hex_dump(out, bytes("0123456789abcdefXY"));
  EXPECT_EQ(out, "00000000  30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  |0123456789abcdef|\n"
                 "00000010  58 59                                             |XY|\n");
  out.clear();
  append_hex_dump(out, {});
  EXPECT_EQ(out, "");
}

TEST(Format, HumanCount) {
  EXPECT_EQ(human_count(0), "0.00");
  EXPECT_EQ(human_count(950), "950");
  EXPECT_EQ(human_count(1234), "1.23 k");
  EXPECT_EQ(human_count(45.6e6), "45.6 M");
  EXPECT_EQ(human_count(2.5e9), "2.50 G");
}

} // namespace
} // namespace netio3::cat
