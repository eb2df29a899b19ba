// Backup sets (backup_set.hpp): the set manifest, its checks against the members, and
// its removal members first.
#include "mevbackup/backup_set.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "mevbackup/error.hpp"
#include "mevbackup/signing.hpp"

namespace mevbackup {

namespace {

std::string str_field(const nlohmann::json& j, const char* name, const std::string& where) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_string())
    throw Error(Code::corrupt, fmt::format("backup set {}: field \"{}\" is missing or not a string", where, name));
  return it->get<std::string>();
}

// Why a member is not there as the set names it; empty when it is.
std::string member_problem(Repository& repo, const SetMember& mem) {
  Manifest listed;
  listed.id = mem.id;
  listed.path = mem.path;
  try {
    Manifest m = repo.load(listed);
    if (m.sha256 != mem.sha256)
      return fmt::format("member {} ({}) was replaced: its manifest names another artifact (sha256 {})", mem.source,
                         mem.id, m.sha256);
    auto st = repo.storage().stat(m.path);
    if (!st) return fmt::format("member {} ({}): its artifact {} is gone", mem.source, mem.id, m.path);
    if (st->size != m.size)
      return fmt::format("member {} ({}): its artifact {} is {} bytes, the manifest says {}", mem.source, mem.id,
                         m.path, st->size, m.size);
    return "";
  } catch (const Error& e) {
    if (e.code() == Code::not_found)
      return fmt::format("member {} ({}) is gone: its manifest {} was removed", mem.source, mem.id, listed.key());
    return fmt::format("member {} ({}): {}", mem.source, mem.id, e.what());
  }
}

}  // namespace

nlohmann::json BackupSet::to_json() const {
  nlohmann::json mem = nlohmann::json::array();
  for (auto& m : members)
    mem.push_back({{"source", m.source},
                   {"kind", m.kind},
                   {"id", m.id},
                   {"path", m.path},
                   {"sha256", m.sha256},
                   {"source_name", m.source_name}});
  return {{"type", "backup-set"}, {"format_version", 1},   {"id", id},         {"plan", plan},
          {"started_at", started_at}, {"finished_at", finished_at}, {"members", mem}, {"objectives", objectives}};
}

BackupSet BackupSet::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object() || j.value("type", "") != "backup-set")
    throw Error(Code::corrupt, fmt::format("{} is not a backup set manifest", where));
  BackupSet s;
  s.id = str_field(j, "id", where);
  if (!valid_backup_id(s.id)) throw Error(Code::corrupt, fmt::format("backup set {}: invalid id \"{}\"", where, s.id));
  s.plan = str_field(j, "plan", where);
  s.started_at = str_field(j, "started_at", where);
  s.finished_at = str_field(j, "finished_at", where);
  auto it = j.find("members");
  if (it == j.end() || !it->is_array() || it->empty())
    throw Error(Code::corrupt, fmt::format("backup set {}: \"members\" is missing or empty", where));
  for (auto& m : *it) {
    if (!m.is_object()) throw Error(Code::corrupt, fmt::format("backup set {}: a member is not an object", where));
    SetMember mem{str_field(m, "source", where), str_field(m, "kind", where), str_field(m, "id", where),
                  str_field(m, "path", where),   str_field(m, "sha256", where), m.value("source_name", "")};
    if (!valid_backup_id(mem.id))
      throw Error(Code::corrupt, fmt::format("backup set {}: member {} has an invalid id", where, mem.source));
    s.members.push_back(std::move(mem));
  }
  if (auto o = j.find("objectives"); o != j.end() && o->is_object()) s.objectives = *o;
  return s;
}

const SetMember* BackupSet::member(const std::string& source) const {
  for (auto& m : members)
    if (m.source == source) return &m;
  return nullptr;
}

void write_backup_set(Repository& repo, BackupSet& s, const LogFn& log) {
  for (auto& mem : s.members)
    if (std::string p = member_problem(repo, mem); !p.empty())
      throw Error(Code::corrupt, fmt::format("backup set {} not written: {}", s.id, p));
  // Two runs of one plan in one second: the later set is "<id>_2". put() never replaces,
  // so a name taken between the stat and the commit moves on to the next one.
  const std::string base = s.id;
  for (int i = 0;; ++i) {
    if (i == 20) throw Error(Code::exists, fmt::format("backup set {}: 20 sets already have this name", base));
    s.id = i == 0 ? base : fmt::format("{}_{}", base, i + 1);
    if (repo.storage().stat(s.key())) continue;
    nlohmann::json j = s.to_json();
    if (repo.signing() && repo.signing()->key) sign_manifest(j, *repo.signing()->key);
    std::string text = j.dump(2) + "\n";
    auto sink = repo.storage().put(s.key());
    try {
      sink->write(std::as_bytes(std::span(text.data(), text.size())));
      sink->commit();
      break;
    } catch (const Error& e) {
      if (e.code() != Code::exists) throw;
    }
  }
  if (log) log(LogLevel::info, fmt::format("backup set {} written ({} members)", s.id, s.members.size()));
}

