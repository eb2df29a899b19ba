// mevbackup sync: copies complete backups between repositories (local <-> S3).
#include "cli.hpp"

namespace cli {

int cmd_sync(int argc, char** argv, int start) {
  Args a = parse(argc, argv, start, {"from", "to", "kind"}, {}, {"quiet", "verbose"});
  common_flags(a);
  std::string from = need(a, "from"), to = need(a, "to");
  mevb_repo* src = open_repo_at(a, from);
  mevb_repo* dst = open_repo_at(a, to);
  mevb_sync_opts o = MEVB_SYNC_OPTS_INIT;
  o.kind = opt(a, "kind");
  o.progress = on_progress;
  size_t copied = 0;
  if (mevb_repo_sync(src, dst, &o, &copied) != MEVB_OK) fail();
  std::printf("copied %zu backup%s from %s to %s\n", copied, copied == 1 ? "" : "s", from.c_str(), to.c_str());
  mevb_repo_free(dst);
  mevb_repo_free(src);
  return 0;
}

}  // namespace cli
