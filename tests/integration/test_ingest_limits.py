"""Adversarial dossiers: each is one report line, the next file still goes on, and memory stays bounded."""

import base64
import subprocess
import sys
import threading
import time
from pathlib import Path

from commands.processes import settings_env
from healthbook.config import PROJECT_ROOT
from synthetic.dossiers import write_dossier
from tests.unit.test_giamdinhhs import events

# Read alone the directory peaks at about 110 MiB; unbounded, these files would take gigabytes.
PEAK_RSS_LIMIT_MIB = 256
HEAD = ('<?xml version="1.0" encoding="utf-8"?><GIAMDINHHS><THONGTINDONVI><MACSKCB>79001</MACSKCB></THONGTINDONVI>'
        "<THONGTINHOSO><NGAYLAP>20260315</NGAYLAP><SOLUONGHOSO>{count}</SOLUONGHOSO><DANHSACHHOSO>")
TAIL = "</DANHSACHHOSO></THONGTINHOSO><CHUKYDONVI/></GIAMDINHHS>"


def _write(path: Path, *parts: str | bytes, count: str = "1") -> None:
    with path.open("wb") as out:
        out.write(HEAD.format(count=count).encode())
        for part in parts:
            out.write(part.encode() if isinstance(part, str) else part)
        out.write(TAIL.encode())


def _adversarial(folder: Path) -> None:
    tiny = b"<a/>" * 4_000_000  # 16 MiB of empty elements inside one HOSO
    _write(folder / "a-tiny-elements.xml", b"<HOSO><FILEHOSO><LOAIHOSO>XML2</LOAIHOSO><NOIDUNGFILE><X>", tiny,
           b"</X></NOIDUNGFILE></FILEHOSO></HOSO>")
    packed = base64.b64encode(b"<X>" + b"<a/>" * 600_000 + b"</X>")  # 3.1 MiB of base64 table content
    _write(folder / "b-base64-elements.xml", b"<HOSO><FILEHOSO><LOAIHOSO>XML2</LOAIHOSO><NOIDUNGFILE>", packed,
           b"</NOIDUNGFILE></FILEHOSO></HOSO>")
    _write(folder / "c-one-huge-text.xml", b"<HOSO><FILEHOSO><LOAIHOSO>XML2</LOAIHOSO><NOIDUNGFILE>",
           b"QUFB" * 10_000_000, b"</NOIDUNGFILE></FILEHOSO></HOSO>")
    _write(folder / "d-superscript-count.xml", "<HOSO></HOSO>", count="²")
    (folder / "e-not-xml.xml").write_bytes(b"\x00\xff this is not XML")
    with (folder / "f-good.xml").open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", events(2), 2)


def _own_peak_mib(pid: int) -> float:
    """The process's own peak RSS (VmHWM of its memory since exec).

    Not wait4's ru_maxrss: Linux carries the parent's high-water mark into a child across its exec,
    so there it reported pytest's own peak (201-315 MiB late in a full run) rather than ingest's.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # it exited between poll and read
        pass
    return 0.0


def test_adversarial_dossiers_are_each_one_report_line_and_memory_stays_bounded(settings, tmp_path):
    _adversarial(tmp_path)
    child = subprocess.Popen([sys.executable, "-m", "commands.cli", "ingest", "--check", str(tmp_path)],
                             cwd=PROJECT_ROOT, env=settings_env(settings), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    read: list[str] = []
    reading = threading.Thread(target=lambda: read.append(child.stdout.read().decode()))
    reading.start()
    peak_mib = 0.0
    while child.poll() is None:
        peak_mib = max(peak_mib, _own_peak_mib(child.pid))
        time.sleep(0.01)
    reading.join()
    output = read[0]
    assert child.returncode == 1, output  # something was rejected
    lines = output.splitlines()
    for name in ("a-tiny-elements", "b-base64-elements", "c-one-huge-text", "d-superscript-count", "e-not-xml",
                 "f-good"):
        assert any(line.startswith(str(tmp_path / name)) for line in lines), f"{name} has no report line:\n{output}"
    assert "hoso_too_large" in output and "more than 100,000 elements" in output
    assert "longer than 10 MB" in output
    assert "content_too_many_elements" in output
    assert "f-good.xml: XML signature no certificate registered; 2 HOSO read, 2 valid" in output
    assert 20 < peak_mib <= PEAK_RSS_LIMIT_MIB, f"peak RSS {peak_mib:.0f} MiB"
