#pragma once
// A small line editor for `troupe admin` (no readline dependency): editing keys (arrows, Home/End,
// Ctrl-A/E/B/F/K/U/W/L, Backspace, Delete), history (Up/Down, kept in a file) and Tab completion
// through a callback. On a terminal it switches it to raw mode for the length of a read_line();
// when stdin is not a terminal it reads plain lines.
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace troupe::app {

class line_editor {
 public:
  /// Candidates for the word that ends at the cursor, given the line up to the cursor.
  using completer = std::function<std::vector<std::string>(const std::string& before_cursor)>;

  /// `history_file` empty: history is not kept across runs.
  explicit line_editor(std::string history_file = {}, size_t max_history = 500);

  /// A line, or nullopt at end of input (Ctrl-D on an empty line). Ctrl-C drops the line and
  /// returns an empty one.
  std::optional<std::string> read_line(const std::string& prompt);
  void add_history(const std::string& line);
  void set_completer(completer c) { complete_ = std::move(c); }
  bool interactive() const { return tty_; }
  const std::vector<std::string>& history() const { return history_; }

  /// The longest common prefix of `words` (Tab completion).
  static std::string common_prefix(const std::vector<std::string>& words);

 private:
  void refresh(const std::string& prompt, const std::string& buf, size_t pos);
  std::optional<std::string> read_plain(const std::string& prompt);

  std::string history_file_;
  size_t max_history_;
  std::vector<std::string> history_;
  completer complete_;
  bool tty_ = false;
};

/// Puts the terminal in raw mode while alive (no echo, no line buffering, no signals from keys).
class raw_terminal {
 public:
  raw_terminal();
  ~raw_terminal();
  raw_terminal(const raw_terminal&) = delete;
  raw_terminal& operator=(const raw_terminal&) = delete;
  bool ok() const { return ok_; }

 private:
  bool ok_ = false;
  char saved_[64]{};  // struct termios, kept opaque here
};

/// A key within `timeout_ms` on stdin (-1: none).
int read_key(int timeout_ms);

}  // namespace troupe::app
