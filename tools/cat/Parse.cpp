#include "Parse.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>

#include "netio3/Exceptions.hpp"

namespace netio3::cat {

namespace {

std::string quoted(std::string_view text) {
  return "'" + std::string{text} + "'";
}

bool all_digits(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char character) {
    return std::isdigit(static_cast<unsigned char>(character)) != 0;
  });
}

std::uint16_t parse_port(std::string_view text, std::string_view what, std::string_view whole) {
  unsigned value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (!all_digits(text) || error != std::errc{} || end != text.data() + text.size() || value > 65535) {
    throw UsageError(std::string{what} + ": bad port " + quoted(text) + " in " + quoted(whole) +
                     " (a number from 0 to 65535)");
  }
  return static_cast<std::uint16_t>(value);
}

EndPointAddress make_address(const std::string& host, std::uint16_t port, std::string_view what,
                             std::string_view whole) {
  try {
    return EndPointAddress{host, port};
  } catch (const InvalidEndpointAddress& error) {
    throw UsageError(std::string{what} + ": " + quoted(whole) + " is not a valid address: " + error.what());
  }
}

} // namespace

HostPort split_host_port(std::string_view text, std::string_view what) {
  if (text.empty()) {
    throw UsageError(std::string{what} + ": empty address");
  }
  if (text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos) {
      throw UsageError(std::string{what} + ": " + quoted(text) + " has '[' without ']' (write [IPV6]:PORT)");
    }
    HostPort result{std::string{text.substr(1, close - 1)}, std::nullopt};
    if (result.host.empty()) {
      throw UsageError(std::string{what} + ": empty IPv6 address in " + quoted(text));
    }
    const std::string_view rest = text.substr(close + 1);
    if (rest.empty()) {
      return result;
    }
    if (rest.front() != ':') {
      throw UsageError(std::string{what} + ": unexpected " + quoted(rest) + " after ']' in " + quoted(text) +
                       " (write [IPV6]:PORT)");
    }
    result.port = parse_port(rest.substr(1), what, text);
    return result;
  }
  const std::size_t first = text.find(':');
  if (first == std::string_view::npos) {
    return HostPort{std::string{text}, std::nullopt};
  }
  if (text.find(':', first + 1) != std::string_view::npos) {
    return HostPort{std::string{text}, std::nullopt}; // an IPv6 literal; a port needs brackets
  }
  return HostPort{std::string{text.substr(0, first)}, parse_port(text.substr(first + 1), what, text)};
}

EndPointAddress parse_listen_address(std::string_view text) {
  constexpr std::string_view what = "--listen";
  if (all_digits(text)) {
    return EndPointAddress{"0.0.0.0", parse_port(text, what, text)};
  }
  const HostPort parts = split_host_port(text, what);
  const std::string host = parts.host.empty() ? std::string{"0.0.0.0"} : parts.host;
  return make_address(host, parts.port.value_or(0), what, text);
}

EndPointAddress parse_publisher_address(std::string_view text) {
  constexpr std::string_view what = "PUBLISHER";
  const HostPort parts = split_host_port(text, what);
  if (parts.host.empty()) {
    throw UsageError(std::string{what} + ": no host in " + quoted(text) + " (write HOST:PORT, e.g. 127.0.0.1:5555)");
  }
  if (!parts.port) {
    throw UsageError(std::string{what} + ": no port in " + quoted(text) +
                     " (write HOST:PORT or [IPV6]:PORT, e.g. 127.0.0.1:5555 or [::1]:5555)");
  }
  if (*parts.port == 0) {
    throw UsageError(std::string{what} + ": port 0 in " + quoted(text) +
                     " (use the port the publisher printed: 'listening on HOST:PORT')");
  }
  return make_address(parts.host, *parts.port, what, text);
}

