#include <doctest/doctest.h>

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "../helpers.hpp"
#include "mevbackup/compress.hpp"
#include "mevbackup/digest.hpp"
#include "mevbackup/error.hpp"
#include "mevbackup/maintenance.hpp"
#include "mevbackup/pitr.hpp"
#include "mevbackup/sync.hpp"

using namespace mevbackup;
using namespace mevbackup::pitr;
using testutil::TempDir;

namespace {

constexpr uint64_t k16M = 16ull << 20;

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A minimal ustar archive: (name, content) regular files, "dir/" entries directories.
std::string make_tar(const std::vector<std::pair<std::string, std::string>>& members) {
  std::string out;
  for (auto& [name, data] : members) {
    bool dir = !name.empty() && name.back() == '/';
    char h[512] = {};
    std::snprintf(h, 100, "%s", name.c_str());
    std::snprintf(h + 100, 8, "%07o", dir ? 0700 : 0600);
    std::snprintf(h + 108, 8, "%07o", 0);
    std::snprintf(h + 116, 8, "%07o", 0);
    std::snprintf(h + 124, 12, "%011lo", static_cast<unsigned long>(dir ? 0 : data.size()));
    std::snprintf(h + 136, 12, "%011lo", 1700000000ul);
    h[156] = dir ? '5' : '0';
    std::memcpy(h + 257, "ustar", 6);
    std::memcpy(h + 263, "00", 2);
    std::memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : std::string(h, 512)) sum += c;
    std::snprintf(h + 148, 8, "%06o", sum);
    out.append(h, 512);
    if (!dir) {
      out += data;
      out.append((512 - data.size() % 512) % 512, '\0');
    }
  }
  out.append(1024, '\0');
  return out;
}

std::string gzip(const std::string& s) {
  auto c = make_compressor(Compression::gzip, -1);
  MemorySource src(std::vector<std::byte>(reinterpret_cast<const std::byte*>(s.data()),
                                          reinterpret_cast<const std::byte*>(s.data()) + s.size()));
  MemorySink sink;
  Pipeline(src).then(*c).run(sink);
  return std::string(reinterpret_cast<const char*>(sink.data.data()), sink.data.size());
}

std::string sha(const std::string& s) {
  return Sha256::of(Bytes(reinterpret_cast<const std::byte*>(s.data()), s.size()));
}

// Stores a fake base backup set (base.tar.gz + backup_manifest.gz + the set manifest).
Manifest store_basebackup(Storage& st, const std::string& id, const std::string& stop_time, const std::string& stop_lsn,
                          const std::string& pg_version_text = "15\n", bool write_manifest = true) {
  std::string tar = make_tar({{"global/", ""}, {"PG_VERSION", pg_version_text}, {"global/pg_control", "ctl"},
                              {"pg_tblspc/", ""}, {"postgresql.auto.conf", "# auto\n"}});
  std::string gz = gzip(tar), mf = "{\"PostgreSQL-Backup-Manifest-Version\": 1}\n", mfgz = gzip(mf);
  std::string dir = "basebackup/" + id;
  st.write_small(dir + "/base.tar.gz", gz);
  st.write_small(dir + "/backup_manifest.gz", mfgz);
  Manifest m;
  m.id = id;
  m.kind = "basebackup";
  m.path = dir + "/base.tar.gz";
  m.format = "postgresql-base-backup-tar";
  m.compression = "gzip";
  m.size = gz.size();
  m.sha256 = sha(gz);
  m.payload_size = tar.size();
  m.payload_sha256 = sha(tar);
  m.started_at = stop_time.substr(0, 19) + "Z";
  m.finished_at = m.started_at;
  m.source_name = "basebackup";
  m.source = {{"start_lsn", "0/2000028"},
              {"start_timeline", 1},
              {"start_segment", "000000010000000000000002"},
              {"stop_lsn", stop_lsn},
              {"stop_timeline", 1},
              {"stop_segment", wal_segment_name(1, parse_lsn(stop_lsn), k16M)},
              {"stop_time", stop_time},
              {"wal_segment_size", k16M},
              {"server_version_num", 150000},
              {"files",
               {{{"name", "base.tar"},
                 {"path", m.path},
                 {"size", gz.size()},
                 {"sha256", sha(gz)},
                 {"payload_size", tar.size()},
                 {"payload_sha256", sha(tar)}},
                {{"name", "backup_manifest"},
                 {"path", dir + "/backup_manifest.gz"},
                 {"size", mfgz.size()},
                 {"sha256", sha(mfgz)},
                 {"payload_size", mf.size()},
                 {"payload_sha256", sha(mf)}}}}};
  if (write_manifest) st.write_small(m.key(), m.to_string());
  return m;
}

}  // namespace

