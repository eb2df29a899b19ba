// mevbackup sync: copies complete backups between repositories (local <-> S3).
// mevbackup lifecycle: installs the bucket lifecycle rule of an S3 repository.
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

int cmd_lifecycle(int argc, char** argv, int start) {
  Args a = parse(argc, argv, start, {"repo", "expire", "rule-id", "abort-incomplete"}, {"transition"},
                 {"quiet", "verbose"});
  common_flags(a);
  auto number = [](const std::string& what, const std::string& s) {
    char* end = nullptr;
    long v = std::strtol(s.c_str(), &end, 10);
    if (s.empty() || *end || v < 0 || v > 100000) throw UsageError{what + " must be a number of days, not \"" + s + "\""};
    return static_cast<int>(v);
  };
  std::vector<std::string> classes;
  std::vector<mevb_lifecycle_transition> ts;
  if (auto it = a.many.find("transition"); it != a.many.end()) {
    classes.reserve(it->second.size());
    for (auto& t : it->second) {
      auto colon = t.find(':');
      if (colon == std::string::npos) throw UsageError{"--transition is DAYS:CLASS (e.g. 30:GLACIER), not \"" + t + "\""};
      classes.push_back(t.substr(colon + 1));
      ts.push_back({number("--transition", t.substr(0, colon)), classes.back().c_str()});
    }
  }
  mevb_lifecycle_opts o = MEVB_LIFECYCLE_OPTS_INIT;
  o.rule_id = opt(a, "rule-id");
  o.transitions = ts.data();
  o.transitions_count = ts.size();
  if (const char* e = opt(a, "expire")) o.expire_days = number("--expire", e);
  if (const char* e = opt(a, "abort-incomplete")) o.abort_incomplete_days = number("--abort-incomplete", e);
  mevb_repo* repo = open_repo(a);
  if (mevb_repo_put_bucket_lifecycle(repo, &o) != MEVB_OK) fail();
  std::printf("lifecycle rule installed on %s\n", need(a, "repo", "MEVBACKUP_REPO").c_str());
  mevb_repo_free(repo);
  return 0;
}

}  // namespace cli
