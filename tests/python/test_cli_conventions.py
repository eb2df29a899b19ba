"""The mevbackup CLI follows the conventions scripts and cron rely on: --help on every
command, short options, one duration syntax, --quiet silent on success, --json reports
and errors, distinct exit statuses (11: locked), every storage option on every command,
a manual page and a bash completion."""
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from s3server import KEY, SECRET, S3rver, VerifyingProxy  # noqa: E402

COMMANDS = [
    ["backup", "postgres"], ["restore", "postgres"], ["backup", "files"], ["restore", "files"],
    ["backup", "redis"], ["restore", "redis"], ["backup", "basebackup"], ["restore", "pitr"],
    ["list"], ["prune"], ["verify"], ["check"], ["sync"], ["lifecycle"], ["wal-push"], ["wal-fetch"],
]


@pytest.fixture
def files(cli, tmp_path):
    """A repository with one files backup of two files; returns (repo, backup id)."""
    base = tmp_path / "etc"
    (base / "nginx").mkdir(parents=True)
    (base / "app.yml").write_text("port: 80\n")
    (base / "nginx" / "nginx.conf").write_text("worker_processes 1;\n")
    repo = tmp_path / "repo"
    r = cli("backup", "files", "-r", repo, "--base", base, "app.yml", "nginx", "--json", check=True)
    return repo, json.loads(r.stdout)["id"]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(cli, command, flag):
    r = cli(*command, flag)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert " ".join(command) in r.stdout and "--quiet" in r.stdout
    if command not in (["sync"],):
        assert "-r,--repo" in r.stdout and "--endpoint-url" in r.stdout


def test_top_level_help_lists_commands_and_exit_statuses(cli):
    for args in (["--help"], ["-h"], ["help"]):
        r = cli(*args)
        assert r.returncode == 0
        for word in ("backup", "restore", "prune", "verify", "check", "sync", "wal-push"):
            assert word in r.stdout
        assert "11 repository locked" in r.stdout and "2 usage error" in r.stdout


def test_usage_errors_exit_2_and_name_the_problem(cli, tmp_path):
    r = cli("backup", "files", "-r", tmp_path / "repo", "--bogus", "x")
    assert r.returncode == 2 and "--bogus" in r.stderr
    r = cli("restore", "files", "-r", tmp_path / "repo")
    assert r.returncode == 2 and "--target" in r.stderr
    r = cli("frobnicate")
    assert r.returncode == 2 and "unknown command \"frobnicate\"" in r.stderr
    r = cli("restore", "files", "-r", tmp_path / "repo", "-t", tmp_path / "t", "--json", "--bogus")
    assert r.returncode == 2
    err = json.loads(r.stderr)["error"]
    assert err["code"] == "usage" and err["exit_status"] == 2 and "--bogus" in err["message"]


def test_short_options_and_restore_reports_the_backup_it_restored(cli, files, tmp_path):
    repo, ident = files
    r = cli("list", "-r", repo, "-k", "files", "--json", check=True)
    assert [b["id"] for b in json.loads(r.stdout)] == [ident]
    r = cli("restore", "files", "-r", repo, "-b", "latest", "-t", tmp_path / "dry", "-n", check=True)
    assert "create    app.yml" in r.stdout and not (tmp_path / "dry").exists()
    r = cli("restore", "files", "-r", repo, "-t", tmp_path / "out", check=True)
    assert r.stdout.splitlines()[-1] == f"restored {ident} into {tmp_path / 'out'}"
    assert "latest" not in r.stdout
    assert (tmp_path / "out" / "nginx" / "nginx.conf").read_text() == "worker_processes 1;\n"
    r = cli("restore", "files", "-r", repo, "-t", tmp_path / "out2", "--json", check=True)
    j = json.loads(r.stdout)
    assert j["restored"] == ident and j["kind"] == "files" and j["target"] == str(tmp_path / "out2")
    assert {"app.yml", "nginx/nginx.conf"} <= {e["name"] for e in j["entries"]}