namespace {

// The objects under sets/ named <id>.set.json.
std::vector<ObjectInfo> set_objects(Repository& repo) {
  std::vector<ObjectInfo> out;
  const std::string suffix = kSetSuffix;
  for (auto& o : repo.storage().list(kSetDir))
    if (o.key.size() > suffix.size() && o.key.compare(o.key.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(o);
  return out;
}

// One set manifest's JSON, read (at most 4 MiB) and parsed; corrupt when it is not JSON.
nlohmann::json read_set_json(Repository& repo, const std::string& key) {
  nlohmann::json j = nlohmann::json::parse(repo.storage().read_small(key, 4 << 20), nullptr, false);
  if (j.is_discarded()) throw Error(Code::corrupt, fmt::format("{} is not valid JSON", key));
  return j;
}

}  // namespace

std::vector<BackupSetEntry> list_backup_sets(Repository& repo, const std::string& plan, const LogFn& log) {
  std::vector<BackupSetEntry> out;
  for (auto& o : set_objects(repo)) {
    try {
      nlohmann::json j = read_set_json(repo, o.key);
      BackupSetEntry e{BackupSet::from_json(j, o.key), false, ""};
      if (e.set.key() != o.key) throw Error(Code::corrupt, fmt::format("{} names another set ({})", o.key, e.set.id));
      if (!plan.empty() && e.set.plan != plan) continue;
      const Signing* sg = repo.signing();
      std::string why;
      if (sg && sg->enforced() && check_manifest_signature(j, sg->verify_keys, &why) != SignatureState::good) {
        e.problem = fmt::format("its manifest is not signed by a verify key ({})", why);
      } else {
        for (auto& mem : e.set.members)
          if (e.problem.empty()) e.problem = member_problem(repo, mem);
      }
      e.complete = e.problem.empty();
      out.push_back(std::move(e));
    } catch (const Error& e) {
      if (log) log(LogLevel::warning, fmt::format("skipping {}: {}", o.key, e.what()));
    }
  }
  std::sort(out.begin(), out.end(), [](const BackupSetEntry& a, const BackupSetEntry& b) {
    return std::tie(a.set.started_at, a.set.id) < std::tie(b.set.started_at, b.set.id);
  });
  return out;
}

BackupSetEntry find_backup_set(Repository& repo, const std::string& plan, const std::string& id_or_latest,
                               const LogFn& log) {
  if (id_or_latest.empty()) throw Error(Code::invalid_argument, "no backup set named (give an id or \"latest\")");
  auto sets = list_backup_sets(repo, plan, log);
  if (id_or_latest == "latest") {
    std::string skipped;
    for (auto it = sets.rbegin(); it != sets.rend(); ++it) {
      if (it->complete) {
        if (!skipped.empty() && log)
          log(LogLevel::warning, fmt::format("passing over newer incomplete backup sets: {}", skipped));
        return *it;
      }
      skipped += (skipped.empty() ? "" : "; ") + it->set.id + ": " + it->problem;
    }
    if (sets.empty())
      throw Error(Code::not_found, fmt::format("no backup set of plan \"{}\" in {}", plan, repo.storage().describe()));
    throw Error(Code::not_found, fmt::format("no complete backup set of plan \"{}\" in {} ({} incomplete: {})", plan,
                                             repo.storage().describe(), sets.size(), skipped));
  }
  for (auto& e : sets) {
    if (e.set.id != id_or_latest) continue;
    if (!e.complete)
      throw Error(Code::corrupt, fmt::format("backup set {} is not complete: {}", e.set.id, e.problem));
    return e;
  }
  throw Error(Code::not_found, fmt::format("no backup set {} of plan \"{}\" in {}", id_or_latest, plan,
                                           repo.storage().describe()));
}

std::vector<std::string> backups_in_sets(Repository& repo, const LogFn& log) {
  std::vector<std::string> ids;
  for (auto& o : set_objects(repo)) {
    try {
      for (auto& m : BackupSet::from_json(read_set_json(repo, o.key), o.key).members) ids.push_back(m.id);
    } catch (const Error& e) {
      if (log) log(LogLevel::warning, fmt::format("skipping {}: {}", o.key, e.what()));
    }
  }
  return ids;
}

void remove_backup_set(Repository& repo, const BackupSet& s, const LogFn& log) {
  for (auto& mem : s.members) {
    Manifest listed;
    listed.id = mem.id;
    listed.path = mem.path;
    try {
      Manifest m = repo.load(listed);
      if (m.sha256 != mem.sha256) {
        if (log) log(LogLevel::warning, fmt::format("set {}: member {} now names another artifact; left alone", s.id, mem.id));
        continue;
      }
      repo.remove_backup(m);
    } catch (const Error& e) {
      if (e.code() != Code::not_found) throw;  // a member already gone: the set goes all the same
    }
  }
  repo.storage().remove(s.key());
  if (log) log(LogLevel::info, fmt::format("deleted backup set {} ({} members)", s.id, s.members.size()));
}

}  // namespace mevbackup
