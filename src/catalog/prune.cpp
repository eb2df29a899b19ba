#include <fmt/format.h>

#include "mevbackup/maintenance.hpp"

namespace mevbackup {

nlohmann::json PruneResult::to_json() const {
  nlohmann::json arr = nlohmann::json::array();
  for (auto& d : decisions)
    arr.push_back({{"id", d.id}, {"incomplete", d.incomplete}, {"action", d.keep ? "keep" : "delete"},
                   {"reason", d.reason}});
  return {{"deleted", deleted}, {"decisions", arr}};
}

PruneResult prune(Repository& repo, const PruneOptions& opts, TimePoint now, const RunContext& ctx) {
  opts.policy.validate();
  Catalog cat = repo.catalog(opts.kind, ctx.log);
  std::vector<RetentionItem> items;
  std::vector<const Manifest*> manifests;
  for (auto& e : cat.backups) {
    if (!opts.source.empty() && e.manifest.source_name != opts.source) continue;
    RetentionItem it;
    it.id = e.manifest.id;
    it.kind = e.manifest.kind;
    it.source = e.manifest.source_name;
    it.created = parse_rfc3339(e.manifest.started_at);
    if (e.verification) it.state = e.verification->ok ? BackupState::good : BackupState::failed;
    items.push_back(it);
    manifests.push_back(&e.manifest);
  }
  std::vector<IncompleteItem> incomplete;
  if (opts.source.empty())  // an incomplete object has no manifest to tell its source
    for (auto& o : cat.incomplete)
      incomplete.push_back({o.key, std::chrono::system_clock::from_time_t(static_cast<std::time_t>(o.mtime))});

  PruneResult res;
  res.decisions = apply_retention(items, incomplete, opts.policy, now);
  for (size_t i = 0; i < res.decisions.size(); ++i) {
    auto& d = res.decisions[i];
    if (ctx.cancel) ctx.cancel->check();
    if (ctx.log)
      ctx.log(LogLevel::info, fmt::format("{}{} {}: {}", opts.dry_run && !d.keep ? "would " : "",
                                          d.keep ? "keep" : "delete", d.id, d.reason));
    if (d.keep || opts.dry_run) continue;
    if (d.incomplete) repo.storage().remove(d.id);
    else repo.remove_backup(*manifests[i]);
    ++res.deleted;
  }
  return res;
}

}  // namespace mevbackup
