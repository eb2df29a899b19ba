// The files kind (kinds.hpp): tar archives in config/, each with its member list beside
// it ("<artifact>.members.json.gz", files_common.hpp).
#include <fmt/format.h>

#include "../catalog/builtin_kinds.hpp"
#include "files_common.hpp"

namespace mevbackup {

BackupKind files_kind() {
  BackupKind k;
  k.name = "files";
  k.directory = "config";
  k.extra_parts = [](const Manifest& m) {
    std::vector<Manifest::Part> out;
    if (!m.source.is_object()) return out;
    auto it = m.source.find("member_list");
    if (it == m.source.end() || !it->is_object()) return out;
    Manifest::Part part;
    part.path = m.path + Manifest::kMemberListSuffix;
    if (auto f = it->find("size"); f != it->end() && f->is_number_unsigned()) part.size = f->get<uint64_t>();
    if (auto f = it->find("sha256"); f != it->end() && f->is_string()) part.sha256 = f->get<std::string>();
    out.push_back(std::move(part));
    return out;
  };
  k.owns = [](const std::string& key, const std::set<std::string>& keys) {
    const std::string suffix = Manifest::kMemberListSuffix;
    return key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0 &&
           keys.count(key.substr(0, key.size() - suffix.size()) + Manifest::kManifestSuffix);
  };
  k.verify = [](Repository& repo, const Manifest& m, const RunContext& ctx, const VerifyCheckFn& check) {
    if (!m.source.is_object() || !m.source.contains("member_list")) return;  // older backups: inline
    auto members = files::load_member_list(repo.storage(), m, ctx);  // size, SHA-256 and count
    check("member list", true, fmt::format("{} members, sha256 {}", members ? members->size() : 0,
                                           m.source["member_list"].value("sha256", "")));
  };
  return k;
}

}  // namespace mevbackup
