// mevbackup sync: copies complete backups between repositories (local <-> S3).
// mevbackup lifecycle: installs the bucket lifecycle rule of an S3 repository.
#include "cli.hpp"

namespace cli {

Action setup_sync(CLI::App* app) {
  struct Opts {
    StorageOptions storage;
    OutputOptions out;
    std::string from, to, kind;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--from", o->from, "repository to copy from")->required()->type_name("REPO");
  app->add_option("--to", o->to, "repository to copy to")->required()->type_name("REPO");
  app->add_option("-k,--kind", o->kind, "only backups of this kind")->type_name("KIND");
  add_storage_options(app, o->storage);
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    mevb_repo* src = open_repo_at(o->storage, o->from);
    mevb_repo* dst = open_repo_at(o->storage, o->to);
    mevb_sync_opts so = MEVB_SYNC_OPTS_INIT;
    so.kind = o->kind.empty() ? nullptr : o->kind.c_str();
    so.progress = on_progress;
    size_t copied = 0;
    if (mevb_repo_sync(src, dst, &so, &copied) != MEVB_OK) fail();
    if (o->out.json)
      std::printf("%s\n", nlohmann::json({{"copied", copied}, {"from", o->from}, {"to", o->to}}).dump(2).c_str());
    else if (!o->out.quiet)
      std::printf("copied %zu backup%s from %s to %s\n", copied, copied == 1 ? "" : "s", o->from.c_str(),
                  o->to.c_str());
    mevb_repo_free(dst);
    mevb_repo_free(src);
    return kExitOk;
  };
}

Action setup_lifecycle(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string rule_id;
    std::vector<std::string> transitions;
    std::optional<int> expire, abort_incomplete;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  app->add_option("--transition", o->transitions, "move objects to CLASS after DAYS (repeatable)")
      ->allow_extra_args(false)->type_name("DAYS:CLASS");
  app->add_option("--expire", o->expire, "delete objects after DAYS")->type_name("DAYS")->check(CLI::Range(0, 100000));
  app->add_option("--abort-incomplete", o->abort_incomplete, "abort multipart uploads unfinished after DAYS")
      ->type_name("DAYS")->check(CLI::Range(0, 100000));
  app->add_option("--rule-id", o->rule_id, "the rule's id")->type_name("ID");
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    auto number = [](const std::string& what, const std::string& s) {
      char* end = nullptr;
      long v = std::strtol(s.c_str(), &end, 10);
      if (s.empty() || *end || v < 0 || v > 100000)
        throw UsageError{what + " must be a number of days, not \"" + s + "\""};
      return static_cast<int>(v);
    };
    std::vector<std::string> classes;
    std::vector<mevb_lifecycle_transition> ts;
    classes.reserve(o->transitions.size());
    for (auto& t : o->transitions) {
      auto colon = t.find(':');
      if (colon == std::string::npos)
        throw UsageError{"--transition is DAYS:CLASS (e.g. 30:GLACIER), not \"" + t + "\""};
      classes.push_back(t.substr(colon + 1));
      ts.push_back({number("--transition", t.substr(0, colon)), classes.back().c_str()});
    }
    mevb_lifecycle_opts lo = MEVB_LIFECYCLE_OPTS_INIT;
    lo.rule_id = o->rule_id.empty() ? nullptr : o->rule_id.c_str();
    lo.transitions = ts.data();
    lo.transitions_count = ts.size();
    if (o->expire) lo.expire_days = *o->expire;
    if (o->abort_incomplete) lo.abort_incomplete_days = *o->abort_incomplete;
    mevb_repo* repo = open_repo(o->repo);
    if (mevb_repo_put_bucket_lifecycle(repo, &lo) != MEVB_OK) fail();
    if (o->out.json)
      std::printf("%s\n", nlohmann::json({{"lifecycle", "installed"}, {"repo", o->repo.repo}}).dump(2).c_str());
    else if (!o->out.quiet)
      std::printf("lifecycle rule installed on %s\n", o->repo.repo.c_str());
    mevb_repo_free(repo);
    return kExitOk;
  };
}

}  // namespace cli