TEST_CASE("LSN and WAL segment arithmetic (16 MiB and other segment sizes)") {
  CHECK(parse_lsn("0/3000060") == 0x3000060ull);
  CHECK(parse_lsn("16/B374D848") == 0x16B374D848ull);
  CHECK(format_lsn(0x16B374D848ull) == "16/B374D848");
  CHECK_THROWS_AS(parse_lsn("3000060"), Error);
  CHECK_THROWS_AS(parse_lsn("0/xyz"), Error);
  CHECK(wal_segment_name(1, parse_lsn("0/3000060"), k16M) == "000000010000000000000003");
  // 256 segments of 16 MiB per "xlogid": 1/0 is segment 0x100.
  CHECK(wal_segment_name(2, parse_lsn("1/FF000000"), k16M) == "0000000200000001000000FF");
  CHECK(wal_segment_number("0000000200000001000000FF", k16M) == 0x1FF);
  CHECK(wal_segment_name_from_number(2, 0x200, k16M) == "000000020000000200000000");
  // 1 GiB segments: 4 per xlogid.
  CHECK(wal_segment_name(1, parse_lsn("2/C0000000"), 1ull << 30) == "000000010000000200000003");
  CHECK_THROWS_AS(wal_segment_number("000000010000000200000004", 1ull << 30), Error);
  CHECK(parse_wal_segment_size("16MB") == k16M);
  CHECK(parse_wal_segment_size("1GB") == 1ull << 30);
  CHECK(parse_wal_segment_size("16777216") == k16M);
  CHECK_THROWS_AS(parse_wal_segment_size("3MB"), Error);
  CHECK_THROWS_AS(wal_segment_name(1, 0, 1000), Error);
}

TEST_CASE("WAL continuity: gaps between the start segment and the newest archived one") {
  std::vector<std::string> a = {"000000010000000000000001", "000000010000000000000002", "000000010000000000000003",
                                "000000010000000000000005", "000000010000000000000006", "000000010000000000000009",
                                "000000020000000000000007", "00000001.history"};
  auto c = wal_continuity_of(a, 1, parse_lsn("0/2000028"), k16M);
  CHECK(c.first_segment == "000000010000000000000002");
  CHECK(c.newest_segment == "000000010000000000000009");
  REQUIRE(c.gaps.size() == 2);
  CHECK(c.gaps[0].first == "000000010000000000000004");
  CHECK(c.gaps[0].last == "000000010000000000000004");
  CHECK(c.gaps[1].first == "000000010000000000000007");
  CHECK(c.gaps[1].last == "000000010000000000000008");
  // The start segment itself missing is a gap too; nothing archived is "no newest".
  auto d = wal_continuity_of({"000000010000000000000003"}, 1, parse_lsn("0/2000028"), k16M);
  REQUIRE(d.gaps.size() == 1);
  CHECK(d.gaps[0].first == "000000010000000000000002");
  CHECK(wal_continuity_of({}, 1, 0, k16M).newest_segment.empty());
  // Across an xlogid boundary.
  auto e = wal_continuity_of({"0000000100000000000000FF", "000000010000000100000000"}, 1, parse_lsn("0/FF000000"), k16M);
  CHECK(e.gaps.empty());
}

