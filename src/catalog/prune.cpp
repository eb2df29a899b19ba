#include <set>

#include <fmt/format.h>

#include "mevbackup/backup_set.hpp"
#include "mevbackup/lock.hpp"
#include "mevbackup/maintenance.hpp"
#include "mevbackup/kinds.hpp"

namespace mevbackup {

nlohmann::json PruneResult::to_json() const {
  nlohmann::json arr = nlohmann::json::array();
  for (auto& d : decisions)
    arr.push_back({{"id", d.id}, {"incomplete", d.incomplete}, {"foreign", d.foreign},
                   {"action", d.keep ? "keep" : "delete"}, {"reason", d.reason}});
  return {{"deleted", deleted}, {"foreign", foreign}, {"decisions", arr}};
}

bool is_own_leftover(const ObjectInfo& o) {
  if (!o.upload_id.empty()) return true;
  auto slash = o.key.rfind('/');
  std::string name = slash == std::string::npos ? o.key : o.key.substr(slash + 1);
  // The local storage's temporary name: "." + final name + ".tmp-" + random hex; and the
  // name claim an S3 writer stores before it uploads: "." + final name + ".claim-" + nonce.
  if (name.size() < 2 || name[0] != '.') return false;
  return name.find(".tmp-") != std::string::npos || name.find(".claim-") != std::string::npos;
}

PruneResult prune(Repository& repo, const PruneOptions& opts, TimePoint now, const RunContext& ctx) {
  opts.policy.validate();
  // No backup may be writing or reading while prune decides what to delete (lock.hpp).
  RepositoryLock lock(repo.storage(), opts.dry_run ? LockKind::shared : LockKind::exclusive, ctx);
  const RunContext gctx = lock.guard(ctx);  // cancelled if the lock is lost
  Catalog cat = repo.catalog(opts.kind, gctx.log);
  std::vector<RetentionItem> items;
  std::vector<const Manifest*> manifests;
  std::vector<RetentionDecision> untrusted;  // with verify keys: never counted, never deleted
  for (auto& e : cat.backups) {
    if (!opts.source.empty() && e.manifest.source_name != opts.source) continue;
    if (!repo.trusted(e.manifest)) {
      // A manifest nobody signed is not a backup to count: a planted "newer" one must not
      // push a good backup out of retention, nor may prune act on what it says.
      RetentionDecision d;
      d.id = e.manifest.id;
      d.keep = true;
      d.reason = fmt::format("kept, not counted (untrusted): {}", e.manifest.signature_problem);
      untrusted.push_back(d);
      continue;
    }
    RetentionItem it;
    it.id = e.manifest.id;
    it.kind = e.manifest.kind;
    it.source = e.manifest.source_name;
    it.created = parse_rfc3339(e.manifest.started_at);
    if (e.verification) it.state = e.verification->ok ? BackupState::good : BackupState::failed;
    if (e.verification) it.ever_good = e.verification->ever_ok();
    if (!e.manifest.finished_at.empty()) it.finished = parse_rfc3339(e.manifest.finished_at);
    items.push_back(it);
    manifests.push_back(&e.manifest);
  }
  std::vector<IncompleteItem> incomplete;
  std::vector<const ObjectInfo*> leftovers;  // parallel to `incomplete`
  std::vector<const ObjectInfo*> foreign;    // not written by the library: never deleted
  if (opts.source.empty())  // an incomplete object has no manifest to tell its source
    for (auto& o : cat.incomplete) {
      if (!is_own_leftover(o)) {
        foreign.push_back(&o);
        continue;
      }
      // An S3 multipart upload never completed is named as such (its key may also exist).
      std::string id = o.upload_id.empty() ? o.key : fmt::format("{} (unfinished multipart upload)", o.key);
      incomplete.push_back({id, std::chrono::system_clock::from_time_t(static_cast<std::time_t>(o.mtime))});
      leftovers.push_back(&o);
    }

  PruneResult res;
  res.decisions = apply_retention(items, incomplete, opts.policy, now);
  // A member of a backup set is the set's to keep or delete (a plan's retention prunes sets
  // whole): deleting it alone would break the set.
  std::set<std::string> in_sets;
  for (auto& id : backups_in_sets(repo, gctx.log)) in_sets.insert(id);
  for (size_t i = 0; i < items.size(); ++i) {
    auto& d = res.decisions[i];
    if (!d.keep && in_sets.count(d.id)) {
      d.keep = true;
      d.reason = "kept: a member of a backup set (the plan's retention prunes sets whole)";
    }
  }
  for (auto& d : untrusted) {
    if (gctx.log) gctx.log(LogLevel::warning, fmt::format("{}: {}", d.id, d.reason));
    res.decisions.push_back(d);
  }
  for (auto* o : foreign) {
    RetentionDecision d;
    d.id = o->key;
    d.incomplete = true;
    d.foreign = true;
    d.reason = "foreign, kept (no manifest, and not a temporary file of mevbackup's; `mevbackup adopt` imports "
               "the runbook's backups)";
    res.decisions.push_back(d);
    ++res.foreign;
  }
  // Phase 1: artifacts (and verification records, incomplete objects); phase 2: the
  // manifests of the backups whose artifact is gone. A backup is never left as a
  // manifest-less artifact that could be mistaken for a running one.
  std::vector<std::string> phase1, phase2;
  std::vector<const ObjectInfo*> uploads;  // aborted one by one (no batch call exists)
  std::vector<size_t> deleted_backups;
  size_t extra_keys = 0;
  for (size_t i = 0; i < res.decisions.size(); ++i) {
    auto& d = res.decisions[i];
    if (gctx.log)
      gctx.log(LogLevel::info, fmt::format("{}{} {}: {}", opts.dry_run && !d.keep ? "would " : "",
                                          d.keep ? "keep" : "delete", d.id, d.reason));
    if (d.keep) continue;
    if (d.incomplete) {
      const ObjectInfo* o = leftovers[i - items.size()];
      if (o->upload_id.empty())
        phase1.push_back(o->key);
      else
        uploads.push_back(o);
    } else {
      phase1.push_back(manifests[i]->path);
      phase1.push_back(manifests[i]->path + Verification::kSuffix);
      for (auto& key : manifests[i]->extra_paths()) {  // base backup parts
        phase1.push_back(key);
        ++extra_keys;
      }
      deleted_backups.push_back(i);
    }
  }
  // Each kind's own retention once its kept backups are known (BackupKind::after_prune:
  // WAL older than the oldest base backup kept goes too).
  std::set<std::string> gone_ids;
  for (size_t i : deleted_backups) gone_ids.insert(manifests[i]->id);
  auto after_prune = [&] {
    for (const BackupKind* k : registered_kinds()) {
      if (!k->after_prune || (!opts.kind.empty() && opts.kind != k->name)) continue;
      std::vector<Manifest> kept;
      for (auto& e : cat.backups)
        if (e.manifest.kind == k->name && !gone_ids.count(e.manifest.id)) kept.push_back(e.manifest);
      k->after_prune(repo.storage(), kept, opts.dry_run, gctx.log);
    }
  };
  if (opts.dry_run || (phase1.empty() && uploads.empty())) {
    after_prune();
    return res;
  }
  if (gctx.cancel) gctx.cancel->check();
  std::set<std::string> failed;
  std::vector<Storage::RemoveFailure> failures =
      phase1.empty() ? std::vector<Storage::RemoveFailure>{} : repo.storage().remove_many(phase1);
  for (auto* o : uploads) {
    try {
      repo.storage().remove_unfinished(*o);
    } catch (const Error& e) {
      failures.push_back({fmt::format("{} (unfinished multipart upload)", o->key), e.what()});
    }
  }
  for (auto& f : failures) failed.insert(f.key);
  for (size_t i : deleted_backups)
    if (!failed.count(manifests[i]->path) && !failed.count(manifests[i]->path + Verification::kSuffix))
      phase2.push_back(manifests[i]->key());
  for (auto& f : repo.storage().remove_many(phase2)) {
    failed.insert(f.key);
    failures.push_back(f);
  }
  for (size_t i = 0; i < res.decisions.size(); ++i) {
    auto& d = res.decisions[i];
    if (d.keep) continue;
    bool gone = d.incomplete ? !failed.count(d.id) : !failed.count(manifests[i]->key()) && !failed.count(manifests[i]->path);
    if (gone) ++res.deleted;
  }
  if (!failures.empty())
    throw Error(Code::io, fmt::format("prune deleted {} of {}, but could not delete {} object(s) in {}; first: {}: {}",
                                      res.deleted,
                                      deleted_backups.size() + uploads.size() +
                                          (phase1.size() - 2 * deleted_backups.size() - extra_keys),
                                      failures.size(), repo.storage().describe(), failures[0].key, failures[0].reason));
  after_prune();
  return res;
}

}  // namespace mevbackup
