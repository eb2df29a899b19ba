#include <doctest/doctest.h>

#include <archive.h>
#include <archive_entry.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <zlib.h>

#include <cstddef>
#include <filesystem>
#include <fstream>

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
    CHECK(m.source["members"].size() == 8);
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
  Manifest tampered = m;
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
  CHECK(files_under(dir.path()).size() == files_under(dir / "src").size() + 2);  // no staging left
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
  CHECK(m2.source["members"][0]["name"] == "nginx/nginx.conf");
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
  CHECK(backup_files(repo, bo, {}).source["members"].size() == 1);
}