def test_quiet_prints_nothing_when_it_works(cli, files, tmp_path):
    repo, ident = files
    base = tmp_path / "etc"
    runs = [
        ("backup", "files", "-r", repo, "--base", base, "app.yml", "-q"),
        ("restore", "files", "-r", repo, "-b", ident, "-t", tmp_path / "q", "--quiet"),
        ("verify", "-r", repo, "--backup", "all", "-q"),
        ("prune", "-r", repo, "--keep-last", "1", "-q"),
        ("check", "-r", repo, "--max-age", "1h", "-q"),
        ("sync", "--from", repo, "--to", tmp_path / "copy", "-q"),
    ]
    for args in runs:
        r = cli(*args)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), (args, r.stdout, r.stderr)
    assert (tmp_path / "q" / "app.yml").exists()
    assert len(json.loads(cli("list", "-r", tmp_path / "copy", "--json", check=True).stdout)) == 1


def test_one_duration_parser_for_every_option(cli, files, tmp_path):
    repo, _ = files
    for good in ("90000", "25h", "1d1h", "1w", "2d"):
        r = cli("check", "-r", repo, "--max-age", good)
        assert r.returncode == 0 and r.stdout.startswith("MEVBACKUP OK"), (good, r.stdout)
    for bad in ("banana", "1h30", "h", "0", "-5"):
        r = cli("check", "-r", repo, "--max-age", bad)
        assert r.returncode == 3 and "UNKNOWN" in r.stdout, (bad, r.stdout)
    for good in ("0", "90", "30m", "1h"):
        assert cli("prune", "-r", repo, "--keep-last", "1", "--grace", good, "-n").returncode == 0, good
    r = cli("prune", "-r", repo, "--keep-last", "1", "--grace", "soon")
    assert r.returncode == 2 and "soon" in r.stderr
    r = cli("backup", "redis", "-r", repo, "--redis-url", "redis://127.0.0.1:1", "--timeout", "8d")
    assert r.returncode == 2 and "--timeout" in r.stderr
    r = cli("list", "-r", repo, env={"MEVBACKUP_STALL_TIMEOUT": "2m"})
    assert r.returncode == 0
    r = cli("list", "-r", repo, env={"MEVBACKUP_STALL_TIMEOUT": "two"})
    assert r.returncode == 2 and "MEVBACKUP_STALL_TIMEOUT" in r.stderr


def test_a_locked_repository_exits_11(cli, files, tmp_path):
    repo, ident = files
    locks = repo / "locks"
    locks.mkdir(exist_ok=True)
    now = int(time.time())
    # An exclusive lock of a live process on this host (this test's): every run must wait.
    (locks / "holder-1.json").write_text(json.dumps({
        "id": "holder", "kind": "exclusive", "host": socket.gethostname(), "pid": os.getpid(),
        "created": now, "refreshed": now}))
    r = cli("backup", "files", "-r", repo, "--base", tmp_path / "etc", "app.yml")
    assert r.returncode == 11 and "is locked" in r.stderr, (r.returncode, r.stderr)
    r = cli("restore", "files", "-r", repo, "-t", tmp_path / "x", "--json")
    assert r.returncode == 11 and r.stdout == ""
    err = json.loads(r.stderr)["error"]
    assert err["code"] == "locked" and err["status"] == 18 and err["exit_status"] == 11
    assert "is locked" in err["message"]
    (locks / "holder-1.json").unlink()
    assert cli("restore", "files", "-r", repo, "-t", tmp_path / "x", "-q").returncode == 0


def test_json_errors_name_code_status_and_message(cli, files, tmp_path):
    repo, _ = files
    r = cli("restore", "files", "-r", repo, "-b", "config/nope", "-t", tmp_path / "x", "--json")
    assert r.returncode == 1 and r.stdout == ""
    err = json.loads(r.stderr)["error"]
    assert err["code"] == "not_found" and err["status"] == 5 and err["exit_status"] == 1
    assert "config/nope" in err["message"]


