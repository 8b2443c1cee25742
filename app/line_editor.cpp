#include "app/line_editor.hpp"

#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>

namespace troupe::app {

static_assert(sizeof(termios) <= 64, "raw_terminal::saved_ is too small for struct termios");

raw_terminal::raw_terminal() {
  termios t{};
  if (!::isatty(STDIN_FILENO) || ::tcgetattr(STDIN_FILENO, &t) != 0) return;
  std::memcpy(saved_, &t, sizeof t);
  termios raw = t;
  raw.c_iflag &= ~tcflag_t(BRKINT | ICRNL | INPCK | ISTRIP | IXON);
  raw.c_lflag &= ~tcflag_t(ECHO | ICANON | IEXTEN | ISIG);
  raw.c_cflag |= CS8;
  raw.c_cc[VMIN] = 1;
  raw.c_cc[VTIME] = 0;
  ok_ = ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) == 0;
}

raw_terminal::~raw_terminal() {
  if (!ok_) return;
  termios t{};
  std::memcpy(&t, saved_, sizeof t);
  ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &t);
}

int read_key(int timeout_ms) {
  pollfd p{STDIN_FILENO, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return -1;
  unsigned char c = 0;
  if (::read(STDIN_FILENO, &c, 1) != 1) return -1;
  return c;
}

namespace {
int next_byte() {
  unsigned char c = 0;
  return ::read(STDIN_FILENO, &c, 1) == 1 ? c : -1;
}
void out(const std::string& s) {
  (void)!::write(STDOUT_FILENO, s.data(), s.size());
}
}  // namespace

line_editor::line_editor(std::string history_file, size_t max_history)
    : history_file_(std::move(history_file)), max_history_(max_history), tty_(::isatty(STDIN_FILENO) != 0) {
  if (history_file_.empty()) return;
  std::ifstream in(history_file_);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) history_.push_back(line);
  }
  if (history_.size() > max_history_) history_.erase(history_.begin(), history_.end() - long(max_history_));
}

void line_editor::add_history(const std::string& line) {
  if (line.find_first_not_of(' ') == std::string::npos) return;
  if (!history_.empty() && history_.back() == line) return;
  history_.push_back(line);
  if (history_.size() > max_history_) history_.erase(history_.begin());
  if (history_file_.empty()) return;
  std::ofstream o(history_file_, std::ios::trunc);
  for (const auto& h : history_) o << h << '\n';
}

std::string line_editor::common_prefix(const std::vector<std::string>& words) {
  if (words.empty()) return {};
  std::string p = words[0];
  for (const auto& w : words) {
    size_t i = 0;
    while (i < p.size() && i < w.size() && p[i] == w[i]) ++i;
    p.resize(i);
  }
  return p;
}

void line_editor::refresh(const std::string& prompt, const std::string& buf, size_t pos) {
  std::string s = "\r" + prompt + buf + "\x1b[K\r";
  const size_t col = prompt.size() + pos;
  if (col > 0) s += "\x1b[" + std::to_string(col) + "C";
  out(s);
}

std::optional<std::string> line_editor::read_plain(const std::string& prompt) {
  (void)prompt;
  std::string line;
  if (!std::getline(std::cin, line)) return std::nullopt;
  return line;
}

std::optional<std::string> line_editor::read_line(const std::string& prompt) {
  if (!tty_) return read_plain(prompt);
  raw_terminal raw;
  if (!raw.ok()) return read_plain(prompt);
  std::string buf;
  size_t pos = 0;
  size_t hist = history_.size();  // history_.size(): the line being edited
  std::string edited;             // the line being edited while browsing history
  refresh(prompt, buf, pos);
  for (;;) {
    const int c = next_byte();
    if (c < 0) return std::nullopt;
    if (c == '\r' || c == '\n') {
      out("\r\n");
      return buf;
    }
    if (c == 3) {  // Ctrl-C: drop the line
      out("^C\r\n");
      return std::string();
    }
    if (c == 4) {  // Ctrl-D: end of input on an empty line, else delete
      if (buf.empty()) {
        out("\r\n");
        return std::nullopt;
      }
      if (pos < buf.size()) buf.erase(pos, 1);
    } else if (c == 127 || c == 8) {
      if (pos > 0) buf.erase(--pos, 1);
    } else if (c == 1) {
      pos = 0;
    } else if (c == 5) {
      pos = buf.size();
    } else if (c == 2) {
      if (pos > 0) --pos;
    } else if (c == 6) {
      if (pos < buf.size()) ++pos;
    } else if (c == 11) {
      buf.erase(pos);
    } else if (c == 21) {
      buf.erase(0, pos);
      pos = 0;
    } else if (c == 23) {  // Ctrl-W: the word before the cursor
      size_t start = pos;
      while (start > 0 && buf[start - 1] == ' ') --start;
      while (start > 0 && buf[start - 1] != ' ') --start;
      buf.erase(start, pos - start);
      pos = start;
    } else if (c == 12) {
      out("\x1b[H\x1b[2J");
    } else if (c == '\t') {
      if (!complete_) continue;
      const std::string before = buf.substr(0, pos);
      const size_t word_start = before.find_last_of(' ') == std::string::npos ? 0 : before.find_last_of(' ') + 1;
      const std::string word = before.substr(word_start);
      auto cands = complete_(before);
      std::erase_if(cands, [&](const std::string& s) { return s.rfind(word, 0) != 0; });
      if (cands.empty()) {
        out("\a");
      } else if (cands.size() == 1) {
        const std::string add = cands[0].substr(word.size()) + " ";
        buf.insert(pos, add);
        pos += add.size();
      } else {
        const std::string prefix = common_prefix(cands);
        if (prefix.size() > word.size()) {
          const std::string add = prefix.substr(word.size());
          buf.insert(pos, add);
          pos += add.size();
        } else {
          std::string list = "\r\n";
          for (const auto& s : cands) list += s + "  ";
          out(list + "\r\n");
        }
      }
    } else if (c == 27) {  // escape sequences: arrows, Home/End, Delete
      const int a = next_byte();
      const int b = next_byte();
      if (a != '[' && a != 'O') continue;
      if (b == 'A' || b == 'B') {
        if (hist == history_.size()) edited = buf;
        if (b == 'A' && hist > 0) --hist;
        if (b == 'B' && hist < history_.size()) ++hist;
        buf = hist == history_.size() ? edited : history_[hist];
        pos = buf.size();
      } else if (b == 'C') {
        if (pos < buf.size()) ++pos;
      } else if (b == 'D') {
        if (pos > 0) --pos;
      } else if (b == 'H') {
        pos = 0;
      } else if (b == 'F') {
        pos = buf.size();
      } else if (b >= '0' && b <= '9') {
        const int t = next_byte();  // '~'
        if (b == '3' && t == '~' && pos < buf.size()) buf.erase(pos, 1);
        if ((b == '1' || b == '7') && t == '~') pos = 0;
        if ((b == '4' || b == '8') && t == '~') pos = buf.size();
      }
    } else if (c >= 32) {
      buf.insert(pos, 1, char(c));
      ++pos;
    }
    refresh(prompt, buf, pos);
  }
}

}  // namespace troupe::app
