// mevbackup list
#include "cli.hpp"

namespace cli {

int cmd_list(int argc, char** argv, int start) {
  Args a = parse(argc, argv, start, {"repo", "kind"}, {}, {"json", "quiet", "verbose"});
  common_flags(a);
  mevb_repo* repo = open_repo(a);
  mevb_backup_list* list = nullptr;
  if (mevb_repo_list(repo, opt(a, "kind"), &list) != MEVB_OK) fail();
  size_t n = mevb_backup_list_count(list);
  if (a.flags.count("json")) {
    std::puts("[");
    for (size_t i = 0; i < n; ++i) print_backup_json(mevb_backup_list_get(list, i), i + 1 == n);
    std::puts("]");
  } else {
    for (size_t i = 0; i < n; ++i) {
      const mevb_backup* b = mevb_backup_list_get(list, i);
      std::printf("%-40s %-9s %-20s %12llu  %s\n", mevb_backup_id(b), mevb_backup_kind(b), mevb_backup_created_at(b),
                  static_cast<unsigned long long>(mevb_backup_size(b)), mevb_backup_path(b));
    }
  }
  mevb_backup_list_free(list);
  mevb_repo_free(repo);
  return 0;
}

}  // namespace cli
