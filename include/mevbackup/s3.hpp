// S3-only operations on a repository stored in a bucket (see storage.hpp for the
// storage itself, reached through open_storage("s3://bucket/prefix", options)).
#pragma once

#include <string>
#include <vector>

#include "mevbackup/storage.hpp"

namespace mevbackup {

struct LifecycleTransition {
  int days = 0;               // after creation
  std::string storage_class;  // GLACIER, DEEP_ARCHIVE, STANDARD_IA, ...
};

// One lifecycle rule over the repository's prefix, as the runbook's lifecycle-policy.json:
// transitions to colder classes, then expiration. Incomplete multipart uploads (left by
// a crash) are aborted after `abort_incomplete_days`.
struct LifecycleRule {
  std::string id;  // empty: "mevbackup <prefix>"
  std::vector<LifecycleTransition> transitions;
  int expire_days = 0;  // 0: never expire
  int abort_incomplete_days = 7;
};

// The <Rule> element for `rule` over `prefix` ("" for the whole bucket). Throws
// invalid_argument on days that are not positive and increasing, or an empty class.
std::string lifecycle_rule_xml(const std::string& prefix, const LifecycleRule& rule);

// Installs `rule` in the bucket of an S3 storage: the bucket's lifecycle configuration is
// read, a rule with the same id is replaced (other rules are kept), and it is written back.
// Throws unsupported when `storage` is not S3 or the server does not implement lifecycle
// rules, auth when refused.
void put_bucket_lifecycle(Storage& storage, const LifecycleRule& rule);

}  // namespace mevbackup