std::uint64_t parse_tag(std::string_view text) {
  std::string_view digits = text;
  int base = 10;
  if (digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
    digits.remove_prefix(2);
    base = 16;
  }
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value, base);
  if (digits.empty() || error != std::errc{} || end != digits.data() + digits.size()) {
    const std::string why = error == std::errc::result_out_of_range ? "larger than 2^64-1" : "not a number";
    throw UsageError("--tag: " + quoted(text) + " is " + why +
                     " (a tag is 0 to 18446744073709551615, decimal or 0x hex)");
  }
  return value;
}

std::vector<std::uint64_t> parse_tags(std::string_view text) {
  std::vector<std::uint64_t> tags;
  std::string_view rest = text;
  for (;;) {
    const std::size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    if (item.empty()) {
      throw UsageError("--tag: empty item in " + quoted(text) + " (write T, T,T or A-B, e.g. 7 or 1,5 or 100-199)");
    }
    const std::size_t dash = item.find('-');
    if (dash == 0 || dash + 1 == item.size()) {
      throw UsageError("--tag: the range " + quoted(item) + " lacks its " + (dash == 0 ? "start" : "end") +
                       " (write A-B; tags are not negative)");
    }
    const std::uint64_t first = parse_tag(item.substr(0, dash));
    const std::uint64_t last = dash == std::string_view::npos ? first : parse_tag(item.substr(dash + 1));
    if (last < first) {
      throw UsageError("--tag: the range " + quoted(item) + " ends before it starts");
    }
    if (last - first >= max_tags || tags.size() + (last - first) >= max_tags) {
      throw UsageError("--tag: " + quoted(text) + " names more than " + std::to_string(max_tags) + " tags");
    }
    for (std::uint64_t tag = first;; ++tag) {
      tags.push_back(tag);
      if (tag == last) {
        break;
      }
    }
    if (comma == std::string_view::npos) {
      break;
    }
    rest.remove_prefix(comma + 1);
  }
  std::sort(tags.begin(), tags.end());
  tags.erase(std::unique(tags.begin(), tags.end()), tags.end());
  return tags;
}

std::string describe_tags(const std::vector<std::uint64_t>& sorted_tags) {
  std::string text;
  for (std::size_t index = 0; index < sorted_tags.size();) {
    std::size_t end = index;
    while (end + 1 < sorted_tags.size() && sorted_tags[end + 1] == sorted_tags[end] + 1) {
      ++end;
    }
    if (!text.empty()) {
      text += ',';
    }
    text += std::to_string(sorted_tags[index]);
    if (end > index) {
      text += (end == index + 1 ? "," : "-") + std::to_string(sorted_tags[end]);
    }
    index = end + 1;
  }
  return text;
}

std::size_t parse_size(std::string_view text, std::string_view what) {
  std::size_t value = 0;
  const char* const begin = text.data();
  const char* const end = text.data() + text.size();
  const auto [rest, error] = std::from_chars(begin, end, value);
  if (error != std::errc{} || rest == begin) {
    throw UsageError(std::string{what} + ": not a size: " + quoted(text) + " (examples: 64, 4k, 64KiB, 1m)");
  }
  std::string unit(rest, end);
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](char character) { return static_cast<char>(std::tolower(static_cast<unsigned char>(character))); });
  unsigned shift = 0;
  if (unit.empty() || unit == "b") {
    shift = 0;
  } else if (unit == "k" || unit == "kb" || unit == "ki" || unit == "kib") {
    shift = 10;
  } else if (unit == "m" || unit == "mb" || unit == "mi" || unit == "mib") {
    shift = 20;
  } else if (unit == "g" || unit == "gb" || unit == "gi" || unit == "gib") {
    shift = 30;
  } else {
    throw UsageError(std::string{what} + ": unknown unit in " + quoted(text) + " (use k, m or g: binary multiples)");
  }
  if (value > (std::numeric_limits<std::size_t>::max() >> shift)) {
    throw UsageError(std::string{what} + ": " + quoted(text) + " is too large");
  }
  return value << shift;
}

} // namespace netio3::cat
