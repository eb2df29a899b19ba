// C API: copying backups between repositories; S3 bucket lifecycle.
#include "internal.hpp"
#include "mevbackup/s3.hpp"
#include "mevbackup/sync.hpp"

using namespace mevb_capi;

extern "C" {

int mevb_sync_opts_init(mevb_sync_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_sync_opts MEVB_SYNC_OPTS_INIT);
}

int mevb_repo_sync(mevb_repo* from, mevb_repo* to, const mevb_sync_opts* opts, size_t* copied) {
  return guard([&] {
    if (copied) *copied = 0;
    require(from, "from");
    require(to, "to");
    if (from == to) throw invalid("sync needs two different repositories");
    mevb_sync_opts o = MEVB_SYNC_OPTS_INIT;
    read_opts(opts, o, "mevb_sync_opts");
    RunContext ctx = make_context(from, o.progress, o.progress_user);
    SyncResult r = sync_repositories(from->repo, to->repo, str_or(o.kind), ctx);
    if (copied) *copied = r.copied.size();
  });
}

int mevb_lifecycle_opts_init(mevb_lifecycle_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_lifecycle_opts MEVB_LIFECYCLE_OPTS_INIT);
}

int mevb_repo_put_bucket_lifecycle(mevb_repo* repo, const mevb_lifecycle_opts* opts) {
  return guard([&] {
    require(repo, "repo");
    mevb_lifecycle_opts o = MEVB_LIFECYCLE_OPTS_INIT;
    read_opts(opts, o, "mevb_lifecycle_opts");
    if (o.transitions_count && !o.transitions) throw invalid("transitions is NULL but transitions_count is not 0");
    LifecycleRule rule;
    rule.id = str_or(o.rule_id);
    for (size_t i = 0; i < o.transitions_count; ++i) {
      require(o.transitions[i].storage_class, "transitions[].storage_class");
      rule.transitions.push_back({o.transitions[i].days, o.transitions[i].storage_class});
    }
    rule.expire_days = o.expire_days;
    rule.abort_incomplete_days = o.abort_incomplete_days;
    put_bucket_lifecycle(repo->repo.storage(), rule);
  });
}

}  // extern "C"
