#pragma once

// netio3-cat: how received messages and rates are printed. Pure functions that append to a string
// the caller reuses (no allocation per message once it has grown).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace netio3::cat {

/// Appends `data` as one line of text without its newline: printable ASCII as it is, a backslash
/// as `\\`, tab, carriage return and newline as `\t`, `\r`, `\n`, every other byte as `\xHH`
/// (so the line is unambiguous and the terminal safe).
void append_escaped(std::string& out, std::span<const std::uint8_t> data);

/// Appends `data` as `hexdump -C` does: lines of 16 bytes, `OFFSET  HEX HEX ...  |ASCII|`, each
/// ending in a newline; nothing for an empty message.
void append_hex_dump(std::string& out, std::span<const std::uint8_t> data);

/// A count with three significant digits and a unit prefix, e.g. "950", "1.23 k", "45.6 M".
[[nodiscard]] std::string human_count(double value);

} // namespace netio3::cat