@pytest.fixture(scope="module")
def s3():
    server = S3rver(["backups"]).start()
    proxy = VerifyingProxy(server).start()
    try:
        yield proxy
    finally:
        proxy.stop()
        server.stop()


def test_every_command_honours_the_storage_options(cli, s3, files, tmp_path):
    """Options only: no AWS_ENDPOINT_URL, no AWS_REGION (check once went to AWS itself)."""
    local, ident = files
    env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": "", "AWS_REGION": "",
           "AWS_DEFAULT_REGION": "", "AWS_SESSION_TOKEN": "", "AWS_MAX_ATTEMPTS": ""}
    url = f"s3://backups/opts-{os.getpid()}"
    so = ["--endpoint-url", s3.endpoint, "--region", "us-east-1"]

    def run(*args):
        r = cli(*args, *so, env=env)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r

    run("sync", "--from", local, "--to", url)
    run("backup", "files", "-r", url, "--base", tmp_path / "etc", "app.yml", "--json")
    assert len(json.loads(run("list", "-r", url, "--json").stdout)) == 2
    assert "MEVBACKUP OK" in run("check", "-r", url, "--max-age", "1h").stdout
    run("verify", "-r", url, "--backup", "all")
    r = run("restore", "files", "-r", url, "-b", ident, "-t", tmp_path / "from-s3")
    assert r.stdout.splitlines()[-1].startswith(f"restored {ident}")
    run("prune", "-r", url, "--keep-last", "5", "-n")
    run("sync", "--from", url, "--to", tmp_path / "back")
    assert len(json.loads(cli("list", "-r", tmp_path / "back", "--json", check=True).stdout)) == 2


def _cmake_build_dir(cli_path):
    for d in Path(cli_path).resolve().parents:
        if (d / "CMakeCache.txt").exists():
            return d
    return None


def test_man_page_renders_and_completion_offers_subcommands(tools, tmp_path):
    r = subprocess.run([tools["cli"], "--help-man"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith(".TH MEVBACKUP 1")
    page = tmp_path / "mevbackup.1"
    page.write_text(r.stdout)
    out = subprocess.run(["groff", "-man", "-Tutf8", "-ww", str(page)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    rendered = re.sub(".\x08", "", out.stdout).replace("\u2010", "-").replace("\u2212", "-")  # no overstrike
    for text in ("mevbackup backup postgres", "--endpoint-url", "--max-age", "11 repository locked"):
        assert text in rendered, text
    build = _cmake_build_dir(tools["cli"])
    if build is None:
        pytest.skip("not a CMake build: cmake --install is checked by the CMake build only")
    prefix = tmp_path / "prefix"
    inst = subprocess.run(["cmake", "--install", str(build), "--prefix", str(prefix)], capture_output=True,
                          text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr
    man = prefix / "share" / "man" / "man1" / "mevbackup.1"
    comp = prefix / "share" / "bash-completion" / "completions" / "mevbackup"
    assert man.read_text() == page.read_text()
    script = ("source \"$1\"; COMP_WORDS=(mevbackup re); COMP_CWORD=1; _mevbackup; echo \"${COMPREPLY[@]}\"; "
              "COMP_WORDS=(mevbackup backup ''); COMP_CWORD=2; _mevbackup; echo \"${COMPREPLY[@]}\"; "
              "COMP_WORDS=(mevbackup check --max); COMP_CWORD=2; _mevbackup; echo \"${COMPREPLY[@]}\"")
    r = subprocess.run(["bash", "-c", script, "bash", str(comp)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sorted(lines[0].split()) == ["rekey", "restore"]
    assert lines[1] == "postgres files redis basebackup"
    assert sorted(lines[2].split()) == ["--max-age", "--max-rate"]
