#include <doctest/doctest.h>

#include <archive.h>
#include <archive_entry.h>
#include <linux/filter.h>
#include <pwd.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <zlib.h>

#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "../helpers.hpp"
#include "files/files_common.hpp"

using namespace mevbackup;
using testutil::files_under;
using testutil::FixedClock;
using testutil::mode_of;
using testutil::random_bytes;
using testutil::slurp;
using testutil::TempDir;
namespace fsys = std::filesystem;

namespace {

void write_file(const std::string& path, const std::string& data, mode_t mode = 0644) {
  fsys::create_directories(fsys::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << data;
  ::chmod(path.c_str(), mode);
}

// A small service tree: files, a nested directory, a symlink, an empty file, a secret.
void make_tree(const std::string& root, size_t big = 200000) {
  write_file(root + "/docker-compose.yml", "services: {}\n");
  write_file(root + "/nginx/nginx.conf", "worker_processes 2;\n", 0640);
  write_file(root + "/nginx/conf.d/api.conf", "location / {}\n");
  write_file(root + "/empty", "");
  write_file(root + "/big.bin", testutil::to_string(random_bytes(big, 7, false)));
  write_file(root + "/.env", "PASSWORD=hunter2\n", 0600);
  ::symlink("nginx/nginx.conf", (root + "/current.conf").c_str());
}

std::vector<std::byte> gunzip_file(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  REQUIRE(f);
  std::vector<std::byte> out;
  char buf[65536];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0)
    out.insert(out.end(), reinterpret_cast<std::byte*>(buf), reinterpret_cast<std::byte*>(buf) + n);
  gzclose(f);
  return out;
}

struct TarMember {
  std::string name;
  char kind;  // 'f' file, 'd' dir, 's' symlink, 'h' hard link
  std::string arg;
};

// A tar made with libarchive, as a hostile user could make it.
std::vector<std::byte> make_tar(const std::vector<TarMember>& members) {
  std::vector<char> buf(1 << 20);
  size_t used = 0;
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  REQUIRE(archive_write_open_memory(a, buf.data(), buf.size(), &used) == ARCHIVE_OK);
  for (auto& m : members) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, m.name.c_str());
    archive_entry_set_mtime(e, 1700000000, 0);
    archive_entry_set_perm(e, m.kind == 'd' ? 0755 : 0644);
    if (m.kind == 'f') {
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_size(e, static_cast<la_int64_t>(m.arg.size()));
    } else if (m.kind == 'd') {
      archive_entry_set_filetype(e, AE_IFDIR);
    } else if (m.kind == 's') {
      archive_entry_set_filetype(e, AE_IFLNK);
      archive_entry_set_symlink(e, m.arg.c_str());
    } else {
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_hardlink(e, m.arg.c_str());
    }
    REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
    if (m.kind == 'f') archive_write_data(a, m.arg.data(), m.arg.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  auto* p = reinterpret_cast<std::byte*>(buf.data());
  return std::vector<std::byte>(p, p + used);
}

Manifest plant(Repository& repo, std::vector<std::byte> tar) {
  MemorySource src(std::move(tar));
  ArtifactSpec spec;
  spec.kind = "files";
  spec.dir = "config";
  spec.name_prefix = "hostile";
  spec.extension = ".tar";
  spec.format = "tar-pax";
  return repo.publish(src, spec, {}, nullptr);
}

// Everything below `dir`: directories, files and links, with link targets.
std::vector<std::string> tree(const std::string& dir) {
  std::vector<std::string> out;
  if (!fsys::exists(fsys::symlink_status(dir))) return out;
  for (auto& e : fsys::recursive_directory_iterator(dir)) {
    std::string rel = fsys::relative(e.path(), dir).string();
    if (e.is_symlink()) rel += " -> " + fsys::read_symlink(e.path()).string();
    else if (e.is_regular_file()) rel += " = " + slurp(e.path().string());
    out.push_back(rel);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("exclude patterns: last component, whole name, directories only") {
  using files::pattern_matches;
  CHECK(pattern_matches(".env", ".env", false));
  CHECK(pattern_matches(".env", "app/.env", false));
  CHECK_FALSE(pattern_matches(".env", "app/.envrc", false));
  CHECK(pattern_matches(".env.*", "app/.env.production", false));
  CHECK(pattern_matches("*.key", "nginx/ssl/server.key", false));
  CHECK(pattern_matches("id_rsa*", "home/.ssh2/id_rsa.pub", false));
  CHECK(pattern_matches("secrets/", "run/secrets", true));
  CHECK_FALSE(pattern_matches("secrets/", "run/secrets", false));
  CHECK(pattern_matches("nginx/*.conf", "nginx/a.conf", false));
  CHECK_FALSE(pattern_matches("nginx/*.conf", "x/nginx/a.conf", false));
  CHECK(pattern_matches("./nginx/*.conf", "nginx/a.conf", false));
  auto& d = default_secret_excludes();
  CHECK(std::find(d.begin(), d.end(), "*.pem") != d.end());
  CHECK(std::find(d.begin(), d.end(), "*.p12") != d.end());
}

TEST_CASE("files round trip through the repository with any chunk size") {
  for (size_t chunk : {size_t(1), size_t(7), size_t(4096), size_t(1) << 20}) {
    CAPTURE(chunk);
    TempDir dir;
    make_tree(dir / "src", chunk < 100 ? 3000 : 300000);
    FixedClock clock("2026-11-27T02:00:00Z");
    Repository repo(make_local_storage(dir / "repo"), clock);
    RunContext ctx;
    ctx.pipeline.chunk_size = chunk;
    FilesBackupOptions bo;
    bo.base_dir = dir / "src";
    bo.paths = {"docker-compose.yml", "nginx", "empty", "big.bin", "current.conf", ".env"};
    Manifest m = backup_files(repo, bo, ctx);
    CHECK(m.path == "config/config_20261127_020000.tar.gz");
    CHECK(m.kind == "files");
    CHECK(m.source["excluded"] == nlohmann::json::array({".env"}));
    CHECK(files::load_member_list(repo.storage(), m, {})->size() == 8);
    std::string payload = testutil::to_string(gunzip_file(dir / "repo/" + m.path));
    CHECK(payload.find("hunter2") == std::string::npos);
    CHECK(payload.size() % 512 == 0);

    FilesRestoreOptions ro;
    ro.target = dir / "out";
    auto actions = restore_files(repo, m, ro, ctx);
    CHECK(actions.size() == 8);
    for (auto& a : actions) CHECK(a.action == "create");
    CHECK(slurp(dir / "out/big.bin") == slurp(dir / "src/big.bin"));
    CHECK(slurp(dir / "out/nginx/conf.d/api.conf") == "location / {}\n");
    CHECK(mode_of(dir / "out/nginx/nginx.conf") == 0640);
    CHECK(fsys::read_symlink(dir / "out/current.conf") == "nginx/nginx.conf");
    CHECK(fsys::file_size(dir / "out/empty") == 0);
    CHECK_FALSE(fsys::exists(dir / "out/.env"));
  }
}

TEST_CASE("a member that does not match its manifest entry is corrupt, and nothing is restored") {
  TempDir dir;
  make_tree(dir / "src", 1000);
  Repository repo(make_local_storage(dir / "repo"));
  FilesBackupOptions bo;
  bo.base_dir = dir / "src";
  bo.paths = {"nginx"};
  Manifest m = backup_files(repo, bo, {});
  Manifest tampered = m;  // an entry of the inline format (older manifests) tampered
  tampered.source["members"] = *files::load_member_list(repo.storage(), m, {});
  tampered.source.erase("member_list");
  for (auto& mm : tampered.source["members"])
    if (mm["name"] == "nginx/nginx.conf") mm["sha256"] = std::string(64, '0');
  FilesRestoreOptions ro;
  ro.target = dir / "out";
  try {
    restore_files(repo, tampered, ro, {});
    FAIL("restore of a tampered manifest succeeded");
  } catch (const Error& e) {
    CHECK(e.code() == Code::corrupt);
    CHECK(std::string(e.what()).find("nginx/nginx.conf") != std::string::npos);
  }
  CHECK_FALSE(fsys::exists(dir / "out"));
  CHECK(files_under(dir.path()).size() == files_under(dir / "src").size() + 3);  // artifact, member list, manifest: no staging left
}

TEST_CASE("hostile archives are refused before anything reaches the target") {
  struct Case {
    const char* what;
    std::vector<TarMember> members;
  };
  std::vector<Case> cases = {
      {"dot-dot", {{"ok", 'f', "x"}, {"../evil", 'f', "x"}}},
      {"absolute", {{"/tmp/mevb-evil-absolute", 'f', "x"}}},
      {"symlink out, then a file through it", {{"l", 's', "/tmp"}, {"l/mevb-evil", 'f', "x"}}},
      {"relative symlink out", {{"l", 's', "../../../etc"}}},
      {"climbing after a name", {{"d", 'd', ""}, {"d/s", 's', "."}, {"d/t", 's', "s/../.."}}},
      {"file through an inside symlink", {{"d", 'd', ""}, {"d/s", 's', "."}, {"d/s/f", 'f', "x"}}},
      {"hard link outside", {{"h", 'h', "../outside/victim"}}},
      {"hard link absolute", {{"h", 'h', "/etc/passwd"}}},
      {"duplicate", {{"a", 'f', "x"}, {"a", 'f', "y"}}},
      {"a file, then a member below it", {{"a", 'f', "x"}, {"a/b", 'f', "y"}}},
      {"a symlink inside, then a member below it", {{"d", 'd', ""}, {"l", 's', "d"}, {"l/b", 'f', "y"}}},
  };
  for (auto& c : cases) {
    CAPTURE(c.what);
    TempDir dir;
    write_file(dir / "outside/victim", "original");
    write_file(dir / "target/keep", "keep");
    Repository repo(make_local_storage(dir / "repo"));
    Manifest m = plant(repo, make_tar(c.members));
    auto before = tree(dir.path());
    for (bool dry : {false, true}) {
      FilesRestoreOptions ro;
      ro.target = dir / "target";
      ro.dry_run = dry;
      try {
        restore_files(repo, m, ro, {});
        FAIL("hostile archive accepted");
      } catch (const Error& e) {
        CHECK(e.code() == Code::restore_failed);
        CHECK(std::string(e.what()).find("refusing archive member") != std::string::npos);
      }
      CHECK(tree(dir.path()) == before);
    }
    CHECK_FALSE(fsys::exists("/tmp/mevb-evil-absolute"));
    CHECK_FALSE(fsys::exists("/tmp/mevb-evil"));
  }
}

TEST_CASE("cancelling a restore leaves the target as it was") {
  TempDir dir;
  make_tree(dir / "src", 4 << 20);
  Repository repo(make_local_storage(dir / "repo"));
  FilesBackupOptions bo;
  bo.base_dir = dir / "src";
  bo.paths = {"."};
  Manifest m = backup_files(repo, bo, {});
  write_file(dir / "target/keep", "keep");
  auto before = tree(dir / "target");
  CancelToken cancel;
  RunContext ctx;
  ctx.cancel = &cancel;
  ctx.pipeline.chunk_size = 4096;
  ctx.pipeline.progress_interval = std::chrono::milliseconds(0);
  ctx.progress = [](const Progress& p) { return p.bytes_out < 100000; };
  FilesRestoreOptions ro;
  ro.target = dir / "target";
  CHECK_THROWS_AS(restore_files(repo, m, ro, ctx), Error);
  CHECK(tree(dir / "target") == before);
  for (auto& e : fsys::directory_iterator(dir.path()))
    CHECK(e.path().filename().string().find(".mevb-") == std::string::npos);

  // And a cancelled backup leaves nothing in the repository.
  cancel.reset();
  auto n = files_under(dir / "repo").size();
  ctx.progress = [](const Progress& p) { return p.bytes_in < 100000; };
  CHECK_THROWS_AS(backup_files(repo, bo, ctx), Error);
  CHECK(files_under(dir / "repo").size() == n);
}

TEST_CASE("without unshare(CLONE_FS) the restore still works and stays safe") {
  // Where a seccomp profile forbids unshare (Docker's default), names are prefixed with
  // the staging directory instead. Run in a child with such a filter.
  TempDir dir;
  make_tree(dir / "src", 5000);
  Repository repo(make_local_storage(dir / "repo"));
  FilesBackupOptions bo;
  bo.base_dir = dir / "src";
  bo.paths = {"nginx", "current.conf", "big.bin"};
  Manifest good = backup_files(repo, bo, {});
  Manifest bad = plant(repo, make_tar({{"l", 's', "."}, {"l/x", 'f', "x"}}));
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_unshare, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
      _exit(10);
    int rc = 0;
    bool fallback_logged = false;
    try {
      RunContext ctx;
      ctx.log = [&](LogLevel, const std::string& msg) {
        if (msg.find("unshare") != std::string::npos) fallback_logged = true;
      };
      FilesRestoreOptions ro;
      ro.target = dir / "out";
      restore_files(repo, good, ro, ctx);
      if (slurp(dir / "out/big.bin") != slurp(dir / "src/big.bin")) rc |= 1;
      if (fsys::read_symlink(dir / "out/current.conf") != "nginx/nginx.conf") rc |= 2;
      if (!fallback_logged) rc |= 4;
      ro.target = dir / "out2";
      try {
        restore_files(repo, bad, ro, ctx);
        rc |= 8;
      } catch (const Error& e) {
        if (e.code() != Code::restore_failed) rc |= 16;
      }
      if (fsys::exists(dir / "out2")) rc |= 32;
    } catch (...) {
      rc |= 64;
    }
    _exit(rc);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("backup errors name the path") {
  TempDir dir;
  make_tree(dir / "src", 10);
  Repository repo(make_local_storage(dir / "repo"));
  FilesBackupOptions bo;
  bo.base_dir = dir / "src";
  bo.paths = {"nginx", "missing.yml"};
  try {
    backup_files(repo, bo, {});
    FAIL("missing path accepted");
  } catch (const Error& e) {
    CHECK(e.code() == Code::not_found);
    CHECK(std::string(e.what()).find("missing.yml") != std::string::npos);
  }
  bo.ignore_missing = true;
  Manifest m = backup_files(repo, bo, {});
  CHECK(m.source["missing"] == nlohmann::json::array({"missing.yml"}));
  bo.paths = {dir / "elsewhere"};
  CHECK_THROWS_AS(backup_files(repo, bo, {}), Error);
  bo.paths = {dir / "src/nginx/nginx.conf"};  // absolute inside the base: fine
  Manifest m2 = backup_files(repo, bo, {});
  CHECK((*files::load_member_list(repo.storage(), m2, {}))[0]["name"] == "nginx/nginx.conf");
  ::symlink("../../outside", (dir / "src/nginx/up").c_str());
  bo.paths = {"nginx"};
  try {
    backup_files(repo, bo, {});
    FAIL("a link leading outside was stored");
  } catch (const Error& e) {
    CHECK(e.code() == Code::invalid_argument);
    CHECK(std::string(e.what()).find("nginx/up") != std::string::npos);
  }
  bo.excludes = {"up"};
  CHECK(backup_files(repo, bo, {}).source["excluded"] == nlohmann::json::array({"nginx/up"}));
  bo.excludes = {};
  bo.paths = {".env"};
  bo.ignore_missing = false;
  CHECK_THROWS_AS(backup_files(repo, bo, {}), Error);  // nothing left after the secret exclude
  bo.include_secrets = true;
  CHECK(files::load_member_list(repo.storage(), backup_files(repo, bo, {}), {})->size() == 1);
}

namespace {

// A GNU (old format) sparse member `name`: `hole` bytes of hole, then one byte "x".
std::vector<std::byte> gnu_sparse_tar(const std::string& name, uint64_t hole) {
  std::vector<char> h(512, 0);
  std::snprintf(h.data(), 100, "%s", name.c_str());
  std::snprintf(h.data() + 100, 8, "%07o", 0644);
  std::snprintf(h.data() + 108, 8, "%07o", 0);
  std::snprintf(h.data() + 116, 8, "%07o", 0);
  std::snprintf(h.data() + 124, 12, "%011o", 1);  // one byte stored
  std::snprintf(h.data() + 136, 12, "%011lo", 1700000000ul);
  h[156] = 'S';
  std::memcpy(h.data() + 257, "ustar  ", 8);
  auto base256 = [&](size_t at, uint64_t v) {  // 12-byte base-256 number
    h[at] = static_cast<char>(0x80);
    for (int i = 11; i >= 1; --i, v >>= 8) h[at + i] = static_cast<char>(v & 0xff);
  };
  base256(386, hole);      // sparse[0].offset
  base256(386 + 12, 1);    // sparse[0].numbytes
  base256(483, hole + 1);  // realsize
  std::memset(h.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (char c : h) sum += static_cast<unsigned char>(c);
  std::snprintf(h.data() + 148, 8, "%06o", sum);
  std::vector<char> out = h;
  out.push_back('x');
  out.resize(1024 + 1024, 0);
  auto* p = reinterpret_cast<std::byte*>(out.data());
  return std::vector<std::byte>(p, p + out.size());
}

// A tar of regular files and directories with the given permission bits.
std::vector<std::byte> tar_with_modes(const std::vector<std::pair<std::string, unsigned>>& members) {
  std::vector<char> buf(1 << 16);
  size_t used = 0;
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  REQUIRE(archive_write_open_memory(a, buf.data(), buf.size(), &used) == ARCHIVE_OK);
  for (auto& [name, perm] : members) {
    archive_entry* e = archive_entry_new();
    bool dir = name.back() == '/';
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, dir ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e, perm);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    archive_entry_set_size(e, dir ? 0 : 2);
    REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
    if (!dir) archive_write_data(a, "x\n", 2);
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  auto* p = reinterpret_cast<std::byte*>(buf.data());
  return std::vector<std::byte>(p, p + used);
}

}  // namespace

TEST_CASE("sparse members are refused at once, whatever size they declare, dry run or not") {
  Manifest m;
  m.id = "seed";
  for (uint64_t hole : {uint64_t(1) << 20, uint64_t(1) << 50}) {  // 1 MiB, 1 PiB
    CAPTURE(hole);
    auto tar = gnu_sparse_tar("holes", hole);
    try {
      files::check_tar_members(Bytes(tar.data(), tar.size()), m, std::nullopt);
      FAIL("a sparse member was accepted");
    } catch (const Error& e) {
      CHECK(e.code() == Code::restore_failed);
      CHECK(std::string(e.what()).find("refusing archive member \"holes\": sparse members are not restored") !=
            std::string::npos);
    }
  }
  TempDir dir;
  Repository repo(make_local_storage(dir / "repo"));
  Manifest planted = plant(repo, gnu_sparse_tar("holes", uint64_t(1) << 20));
  for (bool dry : {true, false}) {
    FilesRestoreOptions ro;
    ro.target = dir / "target";
    ro.dry_run = dry;
    CHECK_THROWS_WITH_AS(restore_files(repo, planted, ro, {}), doctest::Contains("sparse members are not restored"),
                         Error);
    CHECK_FALSE(fsys::exists(dir / "target"));
  }
}

TEST_CASE("setuid, setgid and world-write bits are dropped unless keep_special_modes") {
  TempDir dir;
  Repository repo(make_local_storage(dir / "repo"));
  Manifest m = plant(repo, tar_with_modes({{"d/", 01777}, {"d/suid", 04755}, {"sgid", 02755}, {"ww", 0666}, {"plain", 0640}}));
  FilesRestoreOptions ro;
  ro.target = dir / "out";
  restore_files(repo, m, ro, {});
  CHECK(mode_of(dir / "out/d") == 01775);
  CHECK(mode_of(dir / "out/d/suid") == 0755);
  CHECK(mode_of(dir / "out/sgid") == 0755);
  CHECK(mode_of(dir / "out/ww") == 0664);
  CHECK(mode_of(dir / "out/plain") == 0640);
  // A second restore over the first: the stripped modes are what it compares with.
  for (auto& a : restore_files(repo, m, ro, {})) CHECK(a.action == "unchanged");

  ro.target = dir / "kept";
  ro.keep_special_modes = true;
  restore_files(repo, m, ro, {});
  CHECK(mode_of(dir / "kept/d") == 01777);
  CHECK(mode_of(dir / "kept/sgid") == 02755);
  CHECK(mode_of(dir / "kept/ww") == 0666);
  if (::geteuid() == 0) CHECK(mode_of(dir / "kept/d/suid") == 04755);  // only root may keep setuid on chown
}

TEST_CASE("a member whose size, mode or owner differs from the manifest is refused before it is written") {
  TempDir dir;
  make_tree(dir / "src", 1000);
  Repository repo(make_local_storage(dir / "repo"));
  FilesBackupOptions bo;
  bo.base_dir = dir / "src";
  bo.paths = {"nginx"};
  Manifest m = backup_files(repo, bo, {});
  REQUIRE(m.source.contains("member_list"));
  CHECK_FALSE(m.source.contains("members"));
  const nlohmann::json members = *files::load_member_list(repo.storage(), m, {});
  struct stat st {};
  REQUIRE(::stat((dir / "src/nginx/nginx.conf").c_str(), &st) == 0);
  for (auto& mm : members)
    if (mm["name"] == "nginx/nginx.conf") {
      CHECK(mm["uid"] == st.st_uid);
      CHECK(mm["gid"] == st.st_gid);
    }
  struct Case {
    const char* field;
    nlohmann::json value;
    std::string message;
  };
  std::vector<Case> cases = {
      {"mode", "0644", "has mode 0640 in the archive but 0644 in the manifest"},
      {"uid", 4242, fmt::format("has uid {} in the archive but 4242 in the manifest", st.st_uid)},
      {"gid", 4242, fmt::format("has gid {} in the archive but 4242 in the manifest", st.st_gid)},
      {"user", "mallory", fmt::format("has user \"{}\" in the archive but \"mallory\" in the manifest", ::getpwuid(st.st_uid)->pw_name)},
      {"size", 1, "has size 20 in the archive but 1 in the manifest"},
  };
  for (auto& c : cases) {
    std::string field = c.field;
    CAPTURE(field);
    // As a manifest of the inline format says it (the member list object is checked
    // against its own SHA-256, so this is where a tampered entry can still come from).
    Manifest tampered = m;
    tampered.source.erase("member_list");
    tampered.source["members"] = members;
    for (auto& mm : tampered.source["members"])
      if (mm["name"] == "nginx/nginx.conf") mm[c.field] = c.value;
    for (bool dry : {true, false}) {
      FilesRestoreOptions ro;
      ro.target = dir / "out";
      ro.dry_run = dry;
      try {
        restore_files(repo, tampered, ro, {});
        FAIL("a member that differs from the manifest was restored");
      } catch (const Error& e) {
        CHECK(e.code() == Code::corrupt);
        CHECK(std::string(e.what()).find("member \"nginx/nginx.conf\" " + c.message) != std::string::npos);
      }
      CHECK_FALSE(fsys::exists(dir / "out"));
    }
  }
  FilesRestoreOptions ro;
  ro.target = dir / "out";
  CHECK(restore_files(repo, m, ro, {}).size() == 4);
}

namespace {

// A real storage whose manifests cannot be read back (as a manifest over the catalog's
// size bound cannot): every other call goes through.
class UnreadableManifests final : public Storage {
 public:
  explicit UnreadableManifests(std::unique_ptr<Storage> inner) : inner_(std::move(inner)) {}
  std::unique_ptr<Sink> put(const std::string& key) override { return inner_->put(key); }
  std::unique_ptr<Source> get(const std::string& key) override {
    if (key.size() > 14 && key.compare(key.size() - 14, 14, ".manifest.json") == 0)
      return std::make_unique<MemorySource>(std::vector<std::byte>{std::byte{'{'}});
    return inner_->get(key);
  }
  std::vector<ObjectInfo> list(const std::string& prefix) override { return inner_->list(prefix); }
  std::optional<ObjectInfo> stat(const std::string& key) override { return inner_->stat(key); }
  void remove(const std::string& key) override { inner_->remove(key); }
  std::string describe() const override { return inner_->describe(); }

 private:
  std::unique_ptr<Storage> inner_;
};

}  // namespace

TEST_CASE("a files backup the catalog cannot read fails loudly and leaves nothing behind") {
  TempDir dir;
  make_tree(dir / "src", 1000);
  FixedClock clock("2026-11-27T02:00:00Z");
  {  // an earlier good backup, which must stay the latest
    Repository good(make_local_storage(dir / "repo"), clock);
    FilesBackupOptions bo;
    bo.base_dir = dir / "src";
    bo.paths = {"nginx"};
    backup_files(good, bo, {});
  }
  auto before = files_under(dir / "repo");
  FixedClock later("2026-11-28T02:00:00Z");
  Repository repo(std::make_unique<UnreadableManifests>(make_local_storage(dir / "repo")), later);
  FilesBackupOptions bo;
  bo.base_dir = dir / "src";
  bo.paths = {"docker-compose.yml"};
  try {
    backup_files(repo, bo, {});
    FAIL("a backup the catalog cannot read was reported as made");
  } catch (const Error& e) {
    CHECK(e.code() == Code::corrupt);
    std::string msg = e.what();
    CHECK(msg.find("backup config_20261128_020000 was stored but the catalog cannot read its manifest") !=
          std::string::npos);
    CHECK(msg.find("config/config_20261128_020000.tar.gz.manifest.json") != std::string::npos);
    CHECK(msg.find("no backup was made") != std::string::npos);
  }
  CHECK(files_under(dir / "repo") == before);
  Repository plain(make_local_storage(dir / "repo"), later);
  CHECK(plain.find("latest", "files", "", {}).id == "config_20261127_020000");
}

namespace {

// A real storage whose listings leave out manifests (as a lagging listing would).
class UnlistedManifests final : public Storage {
 public:
  explicit UnlistedManifests(std::unique_ptr<Storage> inner) : inner_(std::move(inner)) {}
  std::unique_ptr<Sink> put(const std::string& key) override { return inner_->put(key); }
  std::unique_ptr<Source> get(const std::string& key) override { return inner_->get(key); }
  std::vector<ObjectInfo> list(const std::string& prefix) override {
    std::vector<ObjectInfo> out;
    for (auto& o : inner_->list(prefix))
      if (o.key.find(".manifest.json") == std::string::npos) out.push_back(o);
    return out;
  }
  std::optional<ObjectInfo> stat(const std::string& key) override { return inner_->stat(key); }
  void remove(const std::string& key) override { inner_->remove(key); }
  std::string describe() const override { return inner_->describe(); }

 private:
  std::unique_ptr<Storage> inner_;
};

}  // namespace

TEST_CASE("a files backup the catalog does not list fails, and its objects are kept for a look") {
  TempDir dir;
  make_tree(dir / "src", 1000);
  FixedClock clock("2026-11-28T02:00:00Z");
  Repository repo(std::make_unique<UnlistedManifests>(make_local_storage(dir / "repo")), clock);
  FilesBackupOptions bo;
  bo.base_dir = dir / "src";
  bo.paths = {"docker-compose.yml"};
  try {
    backup_files(repo, bo, {});
    FAIL("a backup the catalog does not list was reported as made");
  } catch (const Error& e) {
    CHECK(e.code() == Code::io);
    CHECK(std::string(e.what()).find("backup config_20261128_020000 was stored but the catalog of") != std::string::npos);
    CHECK(std::string(e.what()).find("does not list it") != std::string::npos);
  }
  CHECK(fsys::exists(dir / "repo/config/config_20261128_020000.tar.gz"));
  CHECK(fsys::exists(dir / "repo/config/config_20261128_020000.tar.gz.manifest.json"));
}