TEST_CASE("recovery settings: quoting and target times") {
  CHECK(conf_quote("it's") == "'it''s'");
  CHECK_THROWS_AS(conf_quote("a\nb"), Error);
  CHECK(restore_command_word("/repo 100%/it's") == "'/repo 100%%/it'\\''s'");
  auto t = parse_target_time("2026-11-27 07:50:00.123456+00");
  CHECK(t == parse_target_time("2026-11-27T09:50:00.123456+02:00"));
  CHECK(t == parse_target_time("2026-11-27T07:50:00.123456Z"));
  CHECK(parse_target_time("2026-11-27 07:50:00-0130") == parse_target_time("2026-11-27 09:20:00Z"));
  CHECK_THROWS_AS(parse_target_time("2026-11-27 07:50:00"), Error);  // no zone: ambiguous
  CHECK_THROWS_AS(parse_target_time("yesterday"), Error);
}

TEST_CASE("catalog: a base backup set is one backup; without its manifest, its parts are incomplete") {
  TempDir d;
  auto repo = Repository(make_local_storage(d.path()));
  Manifest good = store_basebackup(repo.storage(), "basebackup_20261127_070000", "2026-11-27T07:00:05.000000Z", "0/2000100");
  store_basebackup(repo.storage(), "basebackup_20261127_080000", "2026-11-27T08:00:05.000000Z", "0/5000100", "15\n", false);
  Catalog cat = repo.catalog();
  REQUIRE(cat.backups.size() == 1);
  CHECK(cat.backups[0].manifest.id == good.id);
  CHECK(cat.incomplete.size() == 2);  // the interrupted set's two parts
  for (auto& o : cat.incomplete) CHECK(o.key.rfind("basebackup/basebackup_20261127_080000/", 0) == 0);
  CHECK(repo.list("basebackup").size() == 1);
  CHECK(good.extra_paths() == std::vector<std::string>{"basebackup/basebackup_20261127_070000/backup_manifest.gz"});
  // verify re-reads every part (the WAL check fails: nothing is archived here).
  VerifyOptions vo;
  vo.record = false;
  auto v = verify(repo, good.id, vo, {});
  REQUIRE(v.size() == 1);
  CHECK_FALSE(v[0].verification.ok);
  CHECK(v[0].verification.message.find("does not reach") != std::string::npos);
  // sync copies every part, then the manifest.
  TempDir d2;
  auto copy = Repository(make_local_storage(d2.path()));
  auto sr = sync_repositories(repo, copy, "basebackup", {});
  CHECK(sr.copied == std::vector<std::string>{good.id});
  CHECK(copy.storage().stat("basebackup/basebackup_20261127_070000/backup_manifest.gz"));
  CHECK(copy.list("basebackup").size() == 1);
  // remove_backup takes every part with it.
  repo.remove_backup(good);
  CHECK(repo.storage().list("basebackup/basebackup_20261127_070000/").empty());
}

