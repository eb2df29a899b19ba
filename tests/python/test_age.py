"""age encryption from the outside: what the library writes, Debian's `age` decrypts, and
what `age` (and `age-keygen`) wrote, the library decrypts; wrong keys, cut files and
identity files others may read fail with a message saying so, and no sink is committed."""
import gzip
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

import mevbackup


def _plain(n: int, seed: int = 1) -> bytes:
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block + b" some text that compresses\n"
    return bytes(out[:n])


def _keygen(path: Path) -> str:
    """An identity file written by age-keygen; returns its recipient."""
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    os.chmod(path, 0o600)
    pub = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True)
    return pub.stdout.strip()


def _encrypt_with_library(plain_path: Path, out: Path, recipients: list) -> None:
    with mevbackup.Source.from_path(plain_path) as src, mevbackup.Filter.compressor("gzip") as gz, \
            mevbackup.Filter.age_encrypt(recipients) as enc, mevbackup.Sink.to_path(out) as sink:
        mevbackup.pipeline_run(src, [gz, enc], sink)


def _decrypt_with_library(enc_path: Path, out: Path, **identity) -> None:
    with mevbackup.Source.from_path(enc_path) as src, mevbackup.Filter.age_decrypt(**identity) as dec, \
            mevbackup.Sink.to_path(out) as sink:
        mevbackup.pipeline_run(src, [dec], sink)


@pytest.mark.parametrize("size", [0, 1, 65536, 200_000])
def test_library_encrypted_decrypts_with_age(tmp_path, size):
    plain = _plain(size)
    (tmp_path / "plain").write_bytes(plain)
    recipient = _keygen(tmp_path / "key.txt")
    _encrypt_with_library(tmp_path / "plain", tmp_path / "out.gz.age", [recipient])
    raw = (tmp_path / "out.gz.age").read_bytes()
    assert raw.startswith(b"age-encryption.org/v1\n-> X25519 ")
    got = subprocess.run(["age", "-d", "-i", str(tmp_path / "key.txt"), str(tmp_path / "out.gz.age")],
                         check=True, capture_output=True)
    assert gzip.decompress(got.stdout) == plain


def test_several_recipients_each_decrypts_with_age(tmp_path):
    plain = _plain(150_000, 2)
    (tmp_path / "plain").write_bytes(plain)
    recipients = [_keygen(tmp_path / f"k{i}.txt") for i in range(3)]
    _, generated = mevbackup.age_generate()
    _encrypt_with_library(tmp_path / "plain", tmp_path / "out.age", recipients + [generated])
    for i in range(3):
        got = subprocess.run(["age", "-d", "-i", str(tmp_path / f"k{i}.txt"), str(tmp_path / "out.age")],
                             check=True, capture_output=True)
        assert gzip.decompress(got.stdout) == plain


@pytest.mark.parametrize("armor", [False, True])
def test_age_encrypted_decrypts_with_library(tmp_path, armor):
    plain = _plain(300_000, 3)
    (tmp_path / "plain").write_bytes(plain)
    recipient = _keygen(tmp_path / "key.txt")
    other = _keygen(tmp_path / "other.txt")
    cmd = ["age", "-r", other, "-r", recipient, "-o", str(tmp_path / "in.age")]
    if armor:
        cmd.append("-a")
    subprocess.run(cmd + [str(tmp_path / "plain")], check=True)
    _decrypt_with_library(tmp_path / "in.age", tmp_path / "out1", identity_file=tmp_path / "key.txt")
    assert (tmp_path / "out1").read_bytes() == plain
    text = (tmp_path / "other.txt").read_text()
    _decrypt_with_library(tmp_path / "in.age", tmp_path / "out2", identity_text=text)
    assert (tmp_path / "out2").read_bytes() == plain


def test_generated_identity_decrypts_what_age_encrypted(tmp_path):
    secret, recipient = mevbackup.age_generate()
    assert secret.startswith("AGE-SECRET-KEY-1") and recipient.startswith("age1")
    (tmp_path / "plain").write_bytes(b"hello age")
    subprocess.run(["age", "-r", recipient, "-o", str(tmp_path / "in.age"), str(tmp_path / "plain")], check=True)
    _decrypt_with_library(tmp_path / "in.age", tmp_path / "out", identity_text=secret + "\n")
    assert (tmp_path / "out").read_bytes() == b"hello age"


def test_wrong_identity_fails_clearly_and_nothing_is_committed(tmp_path):
    (tmp_path / "plain").write_bytes(_plain(100_000))
    recipient = _keygen(tmp_path / "key.txt")
    _keygen(tmp_path / "wrong.txt")
    subprocess.run(["age", "-r", recipient, "-o", str(tmp_path / "in.age"), str(tmp_path / "plain")], check=True)
    with pytest.raises(mevbackup.AuthenticationFailed, match=r"age decryptor\).*no identity matches"):
        _decrypt_with_library(tmp_path / "in.age", tmp_path / "out", identity_file=tmp_path / "wrong.txt")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.age", "key.txt", "plain", "wrong.txt"]


def test_truncated_file_fails_and_nothing_is_committed(tmp_path):
    plain = _plain(200_000, 4)
    (tmp_path / "plain").write_bytes(plain)
    recipient = _keygen(tmp_path / "key.txt")
    subprocess.run(["age", "-r", recipient, "-o", str(tmp_path / "in.age"), str(tmp_path / "plain")], check=True)
    data = (tmp_path / "in.age").read_bytes()
    for cut in (len(data) - 1, len(data) - (200_000 - 3 * 65536) - 16, 100):
        (tmp_path / "cut.age").write_bytes(data[:cut])
        with pytest.raises(mevbackup.Corrupt, match=r"age decryptor\).*age (payload|header)"):
            _decrypt_with_library(tmp_path / "cut.age", tmp_path / "out", identity_file=tmp_path / "key.txt")
        assert not (tmp_path / "out").exists()


def test_identity_file_readable_by_others_is_refused(tmp_path):
    recipient = _keygen(tmp_path / "key.txt")
    assert recipient.startswith("age1")
    os.chmod(tmp_path / "key.txt", 0o644)
    with pytest.raises(mevbackup.PermissionDenied, match=r"key\.txt has mode 0644"):
        mevbackup.Filter.age_decrypt(identity_file=tmp_path / "key.txt")
    os.chmod(tmp_path / "key.txt", 0o600)
    mevbackup.Filter.age_decrypt(identity_file=tmp_path / "key.txt").close()


def test_bad_recipient_names_its_position(tmp_path):
    _, good = mevbackup.age_generate()
    bad = good[:-1] + ("q" if good[-1] != "q" else "p")
    with pytest.raises(mevbackup.InvalidArgument, match="recipient 2: .* bad checksum"):
        mevbackup.Filter.age_encrypt([good, bad])
    with pytest.raises(mevbackup.InvalidArgument, match="at least one recipient"):
        mevbackup.Filter.age_encrypt([])
