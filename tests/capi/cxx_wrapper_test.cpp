// The C++ API (mevbackup.hpp) over the shared library, held to C++17 -pedantic: what a
// caller's callable throws fails the run with its message and commits nothing; failing
// stages and existing keys surface as mevb::Error with the C status; moved-from objects
// hold nothing and are safe to destroy.
#include <mevbackup.hpp>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

int failures = 0;
#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                                   \
    }                                                                               \
  } while (0)

// Runs f, which must throw mevb::Error; returns it (code 0 and an empty message if not).
template <class F>
mevb::Error error_of(F f) {
  try {
    f();
  } catch (const mevb::Error& e) {
    return e;
  }
  std::fprintf(stderr, "expected a mevb::Error, nothing was thrown\n");
  return mevb::Error(MEVB_OK, "");
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string root;

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// A source of `text`, handed out `step` bytes at a time.
mevb::Source text_source(const std::string& text, std::size_t step = 7) {
  auto pos = std::make_shared<std::size_t>(0);
  return mevb::Source::from_callback([text, step, pos](void* buf, std::size_t cap) {
    std::size_t n = std::min({cap, step, text.size() - *pos});
    std::memcpy(buf, text.data() + *pos, n);
    *pos += n;
    return n;
  });
}

mevb::Source endless_source() {
  return mevb::Source::from_callback([](void* buf, std::size_t cap) {
    std::memset(buf, 'e', cap);
    return cap;
  });
}

struct Collected {
  std::string bytes;
  int commits = 0, aborts = 0;
};

// Counts, keeps nothing: for the runs of an endless source.
mevb::Sink counting_sink(Collected& c, std::uint64_t& bytes) {
  return mevb::Sink::from_callbacks([&bytes](const void*, std::size_t size) { bytes += size; },
                                    [&c] { ++c.commits; }, [&c] { ++c.aborts; });
}

mevb::Sink collecting_sink(Collected& c) {
  return mevb::Sink::from_callbacks(
      [&c](const void* data, std::size_t size) { c.bytes.append(static_cast<const char*>(data), size); },
      [&c] { ++c.commits; }, [&c] { ++c.aborts; });
}

void a_throwing_source_fails_the_run_with_its_message_and_aborts_the_sink() {
  std::size_t calls = 0;
  mevb::Source src = mevb::Source::from_callback([&calls](void* buf, std::size_t cap) -> std::size_t {
    if (++calls == 3) throw std::runtime_error("sensor 4 went offline");
    std::memset(buf, 'x', cap < 100 ? cap : 100);
    return cap < 100 ? cap : 100;
  });
  Collected c;
  mevb::Sink sink = collecting_sink(c);
  mevb::Filter obs = mevb::Filter::observer();
  mevb::Error e = error_of([&] { mevb::run(src, {&obs}, sink); });
  CHECK(e.code() == MEVB_ERR_IO);
  CHECK(contains(e.what(), "source (callbacks)"));
  CHECK(contains(e.what(), "sensor 4 went offline"));
  CHECK(c.commits == 0);
  CHECK(c.aborts == 1);
  CHECK(obs.sha256().empty());

  // Into a file: nothing appears under the path.
  const std::string path = root + "/thrown.bin";
  mevb::Source src2 = mevb::Source::from_callback([](void*, std::size_t) -> std::size_t {
    throw std::runtime_error("no more data today");
  });
  mevb::Sink file = mevb::Sink::to_path(path, false);
  e = error_of([&] { mevb::run(src2, {}, file); });
  CHECK(contains(e.what(), "no more data today"));
  CHECK(!exists(path));

  // An exception of no std type still fails the run, and says so.
  mevb::Source src3 = mevb::Source::from_callback([](void*, std::size_t) -> std::size_t { throw 42; });
  Collected c3;
  mevb::Sink sink3 = collecting_sink(c3);
  e = error_of([&] { mevb::run(src3, {}, sink3); });
  CHECK(contains(e.what(), "not a std::exception"));
  CHECK(c3.commits == 0 && c3.aborts == 1);
}

void a_throwing_sink_fails_the_run_with_its_message() {
  mevb::Source src = text_source(std::string(1000, 'a'));
  int aborts = 0;
  mevb::Sink sink = mevb::Sink::from_callbacks(
      [](const void*, std::size_t) { throw std::runtime_error("disk of the caller is full"); }, [] {},
      [&aborts] { ++aborts; });
  mevb::Error e = error_of([&] { mevb::run(src, {}, sink); });
  CHECK(contains(e.what(), "sink (callbacks)"));
  CHECK(contains(e.what(), "disk of the caller is full"));
  CHECK(aborts == 1);

  // commit throwing: the run fails, with the message.
  mevb::Source src2 = text_source("abc");
  mevb::Sink sink2 = mevb::Sink::from_callbacks([](const void*, std::size_t) {},
                                                [] { throw std::runtime_error("refused to commit"); });
  e = error_of([&] { mevb::run(src2, {}, sink2); });
  CHECK(contains(e.what(), "refused to commit"));

  // A mevb::Error thrown by a callable keeps its code.
  mevb::Source src3 = mevb::Source::from_callback([](void*, std::size_t) -> std::size_t {
    throw mevb::Error(MEVB_ERR_PERMISSION, "the caller's token expired");
  });
  Collected c3;
  mevb::Sink sink3 = collecting_sink(c3);
  e = error_of([&] { mevb::run(src3, {}, sink3); });
  CHECK(e.code() == MEVB_ERR_PERMISSION);
  CHECK(contains(e.what(), "the caller's token expired"));
}

void progress_and_cancel_callables_cancel_the_run() {
  Collected c;
  // Asked now and then while the run goes on: a source that never ends stops only by it.
  std::uint64_t bytes = 0;
  mevb::Source src = endless_source();
  mevb::Sink sink = counting_sink(c, bytes);
  mevb::RunOptions opts;
  opts.cancel = [] { return true; };
  mevb::Error e = error_of([&] { mevb::run(src, {}, sink, opts); });
  CHECK(e.code() == MEVB_ERR_CANCELLED);
  CHECK(c.commits == 0 && c.aborts == 1);

  Collected c2;
  mevb::Source src2 = endless_source();
  mevb::Sink sink2 = counting_sink(c2, bytes);
  mevb::RunOptions opts2;
  opts2.cancel = []() -> bool { throw std::runtime_error("the operator pressed stop"); };
  e = error_of([&] { mevb::run(src2, {}, sink2, opts2); });
  CHECK(e.code() == MEVB_ERR_CANCELLED);
  CHECK(contains(e.what(), "the operator pressed stop"));
  CHECK(c2.commits == 0);

  // A run that goes through reports its progress, the last one done, with the stage.
  Collected c3;
  mevb::Source src3 = text_source(std::string(5000, 'q'), 100);
  mevb::Sink sink3 = collecting_sink(c3);
  std::vector<mevb::Progress> seen;
  mevb::RunOptions opts3;
  opts3.stage = "export";
  opts3.chunk_size = 512;
  opts3.progress = [&seen](const mevb::Progress& p) {
    seen.push_back(p);
    return true;
  };
  mevb::run(src3, {}, sink3, opts3);
  CHECK(c3.bytes == std::string(5000, 'q') && c3.commits == 1);
  CHECK(!seen.empty() && seen.back().done && seen.back().bytes_in == 5000 && seen.back().stage == "export");
}

void a_decompressor_given_other_bytes_fails_naming_the_stage() {
  const std::string payload(20000, 'z');
  Collected gz;
  mevb::Source src = text_source(payload, 4096);
  mevb::Filter gzip = mevb::Filter::compressor(mevb::Compression::gzip);
  mevb::Sink sink = collecting_sink(gz);
  mevb::run(src, {&gzip}, sink);
  CHECK(gz.commits == 1 && gz.bytes.size() > 2 && static_cast<unsigned char>(gz.bytes[0]) == 0x1f);

  Collected out;
  mevb::Source back = text_source(gz.bytes, 4096);
  mevb::Filter obs = mevb::Filter::observer();
  mevb::Filter unzstd = mevb::Filter::decompressor(mevb::Compression::zstd);
  mevb::Sink sink2 = collecting_sink(out);
  mevb::Error e = error_of([&] { mevb::run(back, {&obs, &unzstd}, sink2); });
  CHECK(e.code() == MEVB_ERR_CORRUPT);
  CHECK(contains(e.what(), "filter 1 (zstd decompressor)"));
  CHECK(out.commits == 0 && out.aborts == 1);

  // The right codec brings the payload back.
  Collected ok;
  mevb::Source again = text_source(gz.bytes, 4096);
  mevb::Filter ungzip = mevb::Filter::decompressor(mevb::Compression::gzip);
  mevb::Sink sink3 = collecting_sink(ok);
  mevb::run(again, {&ungzip}, sink3);
  CHECK(ok.bytes == payload && ok.commits == 1);

  // A consumed source cannot run again.
  Collected twice;
  mevb::Sink sink4 = collecting_sink(twice);
  e = error_of([&] { mevb::run(again, {}, sink4); });
  CHECK(e.code() == MEVB_ERR_INVALID_ARGUMENT);
}

std::string read_back(mevb::Storage& st, const std::string& key) {
  Collected c;
  mevb::Source src = st.get(key);
  mevb::Sink sink = collecting_sink(c);
  mevb::run(src, {}, sink);
  return c.bytes;
}

void storage_put_of_an_existing_key_fails_and_keeps_the_old_object() {
  mevb::Storage st = mevb::Storage::open(root + "/storage");
  mevb::Source first = text_source("the first version");
  mevb::Sink put = st.put("dir/object.txt");
  mevb::run(first, {}, put);
  CHECK(read_back(st, "dir/object.txt") == "the first version");

  mevb::Source second = text_source("a second version that must not land");
  mevb::Sink put2 = st.put("dir/object.txt");
  mevb::Error e = error_of([&] { mevb::run(second, {}, put2); });
  CHECK(e.code() == MEVB_ERR_EXISTS);
  CHECK(read_back(st, "dir/object.txt") == "the first version");

  mevb::ObjectInfo info = st.stat("dir/object.txt");
  CHECK(info.key == "dir/object.txt" && info.size == std::strlen("the first version") && info.mtime > 0);
  std::vector<mevb::ObjectInfo> all = st.list("dir/");
  CHECK(all.size() == 1 && all[0].key == "dir/object.txt" && all[0].size == info.size);

  CHECK(error_of([&] { st.stat("dir/missing.txt"); }).code() == MEVB_ERR_NOT_FOUND);
  CHECK(error_of([&] { st.get("dir/missing.txt"); }).code() == MEVB_ERR_NOT_FOUND);
  e = error_of([&] { st.put("../escape"); });
  CHECK(e.code() == MEVB_ERR_INVALID_ARGUMENT && std::strlen(e.what()) > 0);
  st.remove("dir/object.txt");
  st.remove("dir/object.txt");  // missing: not an error
  CHECK(st.list().empty());
}

void a_repository_stores_and_gives_back_an_artifact() {
  mevb::Repository repo = mevb::Repository::open(root + "/repo");
  const std::string payload(30000, 'r');
  mevb::Source src = text_source(payload, 1000);
  mevb::ArtifactOptions ao;
  ao.kind = "export";
  ao.name_prefix = "orders";
  ao.compression = mevb::Compression::zstd;
  ao.extension = ".txt";
  mevb::BackupInfo b = repo.put_artifact(src, ao);
  CHECK(b.kind == "export" && b.id.rfind("orders_", 0) == 0 && b.size > 0 && b.sha256.size() == 64);
  CHECK(contains(b.manifest_json, "\"export\""));

  std::vector<mevb::BackupInfo> all = repo.list("export");
  CHECK(all.size() == 1 && all[0].id == b.id);
  CHECK(repo.find("latest", "export").id == b.id);

  Collected out;
  mevb::Sink sink = collecting_sink(out);
  repo.get_artifact(b.id, sink, "export");
  CHECK(out.bytes == payload && out.commits == 1);

  // A throwing source: the put fails with its message, and no backup is listed.
  mevb::Source bad = mevb::Source::from_callback([](void*, std::size_t) -> std::size_t {
    throw std::runtime_error("export query was killed");
  });
  ao.name_prefix = "broken";
  mevb::Error e = error_of([&] { repo.put_artifact(bad, ao); });
  CHECK(contains(e.what(), "export query was killed"));
  CHECK(repo.list("export").size() == 1);

  ao.kind = "Not A Kind";
  mevb::Source src2 = text_source("x");
  e = error_of([&] { repo.put_artifact(src2, ao); });
  CHECK(e.code() == MEVB_ERR_INVALID_ARGUMENT && contains(e.what(), "Not A Kind"));
  CHECK(error_of([&] { repo.find("orders_19990101_000000", "export"); }).code() == MEVB_ERR_NOT_FOUND);
}

mevb::RetentionItem retention_item(const std::string& id, const std::string& created) {
  mevb::RetentionItem i;
  i.id = id;
  i.kind = "db";
  i.created = created;
  return i;
}

void the_retention_policy_decides_per_item_with_reasons() {
  mevb::RetentionPolicy policy;
  policy.rules.keep_last = 2;
  std::vector<mevb::RetentionItem> items = {retention_item("db_2", "2026-11-26T04:00:00Z"),
                                            retention_item("db_1", "2026-11-25T04:00:00Z"),
                                            retention_item("db_3", "2026-11-27T04:00:00Z")};
  mevb::RetentionItem by_epoch = retention_item("db_0", "");
  by_epoch.created_epoch = 1795492800;  // 2026-11-24T04:00:00Z
  items.push_back(by_epoch);
  std::vector<mevb::RetentionDecision> d = policy.apply(items, "2026-11-27T05:00:00Z");
  CHECK(d.size() == 4);
  if (d.size() == 4) {
    CHECK(d[0].id == "db_2" && d[0].keep && contains(d[0].reason, "one of the last 2"));
    CHECK(d[1].id == "db_1" && !d[1].keep && contains(d[1].reason, "matches no keep rule"));
    CHECK(d[2].id == "db_3" && d[2].keep);
    CHECK(d[3].id == "db_0" && !d[3].keep);
  }
  // The same at a time in seconds since the epoch (2026-11-27T05:00:00Z).
  std::vector<mevb::RetentionDecision> d2 = policy.apply(items, std::int64_t{1795755600});
  CHECK(d2.size() == 4 && d2[0].keep && !d2[1].keep);
  CHECK(policy.apply({}, "2026-11-27T05:00:00Z").empty());

  policy.rules.keep_last = 0;
  mevb::Error e = error_of([&] { policy.apply(items, "2026-11-27T05:00:00Z"); });
  CHECK(e.code() == MEVB_ERR_INVALID_ARGUMENT && contains(e.what(), "keep-last must be at least 1"));
  policy.rules.keep_last = 1;
  items[1].id.clear();
  e = error_of([&] { policy.apply(items, "2026-11-27T05:00:00Z"); });
  CHECK(e.code() == MEVB_ERR_INVALID_ARGUMENT && contains(e.what(), "item 1: the id must not be NULL or empty"));
  e = error_of([&] { policy.apply({retention_item("x", "yesterday")}, "2026-11-27T05:00:00Z"); });
  CHECK(e.code() == MEVB_ERR_INVALID_ARGUMENT && contains(e.what(), "yesterday"));
}

void moved_from_objects_are_empty_and_safe_to_destroy() {
  mevb::Source a = text_source("moved bytes");
  mevb::Source b = std::move(a);
  CHECK(!a && a.get() == nullptr && b);
  mevb::Source c;
  c = std::move(b);
  CHECK(!b && c);

  Collected first, second;
  mevb::Sink s1 = collecting_sink(first);
  mevb::Sink s2 = std::move(s1);
  CHECK(!s1 && s2);
  // Assigning over a live callback sink aborts it (and frees its callables after it).
  mevb::Sink s3 = collecting_sink(second);
  s3 = std::move(s2);
  CHECK(second.aborts == 1 && second.commits == 0 && first.aborts == 0);
  mevb::Filter f = mevb::Filter::observer();
  mevb::Filter g = std::move(f);
  CHECK(!f && f.bytes() == 0 && f.sha256().empty());
  mevb::run(c, {&g}, s3);
  CHECK(first.bytes == "moved bytes" && first.commits == 1 && g.bytes() == 11);

  mevb::Storage st = mevb::Storage::open(root + "/moved");
  mevb::Storage st2 = std::move(st);
  CHECK(!st && st2);
  mevb::Repository r = mevb::Repository::open(root + "/moved-repo");
  mevb::Repository r2 = std::move(r);
  CHECK(!r && r2);
  r.cancel();  // on an empty object: nothing to cancel

  // A callback sink keeps its handle: its callables must outlive the C sink.
  Collected third;
  mevb::Sink s4 = collecting_sink(third);
  CHECK(error_of([&] { s4.release(); }).code() == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(s4);
  // A sink without callables gives its handle away.
  mevb::Sink s5 = st2.put("released.bin");
  mevb_sink* raw = s5.release();
  CHECK(raw != nullptr && !s5);
  mevb_sink_free(raw);
  CHECK(st2.list().empty());
}

// The Dumpers and Restorers in C++: a tree as tar, through zstd, extracted elsewhere; a
// hostile member is refused and the target is left as it was.
void a_tree_goes_through_the_tar_source_and_the_extract_sink() {
  std::string src = root + "/tree", dst = root + "/restored";
  CHECK(::mkdir(src.c_str(), 0700) == 0);
  CHECK(::mkdir((src + "/conf.d").c_str(), 0700) == 0);
  {
    FILE* f = std::fopen((src + "/app.conf").c_str(), "w");
    std::fputs("listen = 127.0.0.1\n", f);
    std::fclose(f);
    f = std::fopen((src + "/conf.d/extra.conf").c_str(), "w");
    std::fputs("workers = 4\n", f);
    std::fclose(f);
  }
  mevb_files_source_opts so = MEVB_FILES_SOURCE_OPTS_INIT;
  so.base_dir = src.c_str();
  const char* paths[] = {"app.conf", "conf.d"};
  so.paths = paths;
  so.paths_count = 2;
  mevb::Source tar = mevb::Source::files_tar(so);
  mevb::Filter z = mevb::Filter::compressor(mevb::Compression::zstd);
  mevb::Sink file = mevb::Sink::to_path(root + "/tree.tar.zst", false);
  mevb::run(tar, {&z}, file);

  mevb_extract_sink_opts eo = MEVB_EXTRACT_SINK_OPTS_INIT;
  eo.target = dst.c_str();
  mevb::Source back = mevb::Source::from_path(root + "/tree.tar.zst");
  mevb::Filter unz = mevb::Filter::decompressor(mevb::Compression::zstd);
  mevb::Sink extract = mevb::Sink::extract(eo);
  mevb::run(back, {&unz}, extract);
  CHECK(exists(dst + "/app.conf"));
  CHECK(exists(dst + "/conf.d/extra.conf"));

  mevb_files_source_opts bad = MEVB_FILES_SOURCE_OPTS_INIT;
  mevb::Error e = error_of([&] { mevb::Source::files_tar(bad); });
  CHECK(e.code() == MEVB_ERR_INVALID_ARGUMENT);
}

// age in C++: bytes encrypted to a fresh key come back with its identity; another
// identity fails and commits nothing.
void age_filters_round_trip_and_refuse_a_wrong_identity() {
  char secret[MEVB_AGE_SECRET_SIZE], recipient[MEVB_AGE_RECIPIENT_SIZE];
  char other[MEVB_AGE_SECRET_SIZE], other_recipient[MEVB_AGE_RECIPIENT_SIZE];
  CHECK(mevb_age_generate(secret, sizeof secret, recipient, sizeof recipient) == MEVB_OK);
  CHECK(mevb_age_generate(other, sizeof other, other_recipient, sizeof other_recipient) == MEVB_OK);
  std::string text(200000, 'x');
  for (std::size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>('a' + (i * 7919) % 26);
  std::string sealed;
  mevb::Source src = text_source(text, 4093);
  mevb::Filter enc = mevb::Filter::age_encrypt({recipient});
  mevb::Sink into = mevb::Sink::from_callbacks(
      [&](const void* d, std::size_t n) { sealed.append(static_cast<const char*>(d), n); });
  mevb::run(src, {&enc}, into);
  CHECK(sealed.rfind("age-encryption.org/v1\n", 0) == 0);

  std::string opened;
  bool committed = false;
  mevb::Source back = text_source(sealed, 65536);
  mevb::Filter dec = mevb::Filter::age_decrypt(std::string(secret) + "\n");
  mevb::Sink out = mevb::Sink::from_callbacks(
      [&](const void* d, std::size_t n) { opened.append(static_cast<const char*>(d), n); }, [&] { committed = true; });
  mevb::run(back, {&dec}, out);
  CHECK(committed && opened == text);

  committed = false;
  mevb::Source again = text_source(sealed, 65536);
  mevb::Filter wrong = mevb::Filter::age_decrypt(std::string(other) + "\n");
  mevb::Sink nowhere = mevb::Sink::from_callbacks([](const void*, std::size_t) {}, [&] { committed = true; });
  mevb::Error e = error_of([&] { mevb::run(again, {&wrong}, nowhere); });
  CHECK(e.code() != MEVB_OK && !committed);
  CHECK(!contains(e.what(), other));  // the secret never shows
  CHECK(error_of([] { mevb::Filter::age_encrypt({"age1notarecipient"}); }).code() == MEVB_ERR_INVALID_ARGUMENT);
}

}  // namespace

int main() {
  char tmpl[] = "/tmp/mevb-cxx-XXXXXX";
  if (!mkdtemp(tmpl)) {
    std::perror("mkdtemp");
    return 1;
  }
  root = tmpl;
  try {
    a_throwing_source_fails_the_run_with_its_message_and_aborts_the_sink();
    a_throwing_sink_fails_the_run_with_its_message();
    progress_and_cancel_callables_cancel_the_run();
    a_decompressor_given_other_bytes_fails_naming_the_stage();
    storage_put_of_an_existing_key_fails_and_keeps_the_old_object();
    a_repository_stores_and_gives_back_an_artifact();
    the_retention_policy_decides_per_item_with_reasons();
    moved_from_objects_are_empty_and_safe_to_destroy();
    a_tree_goes_through_the_tar_source_and_the_extract_sink();
    age_filters_round_trip_and_refuse_a_wrong_identity();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "unexpected exception: %s\n", e.what());
    ++failures;
  }
  std::string rm = "rm -rf '" + root + "'";
  if (std::system(rm.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", root.c_str());
  std::printf("%s\n", failures ? "cxx wrapper test: FAILED" : "cxx wrapper test: all checks passed");
  return failures ? 1 : 0;
}
