#include <gtest/gtest.h>

#include <cstring>
#include <netinet/in.h>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/Resolve.hpp"
#include "netio3/EndPointAddress.hpp"
#include "netio3/Exceptions.hpp"

using netio3::EndPointAddress;
using netio3::InvalidEndpointAddress;

namespace {

std::string message_of_invalid(const std::string& text) {
  try {
    EndPointAddress address{text, 1234};
  } catch (const InvalidEndpointAddress& error) {
    return error.what();
  }
  return "";
}

} // namespace

TEST(EndPointAddress, AcceptsIpv4Literal) {
  const EndPointAddress address{"192.168.200.10", 1337};
  EXPECT_EQ(address.address(), "192.168.200.10");
  EXPECT_EQ(address.port(), 1337);
  EXPECT_FALSE(address.is_ipv6());
  EXPECT_TRUE(address.is_literal());
  EXPECT_EQ(address.to_string(), "192.168.200.10:1337");
}

TEST(EndPointAddress, AcceptsIpv6LiteralWithAndWithoutBrackets) {
  const EndPointAddress plain{"::1", 80};
  const EndPointAddress bracketed{"[::1]", 80};
  EXPECT_EQ(plain, bracketed);
  EXPECT_EQ(plain.address(), "::1");
  EXPECT_TRUE(plain.is_ipv6());
  EXPECT_EQ(plain.to_string(), "[::1]:80");
  EXPECT_EQ(EndPointAddress("fe80::1:2:3", 9).to_string(), "[fe80::1:2:3]:9");
}

TEST(EndPointAddress, AcceptsHostNamesAndPortZero) {
  const EndPointAddress address{"localhost", 0};
  EXPECT_EQ(address.port(), 0);
  EXPECT_FALSE(address.is_literal());
  EXPECT_NO_THROW(EndPointAddress("daq-node-01.example.org", 65535));
  EXPECT_NO_THROW(EndPointAddress("example.org.", 1));
}

TEST(EndPointAddress, DefaultIsUnspecifiedIpv4) {
  const EndPointAddress address;
  EXPECT_EQ(address.to_string(), "0.0.0.0:0");
}

TEST(EndPointAddress, RejectsInvalidInputNamingIt) {
  const std::vector<std::string> bad_inputs{"",
                                            "300.1.1.1",
                                            "1.2.3",
                                            "1.2.3.4.5",
                                            "::gg",
                                            "1:2:3",
                                            "not an ip",
                                            "host_.-bad-",
                                            "-leading.example",
                                            "a..b",
                                            "[::1",
                                            "ex ample.org",
                                            std::string(300, 'a')};
  for (const std::string& bad : bad_inputs) {
    const std::string message = message_of_invalid(bad);
    EXPECT_FALSE(message.empty()) << "accepted invalid address '" << bad << "'";
    EXPECT_NE(message.find(bad.substr(0, 50)), std::string::npos)
        << "message does not name '" << bad << "': " << message;
  }
}

TEST(EndPointAddress, ComparesAndOrders) {
  const EndPointAddress first{"10.0.0.1", 1};
  const EndPointAddress same{"10.0.0.1", 1};
  const EndPointAddress other_port{"10.0.0.1", 2};
  const EndPointAddress other_host{"10.0.0.2", 1};
  EXPECT_EQ(first, same);
  EXPECT_NE(first, other_port);
  EXPECT_NE(first, other_host);
  EXPECT_LT(first, other_port);
  EXPECT_LT(first, other_host);
}

TEST(EndPointAddress, HashesForUnorderedContainers) {
  std::unordered_set<EndPointAddress> set;
  set.insert(EndPointAddress{"127.0.0.1", 1});
  set.insert(EndPointAddress{"127.0.0.1", 1});
  set.insert(EndPointAddress{"127.0.0.1", 2});
  set.insert(EndPointAddress{"::1", 1});
  EXPECT_EQ(set.size(), 3U);
  EXPECT_EQ(std::hash<EndPointAddress>{}(EndPointAddress{"::1", 1}),
            std::hash<EndPointAddress>{}(EndPointAddress{"[::1]", 1}));
}

TEST(EndPointAddress, PrintsWithStreamOperator) {
  std::ostringstream out;
  out << EndPointAddress{"127.0.0.1", 4242} << ' ' << EndPointAddress{"::", 7};
  EXPECT_EQ(out.str(), "127.0.0.1:4242 [::]:7");
}

TEST(EndPointAddress, ResolvesLiteralsAndLocalhost) {
  const auto ipv4 = netio3::detail::resolve(EndPointAddress{"127.0.0.1", 5000}, false);
  EXPECT_EQ(ipv4.family, AF_INET);
  EXPECT_EQ(netio3::detail::to_endpoint_address(ipv4.get()), (EndPointAddress{"127.0.0.1", 5000}));
  const auto ipv6 = netio3::detail::resolve(EndPointAddress{"::1", 5001}, false);
  EXPECT_EQ(ipv6.family, AF_INET6);
  EXPECT_EQ(netio3::detail::to_endpoint_address(ipv6.get()), (EndPointAddress{"::1", 5001}));
  // A name: its first address (here 127.0.0.1, or ::1 where /etc/hosts lists it first for localhost).
  const auto local = netio3::detail::resolve(EndPointAddress{"localhost", 5002}, false);
  const EndPointAddress first = netio3::detail::to_endpoint_address(local.get());
  EXPECT_TRUE(first == (EndPointAddress{"127.0.0.1", 5002}) || first == (EndPointAddress{"::1", 5002})) << first;
}

