// mevbackup wal-push / wal-fetch: PostgreSQL's archive_command and restore_command.
//   archive_command = 'mevbackup wal-push --repo /backups %p'
//   restore_command = 'mevbackup wal-fetch --repo /backups %f %p'
#include "cli.hpp"

namespace cli {

int cmd_wal_push(int argc, char** argv, int start) {
  std::vector<std::string> pos;
  Args a = parse(argc, argv, start, {"repo"}, {}, {"quiet", "verbose"}, &pos);
  common_flags(a);
  g_progress = false;
  if (pos.size() != 1) throw UsageError{"wal-push takes one WAL file path (%p)"};
  mevb_repo* repo = open_repo(a);
  int already = 0;
  if (mevb_wal_push(repo, pos[0].c_str(), &already) != MEVB_OK) fail();
  mevb_repo_free(repo);
  if (already && g_verbose) std::fprintf(stderr, "mevbackup: %s was already archived\n", pos[0].c_str());
  return 0;
}

int cmd_wal_fetch(int argc, char** argv, int start) {
  std::vector<std::string> pos;
  Args a = parse(argc, argv, start, {"repo"}, {}, {"quiet", "verbose"}, &pos);
  common_flags(a);
  g_progress = false;
  if (pos.size() != 2) throw UsageError{"wal-fetch takes a WAL file name (%f) and a destination path (%p)"};
  mevb_repo* repo = open_repo(a);
  int rc = mevb_wal_fetch(repo, pos[0].c_str(), pos[1].c_str());
  // PostgreSQL asks for files that do not exist (the next timeline's history, the
  // segment past the end of the archive): that is an ordinary "no", said quietly.
  if (rc == MEVB_ERR_NOT_FOUND) {
    if (g_verbose) std::fprintf(stderr, "mevbackup: %s is not archived\n", pos[0].c_str());
    mevb_repo_free(repo);
    return 1;
  }
  if (rc != MEVB_OK) fail();
  mevb_repo_free(repo);
  return 0;
}

}  // namespace cli
