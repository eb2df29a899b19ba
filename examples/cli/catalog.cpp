// mevbackup list
#include "cli.hpp"

namespace cli {

int list_sets(mevb_repo* repo, const std::string& plan_name, const OutputOptions& out);  // plan.cpp
mevb_repo* open_plan_repo(const std::string& path, std::string* name);


Action setup_list(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string kind, plan;
    bool sets = false;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  // With --plan the repository is the plan's.
  app->get_option("--repo")->required(false);
  app->add_option("--plan", o->plan, "the repository of this plan file (and with --sets, only its sets)")
      ->type_name("FILE");
  app->add_flag("--sets", o->sets, "list the backup sets (of `mevbackup run --plan`) instead, each checked");
  app->add_option("-k,--kind", o->kind, "only backups of this kind: postgres, redis, files, basebackup, or a kind of your own (an artifact put through the library, e.g. export)")
      ->type_name("KIND");
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    if (o->plan.empty() && o->repo.repo.empty()) throw UsageError{"--repo is required (or --plan FILE)"};
    if (!o->plan.empty() && !o->repo.repo.empty()) throw UsageError{"give --repo or --plan, not both"};
    std::string plan_name;
    mevb_repo* repo = o->plan.empty() ? open_repo(o->repo) : open_plan_repo(o->plan, &plan_name);
    if (o->sets) return list_sets(repo, plan_name, o->out);
    mevb_backup_list* list = nullptr;
    if (mevb_repo_list(repo, o->kind.empty() ? nullptr : o->kind.c_str(), &list) != MEVB_OK) fail();
    size_t n = mevb_backup_list_count(list);
    if (o->out.json) {
      nlohmann::json all = nlohmann::json::array();
      for (size_t i = 0; i < n; ++i) all.push_back(backup_json(mevb_backup_list_get(list, i)));
      std::printf("%s\n", all.dump(2).c_str());
    } else {
      for (size_t i = 0; i < n; ++i) {
        const mevb_backup* b = mevb_backup_list_get(list, i);
        // Marks: "encrypted"; with --verify-key, "UNSIGNED" or "BAD-SIGNATURE" (not trusted).
        std::string sig = mevb_backup_signature(b), marks;
        if (sig == "unsigned") marks += "  UNSIGNED";
        if (sig == "bad") marks += "  BAD-SIGNATURE";
        if (mevb_backup_encrypted(b)) marks += "  encrypted";
        std::printf("%-40s %-9s %-20s %12llu  %s%s\n", mevb_backup_id(b), mevb_backup_kind(b),
                    mevb_backup_created_at(b), static_cast<unsigned long long>(mevb_backup_size(b)),
                    mevb_backup_path(b), marks.c_str());
      }
    }
    mevb_backup_list_free(list);
    mevb_repo_free(repo);
    return kExitOk;
  };
}

}  // namespace cli
