// C API: prune, verify, check, and the report they return.
#include "internal.hpp"

using namespace mevb_capi;

namespace {

TimePoint now_or(mevb_repo* r, const char* now) {
  return now ? parse_rfc3339(now) : r->repo.clock().now();
}

}  // namespace

extern "C" {

const char* mevb_report_json(const mevb_report* r) { return live(r) ? r->json.c_str() : nullptr; }
const char* mevb_report_text(const mevb_report* r) { return live(r) ? r->text.c_str() : nullptr; }
int mevb_report_status(const mevb_report* r) { return live(r) ? r->status : -1; }
void mevb_report_free(mevb_report* r) {
  if (live(r)) delete r;
}

int mevb_prune_opts_init(mevb_prune_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_prune_opts MEVB_PRUNE_OPTS_INIT);
}

int mevb_repo_prune(mevb_repo* repo, const mevb_prune_opts* opts, mevb_report** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(repo, "repo");
    mevb_prune_opts o = MEVB_PRUNE_OPTS_INIT;
    read_opts(opts, o, "mevb_prune_opts");
    PruneOptions po;
    po.policy.keep_last = o.keep_last;
    po.policy.keep_days = o.keep_days;
    po.policy.keep_daily = o.keep_daily;
    po.policy.keep_weekly = o.keep_weekly;
    po.policy.keep_monthly = o.keep_monthly;
    po.policy.keep_yearly = o.keep_yearly;
    po.policy.incomplete_grace = std::chrono::seconds(o.incomplete_grace_seconds);
    po.kind = str_or(o.kind);
    po.source = str_or(o.source);
    po.dry_run = o.dry_run != 0;
    RunContext ctx = make_context(repo, nullptr, nullptr);
    PruneResult res = prune(repo->repo, po, now_or(repo, o.now), ctx);
    auto rep = std::make_unique<mevb_report>();
    rep->json = res.to_json().dump(2);
    for (auto& d : res.decisions)
      rep->text += fmt::format("{}{} {}: {}\n", po.dry_run && !d.keep ? "would " : "", d.keep ? "keep" : "delete",
                               d.id, d.reason);
    rep->status = static_cast<int>(res.deleted);
    *out = rep.release();
  });
}

int mevb_verify_opts_init(mevb_verify_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_verify_opts MEVB_VERIFY_OPTS_INIT);
}

int mevb_repo_verify(mevb_repo* repo, const char* which, const mevb_verify_opts* opts, mevb_report** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(repo, "repo");
    require(which, "which");
    mevb_verify_opts o = MEVB_VERIFY_OPTS_INIT;
    read_opts(opts, o, "mevb_verify_opts");
    VerifyOptions vo;
    vo.kind = str_or(o.kind);
    vo.source = str_or(o.source);
    vo.restore_test_conninfo = str_or(o.restore_test_conninfo);
    vo.queries = args_or(o.queries, o.queries_count, {});
    vo.record = o.no_record == 0;
    RunContext ctx = make_context(repo, o.progress, o.progress_user);
    auto results = verify(repo->repo, which, vo, ctx);
    auto rep = std::make_unique<mevb_report>();
    nlohmann::json arr = nlohmann::json::array();
    for (auto& r : results) {
      nlohmann::json j = r.verification.to_json();
      j["id"] = r.id;
      arr.push_back(j);
      rep->text += fmt::format("{} {}: {}\n", r.verification.ok ? "ok" : "FAILED", r.id, r.verification.message);
      if (!r.verification.ok) ++rep->status;
    }
    rep->json = nlohmann::json{{"failed", rep->status}, {"results", arr}}.dump(2);
    *out = rep.release();
  });
}

int mevb_check_opts_init(mevb_check_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_check_opts MEVB_CHECK_OPTS_INIT);
}

int mevb_repo_check(mevb_repo* repo, const mevb_check_opts* opts, mevb_report** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(repo, "repo");
    mevb_check_opts o = MEVB_CHECK_OPTS_INIT;
    read_opts(opts, o, "mevb_check_opts");
    CheckOptions co;
    co.kind = str_or(o.kind);
    co.max_age = std::chrono::seconds(o.max_age_seconds);
    co.warning_fraction = o.warning_fraction;
    if (!(co.warning_fraction > 0 && co.warning_fraction <= 1))
      throw invalid("mevb_check_opts.warning_fraction must be in (0, 1]");
    co.warning = std::chrono::seconds(o.warning_seconds);
    co.critical = std::chrono::seconds(o.critical_seconds);
    co.future_skew = std::chrono::seconds(o.future_skew_seconds);
    RunContext ctx = make_context(repo, nullptr, nullptr);
    CheckResult res = check(repo->repo, co, now_or(repo, o.now), ctx);
    if (o.prometheus_file) write_file_atomically(o.prometheus_file, res.prometheus);
    auto rep = std::make_unique<mevb_report>();
    rep->json = res.details.dump(2);
    rep->text = res.summary + "\n";
    rep->status = static_cast<int>(res.status);
    *out = rep.release();
  });
}

int mevb_adopt_opts_init(mevb_adopt_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_adopt_opts MEVB_ADOPT_OPTS_INIT);
}

int mevb_repo_adopt(mevb_repo* repo, const mevb_adopt_opts* opts, mevb_report** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(repo, "repo");
    mevb_adopt_opts o = MEVB_ADOPT_OPTS_INIT;
    read_opts(opts, o, "mevb_adopt_opts");
    AdoptOptions ao;
    ao.dry_run = o.dry_run != 0;
    ao.pg_restore_path = str_or(o.pg_restore_path);
    RunContext ctx = make_context(repo, nullptr, nullptr);
    AdoptResult res = adopt(repo->repo, ao, ctx);
    auto rep = std::make_unique<mevb_report>();
    rep->json = res.to_json().dump(2);
    for (auto& i : res.items)
      rep->text += fmt::format("{} {}: {}\n", ao.dry_run && i.outcome == "adopted" ? "would adopt" : i.outcome, i.key,
                               i.reason);
    rep->text += fmt::format("{} {}, {} damaged, {} foreign\n", ao.dry_run ? "would adopt" : "adopted", res.adopted,
                             res.damaged, res.foreign);
    rep->status = static_cast<int>(res.damaged);
    *out = rep.release();
  });
}

}  // extern "C"

int mevb_repo_rekey(mevb_repo* repo, const char* id_or_latest, const char* kind, const char* source_name,
                    mevb_backup** out) {
  return guard([&] {
    if (out) *out = nullptr;
    require(repo, "repo");
    require(id_or_latest, "id_or_latest");
    RunContext ctx = make_context(repo, nullptr, nullptr);
    RekeyResult res = rekey(repo->repo, id_or_latest, str_or(kind), str_or(source_name), ctx);
    if (out) *out = new_backup(std::move(res.manifest));
  });
}
