// C API: copying backups between repositories.
#include "internal.hpp"
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

}  // extern "C"
