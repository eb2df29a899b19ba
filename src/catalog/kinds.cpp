#include "mevbackup/kinds.hpp"

#include <map>
#include <mutex>

#include <fmt/format.h>

#include "builtin_kinds.hpp"
#include "mevbackup/error.hpp"

namespace mevbackup {

namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, std::unique_ptr<BackupKind>> kinds;  // registered; stable addresses
  std::map<std::string, std::unique_ptr<BackupKind>> users;  // the defaults, made on demand
};

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;  // never destroyed: kinds may be asked for during exit
    for (BackupKind k : {postgres_kind(), basebackup_kind(), redis_kind(), files_kind()}) {
      std::string name = k.name;  // before k is moved from
      reg->kinds[name] = std::make_unique<BackupKind>(std::move(k));
    }
    return reg;
  }();
  return *r;
}

bool valid_kind_name(const std::string& n) {
  if (n.empty() || n.size() > 64 || n[0] < 'a' || n[0] > 'z') return false;
  return n.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") == std::string::npos;
}

}  // namespace

void register_kind(BackupKind kind) {
  if (!valid_kind_name(kind.name))
    throw Error(Code::invalid_argument, fmt::format("invalid backup kind name \"{}\"", kind.name));
  if (kind.directory.empty()) kind.directory = kind.name;
  Registry& r = registry();
  std::lock_guard<std::mutex> g(r.mu);
  std::string name = kind.name;  // before kind is moved from
  r.users.erase(name);
  r.kinds[name] = std::make_unique<BackupKind>(std::move(kind));
}

const BackupKind& backup_kind(const std::string& name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> g(r.mu);
  if (auto it = r.kinds.find(name); it != r.kinds.end()) return *it->second;
  if (auto it = r.users.find(name); it != r.users.end()) return *it->second;
  if (!valid_kind_name(name))
    throw Error(Code::invalid_argument,
                fmt::format("invalid backup kind \"{}\": a kind is [a-z][a-z0-9_-]*, at most 64 characters", name));
  for (auto& [other, k] : r.kinds) {
    bool taken = k->directory == name;
    for (auto& p : k->private_prefixes) taken = taken || p == name + "/";
    if (taken)
      throw Error(Code::invalid_argument,
                  fmt::format("backup kind \"{}\" would share the directory {}/ of kind \"{}\"", name, name, other));
  }
  if (name == "locks")
    throw Error(Code::invalid_argument, "backup kind \"locks\" would share the repository's lock directory");
  if (name == "sets")
    throw Error(Code::invalid_argument, "backup kind \"sets\" would share the directory of the plans' backup sets");
  // A user kind: the defaults, kept so that the reference stays valid.
  auto k = std::make_unique<BackupKind>();
  k->name = name;
  k->directory = name;
  const BackupKind& out = *k;
  r.users[name] = std::move(k);
  return out;
}

const BackupKind* find_kind(const std::string& name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> g(r.mu);
  auto it = r.kinds.find(name);
  return it == r.kinds.end() ? nullptr : it->second.get();
}

std::vector<const BackupKind*> registered_kinds() {
  Registry& r = registry();
  std::lock_guard<std::mutex> g(r.mu);
  std::vector<const BackupKind*> out;
  for (auto& [name, k] : r.kinds) out.push_back(k.get());
  return out;
}

}  // namespace mevbackup
