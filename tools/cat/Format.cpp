#include "Format.hpp"

#include <fmt/format.h>

namespace netio3::cat {

namespace {

constexpr char hex_digits[] = "0123456789abcdef";

bool printable(std::uint8_t byte) {
  return byte >= 0x20 && byte < 0x7f;
}

void append_hex_byte(std::string& out, std::uint8_t byte) {
  out += hex_digits[byte >> 4U];
  out += hex_digits[byte & 0xfU];
}

} // namespace

void append_escaped(std::string& out, std::span<const std::uint8_t> data) {
  for (const std::uint8_t byte : data) {
    switch (byte) {
    case '\\': out += "\\\\"; break;
    case '\t': out += "\\t"; break;
    case '\r': out += "\\r"; break;
    case '\n': out += "\\n"; break;
    default:
      if (printable(byte)) {
        out += static_cast<char>(byte);
      } else {
        out += "\\x";
        append_hex_byte(out, byte);
      }
    }
  }
}

void append_hex_dump(std::string& out, std::span<const std::uint8_t> data) {
  constexpr std::size_t per_line = 16;
  for (std::size_t offset = 0; offset < data.size(); offset += per_line) {
    const std::span<const std::uint8_t> line = data.subspan(offset, std::min(per_line, data.size() - offset));
    for (int shift = 28; shift >= 0; shift -= 4) {
      out += hex_digits[(offset >> static_cast<unsigned>(shift)) & 0xfU];
    }
    out += ' ';
    for (std::size_t index = 0; index < per_line; ++index) {
      out += index == 8 ? "  " : " ";
      if (index < line.size()) {
        append_hex_byte(out, line[index]);
      } else {
        out += "  ";
      }
    }
    out += "  |";
    for (const std::uint8_t byte : line) {
      out += printable(byte) ? static_cast<char>(byte) : '.';
    }
    out += "|\n";
  }
}

std::string human_count(double value) {
  const char* unit = "";
  if (value >= 1e9) {
    value /= 1e9;
    unit = " G";
  } else if (value >= 1e6) {
    value /= 1e6;
    unit = " M";
  } else if (value >= 1e3) {
    value /= 1e3;
    unit = " k";
  }
  // Three significant digits without an exponent: 1.23, 12.3, 123.
  const int decimals = value < 10.0 ? 2 : value < 100.0 ? 1 : 0;
  return fmt::format("{:.{}f}{}", value, decimals, unit);
}

} // namespace netio3::cat
