// C API: the retention policy as a pure function over the caller's items (apply_retention).
#include "internal.hpp"

#include "mevbackup/retention.hpp"

using namespace mevb_capi;

struct mevb_retention_result {
  std::vector<RetentionDecision> decisions;  // in the items' order
  std::vector<mevb_retention_decision> views;
  mevb_capi::Live<mevb_retention_result> live_;
};

namespace {

// Seconds since the epoch the time parser accepts: years 1970..2200.
constexpr int64_t kLastEpoch = 7289654399;  // 2200-12-31T23:59:59Z

// An item array's stride is its first item's struct_size, so it must be a size this
// library can read: its own, or a larger one (a newer header) whose extra bytes are zero.
// The cap keeps a garbage struct_size from sending the reads far past the array.
constexpr size_t kMaxItemSize = 1024;

std::string item_name(size_t i, const char* id) {
  return id ? fmt::format("item {} (\"{}\")", i, id) : fmt::format("item {}", i);
}

TimePoint item_time(const char* text, int64_t epoch, size_t i, const char* id, const char* field) {
  if (text) {
    std::string why;
    auto t = try_parse_time(text, &why);
    if (!t)
      throw invalid(fmt::format("{}: {} \"{}\" is not an RFC 3339 time: {}", item_name(i, id), field, text, why));
    return *t;
  }
  if (epoch < 0 || epoch > kLastEpoch)
    throw invalid(fmt::format("{}: {}_epoch {} is outside 1970..2200", item_name(i, id), field, epoch));
  return std::chrono::system_clock::from_time_t(static_cast<std::time_t>(epoch));
}

mevb_retention_item read_item(const mevb_retention_item* items, size_t stride, size_t i) {
  const auto* raw = reinterpret_cast<const unsigned char*>(items) + stride * i;
  uint32_t size;
  std::memcpy(&size, raw, sizeof size);
  if (size != stride)
    throw invalid(fmt::format("item {}: struct_size {} differs from the first item's {}", i, size, stride));
  mevb_retention_item it = MEVB_RETENTION_ITEM_INIT;
  read_opts(reinterpret_cast<const mevb_retention_item*>(raw), it, fmt::format("item {}", i).c_str());
  return it;
}

}  // namespace

extern "C" {

int mevb_retention_opts_init(mevb_retention_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_retention_opts MEVB_RETENTION_OPTS_INIT);
}

int mevb_retention_apply(const mevb_retention_opts* opts, const mevb_retention_item* items, size_t count,
                         const char* now, int64_t now_epoch, mevb_retention_result** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    if (count > 0) require(items, "items");
    mevb_retention_opts o = MEVB_RETENTION_OPTS_INIT;
    read_opts(opts, o, "mevb_retention_opts");
    RetentionPolicy policy;
    policy.keep_last = o.keep_last;
    policy.keep_days = o.keep_days;
    policy.keep_daily = o.keep_daily;
    policy.keep_weekly = o.keep_weekly;
    policy.keep_monthly = o.keep_monthly;
    policy.keep_yearly = o.keep_yearly;
    policy.incomplete_grace = std::chrono::seconds(o.incomplete_grace_seconds);
    policy.future_allowance = std::chrono::seconds(o.future_allowance_seconds);
    policy.validate();

    TimePoint at;
    if (now) {
      std::string why;
      auto t = try_parse_time(now, &why);
      if (!t) throw invalid(fmt::format("now \"{}\" is not an RFC 3339 time: {}", now, why));
      at = *t;
    } else {
      if (now_epoch < 0 || now_epoch > kLastEpoch)
        throw invalid(fmt::format("now_epoch {} is outside 1970..2200", now_epoch));
      at = std::chrono::system_clock::from_time_t(static_cast<std::time_t>(now_epoch));
    }

    size_t stride = 0;
    if (count > 0) {
      uint32_t first;
      std::memcpy(&first, items, sizeof first);
      if (first < sizeof(mevb_retention_item) || first > kMaxItemSize)
        throw invalid(fmt::format("item 0: struct_size {} is not that of a mevb_retention_item ({})", first,
                                  sizeof(mevb_retention_item)));
      stride = first;
    }
    std::vector<RetentionItem> backups;
    std::vector<IncompleteItem> incomplete;
    std::vector<size_t> backup_at, incomplete_at;  // each one's index among the items
    for (size_t i = 0; i < count; ++i) {
      mevb_retention_item it = read_item(items, stride, i);
      if (!it.id || !*it.id) throw invalid(fmt::format("{}: the id must not be NULL or empty", item_name(i, nullptr)));
      TimePoint created = item_time(it.created, it.created_epoch, i, it.id, "created");
      if (it.incomplete) {
        incomplete.push_back({it.id, created});
        incomplete_at.push_back(i);
        continue;
      }
      RetentionItem b;
      b.id = it.id;
      b.kind = str_or(it.kind);
      b.source = str_or(it.source);
      b.created = created;
      if (it.finished || it.finished_epoch != 0)
        b.finished = item_time(it.finished, it.finished_epoch, i, it.id, "finished");
      switch (it.verified) {
        case MEVB_VERIFIED_NEVER: break;
        case MEVB_VERIFIED_OK: b.state = BackupState::good; b.ever_good = true; break;
        case MEVB_VERIFIED_FAILED: b.state = BackupState::failed; break;
        case MEVB_VERIFIED_EVER_OK: b.state = BackupState::failed; b.ever_good = true; break;
        default:
          throw invalid(fmt::format("{}: verified {} is not a mevb_verified value (0..3)", item_name(i, it.id),
                                    it.verified));
      }
      backups.push_back(std::move(b));
      backup_at.push_back(i);
    }

    // apply_retention answers backups first, then incomplete objects, each in input order.
    std::vector<RetentionDecision> decided = apply_retention(backups, incomplete, policy, at);
    auto res = std::make_unique<mevb_retention_result>();
    res->decisions.resize(count);
    for (size_t k = 0; k < backup_at.size(); ++k) res->decisions[backup_at[k]] = std::move(decided[k]);
    for (size_t k = 0; k < incomplete_at.size(); ++k)
      res->decisions[incomplete_at[k]] = std::move(decided[backup_at.size() + k]);
    res->views.reserve(count);
    for (auto& d : res->decisions)
      res->views.push_back({sizeof(mevb_retention_decision), d.id.c_str(), d.keep ? 1 : 0, d.incomplete ? 1 : 0,
                            d.reason.c_str()});
    *out = res.release();
  });
}

size_t mevb_retention_result_count(const mevb_retention_result* result) {
  return live(result) ? result->views.size() : 0;
}

const mevb_retention_decision* mevb_retention_result_get(const mevb_retention_result* result, size_t index) {
  if (!live(result) || index >= result->views.size()) return nullptr;
  return &result->views[index];
}

void mevb_retention_result_free(mevb_retention_result* result) {
  if (live(result)) delete result;
}

}  // extern "C"
