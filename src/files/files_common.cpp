#include "files_common.hpp"

#include <fnmatch.h>

#include <fmt/format.h>

#include "mevbackup/files.hpp"

namespace mevbackup {

const std::vector<std::string>& default_secret_excludes() {
  // Names that, by convention, hold credentials or private keys.
  static const std::vector<std::string> list = {
      ".env",      ".env.*",        "*.pem",       "*.key",         "id_rsa*",     "id_dsa*",
      "id_ecdsa*", "id_ed25519*",   "*.p12",       "*.pfx",         "*.jks",       "*.keystore",
      "*.kdbx",    ".pgpass",       ".netrc",      ".git-credentials", ".htpasswd", "secrets/",
      ".secrets/", ".ssh/",         ".gnupg/",     ".aws/",         "credentials.json",
  };
  return list;
}

namespace files {

std::vector<std::string> split_name(const std::string& name) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= name.size()) {
    size_t j = name.find('/', i);
    if (j == std::string::npos) j = name.size();
    std::string part = name.substr(i, j - i);
    if (!part.empty() && part != ".") out.push_back(std::move(part));
    i = j + 1;
  }
  return out;
}

std::string join_name(const std::vector<std::string>& parts, size_t n) {
  std::string out;
  for (size_t i = 0; i < parts.size() && i < n; ++i) {
    if (i) out += '/';
    out += parts[i];
  }
  return out;
}

bool pattern_matches(const std::string& pattern, const std::string& rel, bool is_dir) {
  std::string p = pattern;
  bool dir_only = false;
  while (!p.empty() && p.back() == '/') {
    p.pop_back();
    dir_only = true;
  }
  if (p.empty() || (dir_only && !is_dir)) return false;
  if (p.find('/') == std::string::npos) {
    auto slash = rel.rfind('/');
    std::string last = slash == std::string::npos ? rel : rel.substr(slash + 1);
    return fnmatch(p.c_str(), last.c_str(), 0) == 0;
  }
  while (p.rfind("./", 0) == 0) p.erase(0, 2);
  return fnmatch(p.c_str(), rel.c_str(), 0) == 0;
}

std::string symlink_escape(const std::string& name, const std::string& target) {
  if (target.empty()) return "symlink with an empty target";
  if (target[0] == '/') return fmt::format("symlink to the absolute path \"{}\" leads outside the target", target);
  size_t depth = split_name(name).size() - 1;
  size_t ups = 0;
  bool descended = false;
  size_t i = 0;
  while (i <= target.size()) {
    size_t j = target.find('/', i);
    if (j == std::string::npos) j = target.size();
    std::string part = target.substr(i, j - i);
    i = j + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (descended) return fmt::format("symlink target \"{}\" climbs with \"..\" after a name", target);
      if (++ups > depth) return fmt::format("symlink to \"{}\" leads outside the target", target);
    } else {
      descended = true;
    }
  }
  return "";
}

std::string mode_string(unsigned mode) { return fmt::format("{:04o}", mode & 07777); }

}  // namespace files
}  // namespace mevbackup
