"""What a new user meets first: a bad --out, a damaged certificate, --devices all without a GPU, a device that
is not there. Each gives one sentence and the right exit code, never a traceback or a bare "Aborted!"."""

from __future__ import annotations

import io
import tarfile

import pytest
from certify_helpers import run_cli

TRACEBACK = "Traceback (most recent call last)"


@pytest.mark.parametrize("kind", ["existing-file", "empty", "uncreatable"])
def test_a_bad_out_exits_2_with_one_sentence(tmp_path, kind):
    out = {"existing-file": tmp_path / "a-file", "empty": "", "uncreatable": tmp_path / "f" / "sub"}[kind]
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "f").write_text("a file where a folder should be")
    p = run_cli(["certify", "--device", "interpreter", "--out", str(out)], cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert TRACEBACK not in p.stderr and "--out" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def _truncated_certificate(path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = bytes(range(256)) * 400
        info = tarfile.TarInfo("report.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_verify_of_a_truncated_certificate_says_why(tmp_path):
    cert = tmp_path / "certificate.tgz"
    _truncated_certificate(cert)
    p = run_cli(["verify", str(cert)], cwd=tmp_path, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "not a valid certificate: gzip stream ends early" in p.stdout
    assert "Aborted" not in p.stdout + p.stderr and TRACEBACK not in p.stderr


def test_verify_of_a_file_that_is_not_gzip_says_why(tmp_path):
    cert = tmp_path / "certificate.tgz"
    cert.write_bytes(b"PK\x03\x04 not a tarball")
    p = run_cli(["verify", str(cert)], cwd=tmp_path, timeout=120)
    assert p.returncode == 1 and "not a valid certificate: not a gzip file" in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("command", [["certify", "--out", "o"], ["list"], ["replay", "c1-x"]])
def test_a_missing_gpu_is_worded_the_same_in_every_command(tmp_path, command):
    p = run_cli([*command, "--device", "cuda:7"], cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    if command[0] != "replay":  # replay first refuses the malformed case id, in its own sentence
        assert "device: cuda:7 requested, but torch sees no GPU (try 'interpreter')." in p.stderr


def test_devices_all_without_a_gpu_says_it_falls_back_to_the_interpreter(tmp_path):
    p = run_cli(["certify", "--devices", "all", "--cases", "c1-does-not-exist", "--out", "o"], cwd=tmp_path,
                timeout=300)  # fmt: skip
    assert "no GPU found, falling back to the Triton interpreter" in p.stdout, p.stdout + p.stderr