TEST(EndPointAddress, UnresolvableHostThrowsNamingIt) {
  // ".invalid" is reserved (RFC 2606) and never resolves.
  try {
    (void)netio3::detail::resolve(EndPointAddress{"no-such-host.invalid", 1}, false);
    FAIL() << "resolved a .invalid host";
  } catch (const InvalidEndpointAddress& error) {
    EXPECT_NE(std::string(error.what()).find("no-such-host.invalid"), std::string::npos) << error.what();
  }
}

TEST(EndPointAddress, Ipv6LiteralsAreStoredCanonically) {
  // One address written several ways is one endpoint (equal, same hash, same text).
  const EndPointAddress canonical{"::1", 7};
  for (const std::string written : {"[::1]", "0:0::1", "0000:0000:0000:0000:0000:0000:0000:0001", "[0::0:1]"}) {
    const EndPointAddress address{written, 7};
    EXPECT_EQ(address, canonical) << written;
    EXPECT_EQ(address.address(), "::1") << written;
    EXPECT_EQ(std::hash<EndPointAddress>{}(address), std::hash<EndPointAddress>{}(canonical)) << written;
  }
  EXPECT_EQ(EndPointAddress("FD00:0:0:0:0:0:0:A", 1).address(), "fd00::a");
  EXPECT_EQ(EndPointAddress("2001:db8:0:0:1:0:0:1", 1).address(), "2001:db8::1:0:0:1");
  // IPv4 literals and names stay as given.
  EXPECT_EQ(EndPointAddress("LocalHost", 1).address(), "LocalHost");
}

TEST(EndPointAddress, ZonesAreKeptAndPrintedInsideTheBrackets) {
  const EndPointAddress scoped{"FE80::0:1%veth0", 80};
  EXPECT_EQ(scoped.address(), "fe80::1%veth0");
  EXPECT_TRUE(scoped.is_ipv6());
  EXPECT_TRUE(scoped.is_literal());
  EXPECT_EQ(scoped.to_string(), "[fe80::1%veth0]:80");
  EXPECT_EQ(EndPointAddress("[fe80::1%2]", 80).address(), "fe80::1%2");
  EXPECT_NE(scoped, EndPointAddress("fe80::1%veth1", 80));
  EXPECT_NE(scoped, EndPointAddress("fe80::1", 80));
  for (const std::string bad :
       {"fe80::1%", "fe80::1%a/b", "fe80::1%has space", "fe80::1%sixteen-chars-xx", "fe80::1%x%y", "fe80::g%eth0"}) {
    EXPECT_FALSE(message_of_invalid(bad).empty()) << "accepted '" << bad << "'";
  }
}

TEST(EndPointAddress, ParsesHostAndPort) {
  EXPECT_EQ(EndPointAddress::parse("127.0.0.1:5555"), (EndPointAddress{"127.0.0.1", 5555}));
  EXPECT_EQ(EndPointAddress::parse("[::1]:5555"), (EndPointAddress{"::1", 5555}));
  EXPECT_EQ(EndPointAddress::parse("[fe80::1%eth0]:80"), (EndPointAddress{"fe80::1%eth0", 80}));
  EXPECT_EQ(EndPointAddress::parse("localhost:0"), (EndPointAddress{"localhost", 0}));
  for (const std::string bad :
       {"::1:5555", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:x", "[::1]", "[::1]:-1", ":80"}) {
    try {
      (void)EndPointAddress::parse(bad);
      ADD_FAILURE() << "parsed '" << bad << "'";
    } catch (const InvalidEndpointAddress& error) {
      EXPECT_NE(std::string(error.what()).find(bad), std::string::npos) << error.what();
    }
  }
}

TEST(EndPointAddress, ResolveAllKeepsZonesAndRefusesLinkLocalWithoutOne) {
  const auto loopback = netio3::detail::resolve_all(EndPointAddress{"::1", 9}, false);
  ASSERT_EQ(loopback.size(), 1U);
  EXPECT_EQ(loopback.front().family, AF_INET6);
  // "lo" exists everywhere: its index becomes the scope id, and the reverse mapping gives the name.
  const auto scoped = netio3::detail::resolve_all(EndPointAddress{"fe80::1%lo", 9}, false);
  ASSERT_EQ(scoped.size(), 1U);
  const auto* ipv6 = reinterpret_cast<const sockaddr_in6*>(&scoped.front().storage);
  EXPECT_NE(ipv6->sin6_scope_id, 0U);
  EXPECT_EQ(netio3::detail::to_endpoint_address(scoped.front().get()), (EndPointAddress{"fe80::1%lo", 9}));
  try {
    (void)netio3::detail::resolve_all(EndPointAddress{"fe80::1", 9}, false);
    FAIL() << "a link-local address without zone resolved";
  } catch (const InvalidEndpointAddress& error) {
    EXPECT_NE(std::string(error.what()).find("zone"), std::string::npos) << error.what();
  }
  EXPECT_THROW((void)netio3::detail::resolve_all(EndPointAddress{"fe80::1%no-such-if9", 9}, false),
               InvalidEndpointAddress);
  // A name gives all its addresses, without duplicates (localhost: at least 127.0.0.1).
  const auto local = netio3::detail::resolve_all(EndPointAddress{"localhost", 9}, false);
  ASSERT_FALSE(local.empty());
  for (std::size_t i = 0; i < local.size(); ++i) {
    for (std::size_t j = i + 1; j < local.size(); ++j) {
      EXPECT_FALSE(local[i].length == local[j].length &&
                   std::memcmp(&local[i].storage, &local[j].storage, local[i].length) == 0);
    }
  }
}
