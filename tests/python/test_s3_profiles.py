"""The AWS shared files of the credential chain (~/.aws/credentials and ~/.aws/config, as
`aws configure` writes them): the profile mevbackup uses is the one botocore resolves from
the same environment and files, checked by the SigV4-verifying proxy in front of s3rver."""
import os
import subprocess
import sys
from pathlib import Path

import botocore.session
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from s3server import KEY, SECRET, S3rver, VerifyingProxy  # noqa: E402

BUCKET = "profiles"


@pytest.fixture(scope="module")
def s3():
    server = S3rver([BUCKET]).start()
    proxy = VerifyingProxy(server).start()
    try:
        yield proxy
    finally:
        proxy.stop()
        server.stop()


@pytest.fixture
def home(tmp_path):
    aws = tmp_path / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        "[default]\naws_access_key_id = WRONGKEY\naws_secret_access_key = wrong-secret\n\n"
        f"[ops]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n\n"
        "[half]\naws_access_key_id = ONLYKEY\n")
    (aws / "config").write_text(
        "[default]\nregion = us-east-1\n\n[profile ops]\nregion = us-east-1\ns3 =\n  addressing_style = path\n\n"
        "[profile assumed]\nrole_arn = arn:aws:iam::123456789012:role/backup\nsource_profile = ops\n")
    return tmp_path


def base_env(home, s3, **extra):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "AWS_ENDPOINT_URL": s3.endpoint}
    env.update(extra)
    return env


def botocore_secret(env, profile=None):
    """What botocore resolves from the same environment (its own chain, its own parser)."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        creds = botocore.session.Session(profile=profile).get_credentials()
        return creds.secret_key if creds else None
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run(tools, env, *args):
    return subprocess.run([tools["cli"], *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("case", ["AWS_PROFILE", "--profile", "env wins over AWS_PROFILE", "--profile wins over env",
                                  "default profile"])
def test_the_profile_botocore_resolves_is_the_one_used(tools, s3, home, tmp_path, case):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.conf").write_text("x = 1\n")
    wrong = {"AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "env-wrong-secret"}
    env, args, profile = base_env(home, s3), [], None
    if case == "AWS_PROFILE":
        env["AWS_PROFILE"] = "ops"
    elif case == "--profile":
        args, profile = ["--profile", "ops"], "ops"
    elif case == "env wins over AWS_PROFILE":
        env.update(wrong, AWS_PROFILE="ops")
    elif case == "--profile wins over env":
        env.update(wrong)
        args, profile = ["--profile", "ops"], "ops"
    expected_ok = botocore_secret(env, profile) == SECRET
    assert expected_ok == (case in ("AWS_PROFILE", "--profile", "--profile wins over env"))
    repo = f"s3://{BUCKET}/{case.replace(' ', '-')}"
    r = run(tools, env, "backup", "files", "--repo", repo, "--base", src, *args, "a.conf")
    assert (r.returncode == 0) == expected_ok, r.stderr
    if not expected_ok:
        assert "SignatureDoesNotMatch" in r.stderr or "InvalidAccessKeyId" in r.stderr or "403" in r.stderr, r.stderr
    for secret in ("wrong-secret", SECRET if SECRET != KEY else "\0"):
        assert secret not in r.stderr


def test_bad_profiles_fail_naming_the_profile(tools, s3, home):
    env = base_env(home, s3)
    r = run(tools, env, "list", "--repo", f"s3://{BUCKET}/x", "--profile", "nosuch")
    assert r.returncode != 0 and "nosuch" in r.stderr and "credentials" in r.stderr, r.stderr
    r = run(tools, env, "list", "--repo", f"s3://{BUCKET}/x", "--profile", "half")
    assert r.returncode != 0 and "aws_secret_access_key" in r.stderr, r.stderr
    r = run(tools, env, "list", "--repo", f"s3://{BUCKET}/x", "--profile", "assumed")
    assert r.returncode != 0 and "role_arn" in r.stderr and "not support" in r.stderr, r.stderr
    (home / ".aws" / "credentials").write_text("[ops\naws_access_key_id = x\n")
    r = run(tools, env, "list", "--repo", f"s3://{BUCKET}/x")
    assert r.returncode != 0 and "line 1" in r.stderr and ".aws/credentials" in r.stderr, r.stderr