TEST_CASE("restore pitr: picks the base backup before the target, unpacks it, writes the recovery settings") {
  TempDir d;
  auto repo = Repository(make_local_storage(d.path() + "/repo"));
  store_basebackup(repo.storage(), "basebackup_20261127_070000", "2026-11-27T07:00:05.000000Z", "0/2000100", "first\n");
  store_basebackup(repo.storage(), "basebackup_20261127_080000", "2026-11-27T08:00:05.000000Z", "0/5000100", "second\n");

  PitrRestoreOptions o;
  o.repo_url = d.path() + "/repo";
  o.mevbackup_path = "/opt/mev backup/bin/mevbackup";
  o.settings = {{"port", "5544"}};

  SUBCASE("a target time between the two backups takes the first") {
    o.data_dir = d.path() + "/data";
    o.target_time = "2026-11-27 07:30:00+00";
    auto r = restore_pitr(repo, o, {});
    CHECK(r.backup.id == "basebackup_20261127_070000");
    CHECK(read_file(o.data_dir + "/PG_VERSION") == "first\n");
    CHECK(read_file(o.data_dir + "/global/pg_control") == "ctl");
    CHECK(read_file(o.data_dir + "/backup_manifest").find("PostgreSQL-Backup-Manifest") != std::string::npos);
    struct stat st {};
    REQUIRE(::stat(o.data_dir.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    CHECK(::stat((o.data_dir + "/recovery.signal").c_str(), &st) == 0);
    std::string conf = read_file(o.data_dir + "/postgresql.auto.conf");
    CHECK(conf.rfind("# auto\n", 0) == 0);
    CHECK(conf.find("restore_command = '''/opt/mev backup/bin/mevbackup'' wal-fetch --repo ''" + o.repo_url +
                    "'' %f %p'") != std::string::npos);
    CHECK(conf.find("recovery_target_time = '2026-11-27 07:30:00.000000+00'") != std::string::npos);
    CHECK(conf.find("recovery_target_action = 'promote'") != std::string::npos);
    CHECK(conf.find("port = '5544'") != std::string::npos);
    CHECK(r.summary.find("pg_ctl") != std::string::npos);
  }
  SUBCASE("no target: the newest; an LSN target compares stop LSNs") {
    o.data_dir = d.path() + "/data";
    CHECK(restore_pitr(repo, o, {}).backup.id == "basebackup_20261127_080000");
    CHECK(read_file(o.data_dir + "/postgresql.auto.conf").find("recovery_target") == std::string::npos);
    o.data_dir = d.path() + "/data2";
    o.target_lsn = "0/4000000";
    CHECK(restore_pitr(repo, o, {}).backup.id == "basebackup_20261127_070000");
  }
  SUBCASE("a target before every backup: not_found, nothing created") {
    o.data_dir = d.path() + "/data";
    o.target_time = "2026-11-27 06:00:00Z";
    try {
      restore_pitr(repo, o, {});
      FAIL("expected an error");
    } catch (const Error& e) {
      CHECK(e.code() == Code::not_found);
    }
    CHECK_FALSE(std::filesystem::exists(o.data_dir));
  }
  SUBCASE("a non-empty data directory is refused and left alone") {
    o.data_dir = d.path() + "/data";
    std::filesystem::create_directory(o.data_dir);
    std::ofstream(o.data_dir + "/keep") << "x";
    try {
      restore_pitr(repo, o, {});
      FAIL("expected an error");
    } catch (const Error& e) {
      CHECK(e.code() == Code::not_empty);
    }
    CHECK(read_file(o.data_dir + "/keep") == "x");
  }
  SUBCASE("a stored archive that does not match its manifest: corrupt, and the directory is emptied") {
    std::string key = "basebackup/basebackup_20261127_080000/base.tar.gz";
    std::string other = gzip(make_tar({{"PG_VERSION", "evil\n"}}));
    repo.storage().remove(key);
    repo.storage().write_small(key, other);
    o.data_dir = d.path() + "/data";
    try {
      restore_pitr(repo, o, {});
      FAIL("expected an error");
    } catch (const Error& e) {
      CHECK(e.code() == Code::corrupt);
    }
    CHECK_FALSE(std::filesystem::exists(o.data_dir));
  }
}

TEST_CASE("prune: WAL older than the oldest base backup kept is removed, history files stay") {
  TempDir d;
  auto repo = Repository(make_local_storage(d.path()));
  Storage& st = repo.storage();
  Manifest older = store_basebackup(st, "basebackup_20261120_070000", "2026-11-20T07:00:05.000000Z", "0/2000100");
  Manifest newer = store_basebackup(st, "basebackup_20261127_070000", "2026-11-27T07:00:05.000000Z", "0/5000100");
  // The newer backup starts in segment 5.
  newer.source["start_segment"] = "000000010000000000000005";
  newer.source["start_lsn"] = "0/5000028";
  st.remove(newer.key());
  st.write_small(newer.key(), newer.to_string());
  for (int i = 1; i <= 6; ++i) {
    std::string seg = fmt::format("0000000100000000000000{:02X}", i);
    st.write_small("wal/00000001/" + seg + ".gz", "x");
    st.write_small("wal/00000001/" + seg + ".sha256", "y\n");
  }
  st.write_small("wal/00000002/00000002.history.gz", "h");
  st.write_small("wal/00000001/000000010000000000000002.00000028.backup.gz", "b");

  PruneOptions po;
  po.policy.keep_last = 1;
  po.dry_run = true;
  prune(repo, po, parse_rfc3339("2026-11-28T00:00:00Z"), {});
  CHECK(st.stat("wal/00000001/000000010000000000000001.gz"));  // dry run: nothing removed
  po.dry_run = false;
  auto res = prune(repo, po, parse_rfc3339("2026-11-28T00:00:00Z"), {});
  CHECK(res.deleted == 1);
  CHECK(repo.list("basebackup").size() == 1);
  for (int i = 1; i <= 4; ++i) {
    std::string seg = fmt::format("0000000100000000000000{:02X}", i);
    CHECK_FALSE(st.stat("wal/00000001/" + seg + ".gz"));
    CHECK_FALSE(st.stat("wal/00000001/" + seg + ".sha256"));
  }
  CHECK_FALSE(st.stat("wal/00000001/000000010000000000000002.00000028.backup.gz"));
  CHECK(st.stat("wal/00000001/000000010000000000000005.gz"));
  CHECK(st.stat("wal/00000001/000000010000000000000006.sha256"));
  CHECK(st.stat("wal/00000002/00000002.history.gz"));
  // The older set's parts are gone with it.
  CHECK(st.list("basebackup/basebackup_20261120_070000/").empty());
  (void)older;
}

namespace {

// Adds a tablespace part (<oid>.tar.gz) recorded at `location` to a stored base backup.
Manifest add_tablespace(Storage& st, Manifest m, const std::string& oid, const std::string& location) {
  std::string tar = make_tar({{"PG_15_202209061/", ""}, {"PG_15_202209061/16390", "tablespace rows"}});
  std::string gz = gzip(tar);
  std::string key = "basebackup/" + m.id + "/" + oid + ".tar.gz";
  st.write_small(key, gz);
  nlohmann::json f = {{"name", oid + ".tar"},          {"path", key},
                      {"size", gz.size()},             {"sha256", sha(gz)},
                      {"payload_size", tar.size()},    {"payload_sha256", sha(tar)},
                      {"tablespace_oid", oid},         {"tablespace_location", location}};
  auto& files = m.source["files"];
  files.insert(files.begin() + 1, f);
  st.remove(m.key());
  st.write_small(m.key(), m.to_string());
  return m;
}

}  // namespace

TEST_CASE("restore pitr: a tablespace goes only where the caller says, never to the manifest's location unasked") {
  TempDir d;
  auto repo = Repository(make_local_storage(d.path() + "/repo"));
  Manifest m = store_basebackup(repo.storage(), "basebackup_20261127_070000", "2026-11-27T07:00:05.000000Z", "0/2000100");
  std::string recorded = d.path() + "/chosen-by-the-manifest";
  add_tablespace(repo.storage(), m, "16389", recorded);
  PitrRestoreOptions o;
  o.repo_url = d.path() + "/repo";
  o.data_dir = d.path() + "/data";

  SUBCASE("no mapping: refused before anything is created") {
    try {
      restore_pitr(repo, o, {});
      FAIL("expected an error");
    } catch (const Error& e) {
      CHECK(e.code() == Code::invalid_argument);
      CHECK(std::string(e.what()).find("16389 (originally " + recorded + ")") != std::string::npos);
      CHECK(std::string(e.what()).find("--tablespace-map") != std::string::npos);
    }
    CHECK_FALSE(std::filesystem::exists(recorded));
    CHECK_FALSE(std::filesystem::exists(o.data_dir));
  }
  SUBCASE("a mapping to a new directory: unpacked there, linked from pg_tblspc") {
    o.tablespace_map["16389"] = d.path() + "/ts";
    restore_pitr(repo, o, {});
    CHECK(read_file(d.path() + "/ts/PG_15_202209061/16390") == "tablespace rows");
    CHECK(std::filesystem::read_symlink(o.data_dir + "/pg_tblspc/16389").string() == d.path() + "/ts");
    CHECK_FALSE(std::filesystem::exists(recorded));
  }
  SUBCASE("OID=original confirms the recorded location") {
    o.tablespace_map["16389"] = kTablespaceOriginal;
    restore_pitr(repo, o, {});
    CHECK(read_file(recorded + "/PG_15_202209061/16390") == "tablespace rows");
  }
}

TEST_CASE("base backup manifest: part paths stay in the set's directory, names are the ones a backup writes") {
  TempDir d;
  auto st = make_local_storage(d.path());
  Manifest m = store_basebackup(*st, "basebackup_20261127_070000", "2026-11-27T07:00:05.000000Z", "0/2000100");
  CHECK(basebackup_parts(m).size() == 2);
  auto refused = [&](const Manifest& bad, const std::string& words) {
    try {
      basebackup_parts(bad);
      FAIL("expected an error");
    } catch (const Error& e) {
      CHECK(e.code() == Code::corrupt);
      CHECK(std::string(e.what()).find(words) != std::string::npos);
    }
  };
  Manifest bad = m;
  bad.source["files"][1]["path"] = "database/mev_protection_20261127_020000.dump.gz";
  refused(bad, "its path is not basebackup/basebackup_20261127_070000/backup_manifest.gz");
  bad = m;
  bad.source["files"][1]["path"] = "basebackup/basebackup_20261127_070000/../../etc/shadow";
  refused(bad, "its path is not");
  bad = m;
  bad.source["files"][1]["name"] = "../postgresql.conf";
  refused(bad, "not a part a base backup holds");
  bad = m;
  bad.source["files"][1]["name"] = "1/2.tar";
  bad.source["files"][1]["tablespace_oid"] = "1/2";
  refused(bad, "is not a number");
  bad = m;
  bad.source["files"][1] = bad.source["files"][0];
  refused(bad, "lists \"base.tar\" twice");
  bad = m;
  bad.id = "x\nrestore_command = 'sh -c evil'";
  refused(bad, "is not a backup id");
}

TEST_CASE("backup ids: [A-Za-z0-9_.-] only, from a manifest or from the user") {
  CHECK(valid_backup_id("basebackup_20261127_070000"));
  CHECK(valid_backup_id("mev_protection_20261127_020000_1"));
  CHECK(valid_backup_id("a.b-c"));
  CHECK(valid_backup_id(std::string(255, 'a')));
  for (const std::string& bad : std::vector<std::string>{"", ".", "..", ".hidden", "a/b", "a\nb", "a b", "a'b", std::string(256, 'a')})
    CHECK_FALSE(valid_backup_id(bad));

  TempDir d;
  auto repo = Repository(make_local_storage(d.path() + "/repo"));
  Manifest m = store_basebackup(repo.storage(), "basebackup_20261127_070000", "2026-11-27T07:00:05.000000Z", "0/2000100");
  // A forged manifest whose id would inject a setting into postgresql.auto.conf.
  nlohmann::json j = m.to_json();
  j["id"] = "basebackup_20261127_070000\nrestore_command = 'touch /tmp/owned'";
  CHECK_THROWS_AS(Manifest::from_json(j, "forged"), Error);
  repo.storage().remove(m.key());
  repo.storage().write_small(m.key(), j.dump());
  PitrRestoreOptions o;
  o.repo_url = d.path() + "/repo";
  o.data_dir = d.path() + "/data";
  try {
    restore_pitr(repo, o, {});
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::not_found);  // the catalog does not count it as a backup
  }
  CHECK_FALSE(std::filesystem::exists(o.data_dir));
  o.backup_id = "../database";
  try {
    restore_pitr(repo, o, {});
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::invalid_argument);
    CHECK(std::string(e.what()).find("\"../database\" is not a backup id") != std::string::npos);
  }
}
