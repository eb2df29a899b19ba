"""Signed manifests and key files from the outside: `mevbackup key generate` writes keys
that stock `age` and `openssl` use; a manifest's signature checks out with jq and
openssl; with --verify-key a forged newer backup (unsigned, signed by another key, or a
signed manifest edited) is never restored, verified as good or counted by prune."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import mevbackup


def cli(tools, *args, env=None):
    return subprocess.run([tools["cli"], *map(str, args)], capture_output=True, text=True, timeout=120,
                          env=env if env is not None else dict(os.environ))


@pytest.fixture
def keys(tools, tmp_path):
    r = cli(tools, "key", "generate", "--dir", tmp_path / "keys", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_key_generate_writes_private_files_stock_tools_use(tools, keys, tmp_path):
    ident, sk, vk = Path(keys["identity_file"]), Path(keys["signing_key_file"]), Path(keys["verify_key_file"])
    assert oct(ident.stat().st_mode & 0o777) == "0o600" and oct(sk.stat().st_mode & 0o777) == "0o600"
    assert oct(vk.stat().st_mode & 0o777) == "0o644"
    assert keys["recipient"].startswith("age1") and len(keys["key_id"]) == 16
    # age-keygen agrees on the recipient; age encrypts to it and decrypts with the identity.
    pub = subprocess.run(["age-keygen", "-y", str(ident)], capture_output=True, text=True, check=True).stdout.strip()
    assert pub == keys["recipient"]
    enc = subprocess.run(["age", "-r", pub], input=b"hello", capture_output=True, check=True).stdout
    assert subprocess.run(["age", "-d", "-i", str(ident)], input=enc, capture_output=True,
                          check=True).stdout == b"hello"
    # openssl reads the signing key as Ed25519 and derives the same public key.
    derived = subprocess.run(["openssl", "pkey", "-in", str(sk), "-pubout"], capture_output=True, text=True,
                             check=True).stdout
    assert derived == vk.read_text()
    assert "ED25519" in subprocess.run(["openssl", "pkey", "-in", str(sk), "-noout", "-text"], capture_output=True,
                                       text=True, check=True).stdout.upper()
    # Nothing is ever replaced.
    before = ident.read_bytes()
    r = cli(tools, "key", "generate", "--dir", ident.parent)
    assert r.returncode != 0 and "already exists" in r.stderr
    assert ident.read_bytes() == before
    # The secret is in no output.
    r = cli(tools, "key", "generate", "--identity", tmp_path / "only.txt", "--no-signing-key")
    assert r.returncode == 0 and "AGE-SECRET-KEY" not in r.stdout + r.stderr
    assert not (tmp_path / "only.txt.pub").exists()


def _backup(tools, repo, src, *extra):
    r = cli(tools, "backup", "files", "--repo", repo, "--base", src, "--json", *extra, "app.conf")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def signed_repo(tools, keys, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.conf").write_text("real = 1\n")
    repo = tmp_path / "repo"
    good = _backup(tools, repo, src, "--signing-key", keys["signing_key_file"])
    return repo, src, good


def test_signature_checks_out_with_jq_and_openssl(tools, keys, signed_repo, tmp_path):
    repo, _src, good = signed_repo
    mfile = repo / (good["path"] + ".manifest.json")
    m = json.loads(mfile.read_text())
    assert m["signature"]["algorithm"] == "ed25519" and m["signature"]["key_id"] == keys["key_id"]
    signed = subprocess.run(["jq", "-cjS", "del(.signature)", str(mfile)], capture_output=True, check=True).stdout
    sig = subprocess.run(f"jq -rj .signature.value {mfile} | base64 -d", shell=True, capture_output=True,
                         check=True).stdout
    (tmp_path / "signed.bin").write_bytes(signed)
    (tmp_path / "sig.bin").write_bytes(sig)
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", keys["verify_key_file"], "-rawin",
                        "-in", str(tmp_path / "signed.bin"), "-sigfile", str(tmp_path / "sig.bin")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "Verified Successfully" in r.stdout, r.stdout + r.stderr
    r = cli(tools, "list", "--repo", repo, "--verify-key", keys["verify_key_file"], "--json")
    assert [b["signature"] for b in json.loads(r.stdout)] == ["good"]


def test_forged_newer_backups_are_never_trusted(tools, keys, signed_repo, tmp_path):
    repo, src, good = signed_repo
    vk = ["--verify-key", keys["verify_key_file"]]
    # The attacker writes newer backups: one unsigned, one signed by a key of its own.
    (src / "app.conf").write_text("planted = 1\n")
    unsigned = _backup(tools, repo, src)
    other = cli(tools, "key", "generate", "--dir", tmp_path / "attacker", "--json")
    own = _backup(tools, repo, src, "--signing-key", json.loads(other.stdout)["signing_key_file"])
    ids = [good["id"], unsigned["id"], own["id"]]

    r = cli(tools, "list", "--repo", repo, *vk, "--json")
    assert {b["id"]: b["signature"] for b in json.loads(r.stdout)} == {
        good["id"]: "good", unsigned["id"]: "unsigned", own["id"]: "bad"}
    r = cli(tools, "list", "--repo", repo, *vk)
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()}
    assert "UNSIGNED" in lines[unsigned["id"]] and "BAD-SIGNATURE" in lines[own["id"]]
    assert "SIGN" not in lines[good["id"]]

    # latest passes over them (saying so) and restores the real one.
    out = tmp_path / "out"
    r = cli(tools, "restore", "files", "--repo", repo, "--target", out, *vk)
    assert r.returncode == 0, r.stderr
    assert (out / "app.conf").read_text() == "real = 1\n"
    assert unsigned["id"] in r.stderr and own["id"] in r.stderr
    # Named, they are refused with the reason.
    for b, why in ((unsigned, "not signed"), (own, "not by a verify key")):
        r = cli(tools, "restore", "files", "--repo", repo, "--backup", b["id"], "--target", tmp_path / "x", *vk)
        assert r.returncode != 0 and why in r.stderr and b["id"] in r.stderr, r.stderr
        assert not (tmp_path / "x").exists()
    # verify fails them (and records nothing beside them); the real one passes.
    r = cli(tools, "verify", "--repo", repo, "--backup", "all", *vk, "--json")
    assert r.returncode != 0
    assert not (repo / (unsigned["path"] + ".verify.json")).exists()
    assert (repo / (good["path"] + ".verify.json")).exists()
    # prune --keep-last 1 keeps the signed backup: the planted ones are not counted.
    r = cli(tools, "prune", "--repo", repo, "--keep-last", "1", *vk)
    assert r.returncode == 0, r.stderr
    assert all((repo / (p + ".manifest.json")).exists() for p in (good["path"], unsigned["path"], own["path"]))
    # Without a verify key nothing is checked: all three are plain backups.
    r = cli(tools, "list", "--repo", repo, "--json")
    assert [b["id"] for b in json.loads(r.stdout)] == ids
    assert {b["signature"] for b in json.loads(r.stdout)} == {"unchecked"}


def test_edited_signed_manifest_is_refused(tools, keys, signed_repo, tmp_path):
    repo, _src, good = signed_repo
    mfile = repo / (good["path"] + ".manifest.json")
    m = json.loads(mfile.read_text())
    m["source_name"] = "something-else"
    mfile.write_text(json.dumps(m, indent=2))
    r = cli(tools, "restore", "files", "--repo", repo, "--backup", good["id"], "--target", tmp_path / "o",
            "--verify-key", keys["verify_key_file"])
    assert r.returncode != 0 and "changed after it was signed" in r.stderr, r.stderr
    r = cli(tools, "restore", "files", "--repo", repo, "--target", tmp_path / "o",
            "--verify-key", keys["verify_key_file"])
    assert r.returncode != 0 and "signed by a verify key" in r.stderr, r.stderr


def test_loose_signing_key_and_bad_verify_key_are_refused(tools, keys, signed_repo, tmp_path):
    repo, src, _good = signed_repo
    loose = tmp_path / "loose.pem"
    shutil.copy(keys["signing_key_file"], loose)
    os.chmod(loose, 0o640)
    r = cli(tools, "backup", "files", "--repo", repo, "--base", src, "--signing-key", loose, "app.conf")
    assert r.returncode != 0 and "0640" in r.stderr and "chmod 600" in r.stderr
    assert "PRIVATE KEY" not in r.stderr
    notakey = tmp_path / "v.pem"
    notakey.write_text("hello\n")
    r = cli(tools, "list", "--repo", repo, "--verify-key", notakey)
    assert r.returncode != 0 and "v.pem" in r.stderr and "not a PEM public key" in r.stderr


def test_python_signs_and_checks(keys, tmp_path):
    repo = tmp_path / "repo"
    with mevbackup.Repository(repo, signing_key_file=keys["signing_key_file"]) as r:
        b = r.put_artifact(mevbackup.Source.from_iterable([b"state\n"]), kind="export", name_prefix="svc")
        assert "signature" in b.manifest
    with mevbackup.Repository(repo, verify_key_files=[keys["verify_key_file"]]) as r:
        assert [x.signature for x in r.list()] == ["good"]
    with mevbackup.Repository(repo) as r:
        assert [x.signature for x in r.list()] == ["unchecked"]
