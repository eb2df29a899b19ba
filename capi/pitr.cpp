// C API: point-in-time recovery (WAL archive primitives).
#include "internal.hpp"
#include "mevbackup/pitr.hpp"

using namespace mevb_capi;

extern "C" {

int mevb_wal_push(mevb_repo* repo, const char* path, int* already_archived) {
  return guard([&] {
    if (already_archived) *already_archived = 0;
    require(repo, "repo");
    require(path, "path");
    RunContext ctx = make_context(repo, nullptr, nullptr);
    auto r = pitr::wal_push(repo->repo.storage(), path, ctx);
    if (already_archived) *already_archived = r == pitr::PushResult::already_archived ? 1 : 0;
  });
}

int mevb_wal_fetch(mevb_repo* repo, const char* name, const char* dest) {
  return guard([&] {
    require(repo, "repo");
    require(name, "name");
    require(dest, "dest");
    RunContext ctx = make_context(repo, nullptr, nullptr);
    if (!pitr::wal_fetch(repo->repo.storage(), name, dest, ctx))
      throw Error(Code::not_found,
                  std::string("WAL file ") + name + " is not in the archive " + repo->repo.storage().describe());
  });
}

}  // extern "C"
