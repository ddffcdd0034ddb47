"""make fuzz: each target coverage-guided (atheris, libFuzzer) for N inputs in its own process; prints the counts.

    python -m tests.fuzz.run [--runs 1000000] [TARGET ...]

A crash is saved under .local/fuzz/ and added to tests/fuzz/regressions.json, which the unit
tests replay on every run; the exit code is 1 when any target crashed.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKDIR = ROOT / ".local" / "fuzz"
REGRESSIONS = Path(__file__).with_name("regressions.json")
PACKAGES = ["schemas", "domain", "healthbook", "producers", "streams", "consumers", "commands"]


def fuzz_one(name: str, runs: int) -> None:
    """Fuzz one target in this process until libFuzzer has run `runs` inputs, then print its counts as JSON."""
    import atheris

    with atheris.instrument_imports(include=PACKAGES):
        from tests.fuzz.targets import TARGETS
    target = TARGETS[name]
    corpus = WORKDIR / name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(target.seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    counts: collections.Counter[str] = collections.Counter()
    started = time.monotonic()

    def one(data: bytes) -> None:
        counts[target.check(data)] += 1
        if sum(counts.values()) == runs:
            print(json.dumps({"target": name, "inputs": runs, "seconds": round(time.monotonic() - started, 1),
                              "outcomes": dict(counts)}), flush=True)

    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-artifact_prefix={WORKDIR}/{name}-", "-print_final_stats=0",
                   str(corpus)], one)
    atheris.Fuzz()


def keep_crashes(name: str) -> int:
    """Add each crash libFuzzer saved for a target to the regression corpus; return how many."""
    crashes = sorted(WORKDIR.glob(f"{name}-crash-*"))
    if not crashes:
        return 0
    from tests.fuzz.targets import unkeyed

    corpus = json.loads(REGRESSIONS.read_text())
    for crash in crashes:
        data = crash.read_bytes()
        key, value = unkeyed(data) if name == "visit_envelope" else (b"", data)
        corpus["cases"].append({"target": name, "why": f"found by make fuzz on {date.today()}",
                                "key": key.decode("utf-8", "replace"), "value": value.hex()})
        crash.rename(crash.with_name(crash.name + ".kept"))
    REGRESSIONS.write_text(json.dumps(corpus, indent=2) + "\n")
    return len(crashes)


TARGET_NAMES = ["clinic_key", "dead_letter", "deidentified_visit", "dossier", "dossier_signature", "identity_card",
                "integration_reply", "integration_request", "released_visit", "signed_message", "subscriber_policy",
                "visit_envelope"]


def main() -> int:
    # No project module may be imported before fuzz_one: atheris instruments only what it imports itself.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", default=TARGET_NAMES)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        fuzz_one(args.one, args.runs)
        return 0
    print(f"{'target':22} {'inputs':>10} {'seconds':>8}  outcomes", flush=True)
    crashed = 0
    for name in args.targets:
        done = subprocess.run([sys.executable, "-m", "tests.fuzz.run", "--one", name, "--runs", str(args.runs)],
                              cwd=ROOT, capture_output=True, text=True)
        found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        kept = keep_crashes(name)
        crashed += kept
        if found:
            r = found[-1]
            print(f"{name:22} {r['inputs']:>10,} {r['seconds']:>8}  {r['outcomes']}", flush=True)
        else:
            print(f"{name:22} CRASHED after fewer than {args.runs:,} inputs; {kept} input(s) added to "
                  f"{REGRESSIONS.relative_to(ROOT)}\n{done.stderr[-2000:]}", flush=True)
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
