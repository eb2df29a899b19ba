// The last step of a files restore: members staged in a directory beside the target,
// compared with what the target holds, then renamed into it (all or nothing).
#pragma once

#include <string>
#include <vector>

#include "member_checks.hpp"
#include "mevbackup/files.hpp"

namespace mevbackup::files {

struct MoveOp {
  std::string rel;       // relative name moved as a whole ("" = the target itself)
  bool replace = false;  // an existing file is set aside first
};

struct MovePlan {
  std::vector<MoveOp> ops;
  std::vector<FileAction> actions;     // per entry: create, unchanged, replace, conflict
  std::vector<std::string> conflicts;  // what blocks the move (without overwrite)
};

// What restoring `entries` into `target` does. A missing parent moves in with everything
// below it; an existing directory is entered; a file the same as the staged one (mode and
// SHA-256, or a symlink's target) is unchanged; a different one is replaced with
// `overwrite`, else a conflict. Throws exists when the target is not a directory,
// restore_failed for a path through a symlink of the target.
MovePlan plan_moves(const std::vector<Entry>& entries, const std::string& target, bool overwrite);

// exists, naming (some of) the conflicts, when there are any.
void refuse_conflicts(const MovePlan& plan, const std::string& target);

// Where the staged members are and where they go. Replaced files wait in a directory
// beside the target ("<parent>/.<base>.mevb-old-XXXXXX") until every rename succeeded.
struct MovePlaces {
  std::string staging, target, parent, base_name;
};

// The renames of `plan` (RENAME_NOREPLACE); on any failure the ones done are undone and
// the replaced files put back. Then the directories created get their archived times.
void move_into_place(const MovePlan& plan, const std::vector<Entry>& entries, const MovePlaces& at);

}  // namespace mevbackup::files
