#!/usr/bin/env python3
"""Out-of-process fuzz campaign of haste's file readers (issue #14, item 6); run through Scripts/fuzz.sh.

For each format, N mutants of seed files (seeded: mutant i of format f is the same on every run) are written to
disk and read by the release `haste` in its own process (`haste inspect --verify`, and `haste convert` for a
quarter of the torch files), under a timeout and a resident-memory cap. Each run is classified:
  ok           exit 0
  clean error  exit != 0 with an "Error: ..." message and no signal
  crash        killed by a signal, a Swift runtime failure, or a failure without a message
  timeout      still running after --timeout seconds (killed)
  over memory  resident memory above --mem-mb (killed): a tiny file must not take gigabytes
Peak memory is the child's ru_maxrss (os.wait4). Crashing and timed-out inputs are kept under OUT/crashes with
the command and stderr, to reproduce with `haste inspect --verify FILE`. Needs only the Python standard library.
"""
import argparse
import io
import json
import os
import random
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "Tests", "HasteTests", "Fixtures")
FORMATS = ["safetensors", "npy", "npz", "npz-deflated", "pth", "pth-deflated", "legacy", "torchscript", "pickle", "png", "jpeg"]
VERDICTS = ["ok", "clean error", "crash", "timeout", "memory"]
FAILURES = ("crash", "timeout", "memory")
AS_CEILING = 64 << 30                                  # bytes of address space per run: a safety net only
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               1 << 32, 1 << 60, 1 << 62, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]


# ----- seeds -------------------------------------------------------------------------------------------------

def safetensors_bytes(tensors, metadata=None):
    header, data = {}, bytearray()                # appended in place: linear, not one copy of all so far per tensor
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(data)


def fixture_tensors(name):
    """{key: bytes} of a fixture safetensors file (read with the standard library)."""
    raw = open(os.path.join(FIXTURES, name), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    return {k: raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in header.items() if k != "__metadata__"}


def seeds(fmt):
    """[(name, bytes)] of valid files of `fmt`."""
    def files(folder, *names):
        return [(n, open(os.path.join(FIXTURES, folder, n), "rb").read()) for n in names]
    if fmt == "safetensors":
        f32 = struct.pack("<12f", *range(12))
        return [("mixed.safetensors", safetensors_bytes(
                    [("a.weight", "F32", [3, 4], f32), ("b", "I64", [2], struct.pack("<2q", -1, 7)), ("c", "U8", [5], bytes(range(5))),
                     ("d", "BOOL", [3], b"\x00\x01\x02"), ("e", "F16", [2, 1], b"\x00\x3c\x00\xc0"), ("f", "BF16", [0, 3], b"")],
                    {"step": "7", "format": "pt"})),
                ("io_npz.safetensors", open(os.path.join(FIXTURES, "io_npz.safetensors"), "rb").read())]
    if fmt == "npy":
        return files("npy", "f4.npy", "be_f8.npy", "fortran.npy", "v2_f4.npy", "v3_f4.npy", "b1.npy", "empty.npy", "scalar.npy")
    if fmt == "npz":
        return files("npz", "numpy.npz", "adm_batch.npz", "fortran.npz", "bigendian.npz")
    if fmt == "npz-deflated":
        return files("npz", "compressed.npz")
    if fmt in ("pth", "pickle"):
        return files("pth", "views.pt", "views_p4.pt", "sit_state.pth")
    if fmt == "pth-deflated":
        return files("pth", "views_deflated.pt")
    if fmt == "legacy":
        return files("pth", "views_legacy.pt")
    if fmt == "torchscript":
        return files("pth", "scripted.pt")
    images = fixture_tensors("preprocess_pil.safetensors")
    suffix = "_png.bytes" if fmt == "png" else "_jpg.bytes"
    return sorted((k[:-len(".bytes")] + ("." + fmt), v) for k, v in images.items() if k.endswith(suffix))


# ----- mutation ----------------------------------------------------------------------------------------------

def header_end(fmt, b):
    """Where the structured part (header, magic numbers) ends: half of the mutations land before it."""
    if fmt == "safetensors" and len(b) >= 8:
        return min(len(b), 8 + struct.unpack("<Q", b[:8])[0])
    if fmt == "npy":
        return min(len(b), 128)
    return min(len(b), 512)


def mutate_bytes(rng, b, focus):
    b = bytearray(b)
    if not b:
        return bytes([rng.randrange(256)])
    def at():
        f = min(focus, len(b))
        return rng.randrange(f) if rng.random() < 0.5 and f > 0 else rng.randrange(len(b))
    # Mostly in-place damage (offsets stay valid, so it reaches deep); shifting edits (truncate, delete,
    # duplicate) are rarer, since they break every offset behind them and most such files fail early.
    for _ in range(rng.choices([1, 2, 3, 4], weights=[60, 25, 10, 5])[0]):
        if not b:
            b.append(rng.randrange(256))
        kind = rng.choices(range(8), weights=[25, 15, 15, 5, 5, 5, 15, 15])[0]
        if kind == 0:                                      # flip bits
            i = at(); b[i] ^= 1 << rng.randrange(8)
        elif kind == 1:                                    # an interesting byte
            b[at()] = rng.choice([0, 0x7F, 0x80, 0xFF, 0x28, 0x2E, 0x5B, 0x7B, 0x22, 0x2C, 0x30, 0x39])
        elif kind == 2:                                    # an interesting little-endian integer
            i, width = at(), rng.choice([2, 4, 8])
            v = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
            b[i:i + width] = v.to_bytes(width, "little")
        elif kind == 3 and len(b) > 1:                     # truncate
            del b[1 + rng.randrange(len(b) - 1):]
        elif kind == 4:                                    # delete a run
            i = at(); del b[i:i + 1 + rng.randrange(16)]
        elif kind == 5:                                    # duplicate a run
            i = at(); n = 1 + rng.randrange(64); b[i:i] = b[i:i + n]
        elif kind == 6:                                    # a number in a text header becomes a huge one
            text = bytes(b[:min(focus, len(b))])
            runs = [m.span() for m in re.finditer(rb"\d+", text)]
            if runs:
                s, e = rng.choice(runs)
                b[s:e] = rng.choice([b"0", b"4611686018427387904", b"9223372036854775807", b"18446744073709551616",
                                     b"-1", b"99999999999999999999999", b"2147483648"])
        else:                                              # random byte
            b[at()] = rng.randrange(256)
    return bytes(b)


SIZES = [0, 1, 2, 3, -1, 255, 1 << 31, 1 << 32, 1 << 40, 1 << 60, 1 << 62, (1 << 63) - 1]


def mutate_safetensors_header(rng, b):
    """Valid JSON, damaged meaning: a shape, offset or dtype of one entry changed, the length prefix kept right."""
    n = struct.unpack("<Q", b[:8])[0]
    header, data = json.loads(b[8:8 + n]), b[8 + n:]
    name = rng.choice([k for k in header if k != "__metadata__"])
    entry, what = header[name], rng.randrange(5)
    if what == 0 and entry["shape"]:
        entry["shape"][rng.randrange(len(entry["shape"]))] = rng.choice(SIZES)
    elif what == 1:
        entry["shape"] = entry["shape"] + [rng.choice(SIZES)] * rng.choice([1, 2, 70])
    elif what == 2:
        entry["data_offsets"][rng.randrange(2)] = rng.choice(SIZES + [len(data), len(data) + 1])
    elif what == 3:
        entry["dtype"] = rng.choice(["F32", "F64", "U8", "BOOL", "BF16", "I16", "F8_E4M3", "", "f32"])
    else:
        header["__metadata__"] = rng.choice([{"a": 1}, {"a": ["x"]}, "x", {"k" * 300: "v" * 10000}])
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(data)


def mutate_npy_header(rng, b):
    """A well-formed header dict with a damaged shape, descr or order (padding and length kept consistent)."""
    major = b[6]
    size = 2 if major == 1 else 4
    length = int.from_bytes(b[8:8 + size], "little")
    data = b[8 + size + length:]
    shape = tuple(rng.choice(SIZES) if rng.random() < 0.5 else 2 for _ in range(rng.choice([0, 1, 2, 3, 4, 40])))
    descr = rng.choice(["<f4", "<f8", ">f4", "|u1", "|b1", "<i8", "<f2", "<c8", "|O", "<U3", "f4", "<f16"])
    text = "{'descr': %r, 'fortran_order': %s, 'shape': %s, }" % (descr, rng.choice(["True", "False", "0"]), repr(shape))
    raw = text.encode()
    raw += b" " * ((64 - (8 + size + len(raw) + 1) % 64) % 64) + b"\n"
    return b[:6] + bytes([major, 0]) + len(raw).to_bytes(size, "little") + raw + data


def mutate_image_size(rng, fmt, b):
    """The declared image size set to an extreme (PNG IHDR with its CRC fixed, JPEG SOFn): a few hundred bytes
    must not make the decoder allocate gigabytes."""
    b = bytearray(b)
    side = lambda bits: rng.choice([0, 1, 2, 255, 4096, 30000, 65500, (1 << bits) - 1] + ([1 << 24, 1 << 31] if bits > 16 else []))
    if fmt == "png" and len(b) >= 33:
        b[16:24] = struct.pack(">II", side(31), side(31))
        return fix_png_crcs(bytes(b))
    sof = next((i for i in range(2, len(b) - 9) if b[i] == 0xFF and 0xC0 <= b[i + 1] <= 0xCF and b[i + 1] not in (0xC4, 0xC8, 0xCC)), None)
    if sof is not None:
        b[sof + 5:sof + 9] = struct.pack(">HH", side(16), side(16))
    return bytes(b)


def rezip(rng, data, prefer):
    """Mutates one entry of a zip (an entry ending in `prefer` when there is one) and re-zips it stored, with
    correct CRCs, so the damage reaches the parser behind the zip layer."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        entries = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    candidates = [k for k, (n, _) in enumerate(entries) if n.endswith(prefer)] or list(range(len(entries)))
    k = rng.choice(candidates)
    name, content = entries[k]
    if name.endswith(".npy") and content.startswith(b"\x93NUMPY") and rng.random() < 0.5:
        entries[k] = (name, mutate_npy_header(rng, content))
    else:
        entries[k] = (name, mutate_bytes(rng, content, min(len(content), 256)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for n, c in entries:
            z.writestr(zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0)), c)
    return out.getvalue()


def fix_png_crcs(b):
    b, at = bytearray(b), 8
    while at + 12 <= len(b):
        n = struct.unpack(">I", b[at:at + 4])[0]
        if n > len(b) - at - 12:
            break
        b[at + 8 + n:at + 12 + n] = struct.pack(">I", zlib.crc32(bytes(b[at + 4:at + 8 + n])) & 0xFFFFFFFF)
        at += 12 + n
    return bytes(b)


def mutant(fmt, seed_files, seed, i):
    rng = random.Random(f"{seed}:{fmt}:{i}")
    name, b = seed_files[i % len(seed_files)]
    # Zip entries carry CRCs: half of the archive mutants damage one entry and re-zip it with valid CRCs
    # ("pickle": all of them), so that the npy header parser and the unpickler meet the damage.
    if fmt == "pickle" or (fmt in ("npz", "pth", "torchscript") and rng.random() < 0.5):
        return name, rezip(rng, b, {"pickle": ".pkl", "pth": ".pkl", "torchscript": ".pkl", "npz": ".npy"}[fmt])
    if fmt == "safetensors" and rng.random() < 0.4:
        return name, mutate_safetensors_header(rng, b)
    if fmt == "npy" and rng.random() < 0.4:
        return name, mutate_npy_header(rng, b)
    if fmt in ("png", "jpeg") and rng.random() < 0.1:
        return name, mutate_image_size(rng, fmt, b)
    out = mutate_bytes(rng, b, header_end(fmt, b))
    if fmt == "png" and rng.random() < 0.5:
        out = fix_png_crcs(out)
    return name, out


# ----- running -----------------------------------------------------------------------------------------------

def resident_kib(pid):
    """VmRSS of a running process in KiB (None once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


def run_one(haste, fmt, path, use_convert, timeout, mem_mb, workdir):
    if use_convert:
        cmd = [haste, "convert", path, os.path.join(workdir, os.path.basename(path) + ".out.safetensors")]
    else:
        cmd = [haste, "inspect", "--verify", path]
    err_path = path + ".stderr"
    def limits():
        # A loose address-space ceiling only as a safety net: allocations must succeed as they would in real use,
        # so that a reader which would take gigabytes shows up as "memory" (resident memory watched below),
        # not as a clean "out of memory" error.
        resource.setrlimit(resource.RLIMIT_AS, (AS_CEILING, AS_CEILING))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    env = dict(os.environ, SWIFT_BACKTRACE="enable=no")
    start = time.monotonic()
    with open(err_path, "wb") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=limits, env=env)
    pidfd = os.pidfd_open(p.pid)                       # signals through it cannot reach a recycled pid
    done, stopped = threading.Event(), []
    def watch():
        while not done.wait(0.02):
            rss = resident_kib(p.pid)
            why = "timeout" if time.monotonic() - start > timeout else "memory" if rss and rss > mem_mb * 1024 else None
            if why:
                stopped.append(why)
                try:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(p.pid, 0)
    done.set()
    watcher.join()
    os.close(pidfd)
    p.returncode = 0                                   # reaped here; keep Popen from waiting again
    seconds = time.monotonic() - start
    stderr = open(err_path, "rb").read().decode("utf-8", "replace")
    os.remove(err_path)
    for f in os.listdir(workdir):
        if f.startswith(os.path.basename(path) + ".out"):
            os.remove(os.path.join(workdir, f))
    if stopped:
        verdict = stopped[0]
        stderr += f"\n[killed: {'ran past the timeout' if verdict == 'timeout' else f'resident memory passed {mem_mb} MiB'}]"
    elif os.WIFSIGNALED(status):
        verdict = "crash"
        stderr += f"\n[killed by signal {os.WTERMSIG(status)}]"
    elif os.WEXITSTATUS(status) == 0:
        verdict = "ok"
    elif re.search(r"Fatal error|Swift runtime failure|Program crashed", stderr) or "Error:" not in stderr:
        verdict = "crash"
    else:
        verdict = "clean error"
    named = verdict != "clean error" or path in stderr
    return verdict, seconds, usage.ru_maxrss, stderr, cmd, named


def campaign(args):
    formats = args.formats.split(",") if args.formats else FORMATS
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        print(f"fuzz: unknown format(s) {unknown}; known: {','.join(FORMATS)}", file=sys.stderr)
        sys.exit(2)
    os.makedirs(args.out, exist_ok=True)
    crashes = os.path.join(args.out, "crashes")
    os.makedirs(crashes, exist_ok=True)
    work = tempfile.mkdtemp(prefix="haste-fuzz-", dir=args.out)
    rows, unnamed = [], []
    for fmt in formats:
        seed_files = seeds(fmt)
        counts = {verdict: 0 for verdict in VERDICTS}
        max_time, max_rss = 0.0, 0
        def job(i):
            name, data = mutant(fmt, seed_files, args.seed, i)
            ext = os.path.splitext(name)[1] or ".bin"
            path = os.path.join(work, f"{fmt}-{i:06d}{ext}")
            with open(path, "wb") as f:
                f.write(data)
            use_convert = fmt in ("pth", "pth-deflated", "legacy", "torchscript", "pickle") and i % 4 == 3
            result = run_one(args.haste, fmt, path, use_convert, args.timeout, args.mem_mb, work)
            verdict, _, _, stderr, cmd, _ = result
            if verdict in FAILURES:
                keep = os.path.join(crashes, os.path.basename(path))
                os.replace(path, keep)
                with open(keep + ".txt", "w") as f:
                    f.write(f"{verdict}\nseed file: {name}\nrepro: {' '.join(c if c != path else keep for c in cmd)}\n\n{stderr}")
            else:
                os.remove(path)
            return result
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for verdict, seconds, rss, stderr, cmd, named in pool.map(job, range(args.count)):
                counts[verdict] += 1
                max_time, max_rss = max(max_time, seconds), max(max_rss, rss)
                if not named:
                    unnamed.append((fmt, stderr.strip().splitlines()[-1] if stderr.strip() else ""))
        rows.append((fmt, args.count, counts, max_time, max_rss))
        print(f"  {fmt}: {counts} max {max_time:.2f} s, {max_rss / 1024:.0f} MiB", file=sys.stderr, flush=True)
    os.rmdir(work) if not os.listdir(work) else None
    table = render(rows, args)
    print(table)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(table + "\n")
    for fmt, line in unnamed[:20]:
        print(f"warning: {fmt}: an error message does not name the file: {line}", file=sys.stderr)
    bad = sum(c[v] for _, _, c, _, _ in rows for v in FAILURES)
    if bad:
        print(f"{bad} crashing, timed-out or memory-hungry inputs kept in {crashes} (each with a .txt: command and stderr)", file=sys.stderr)
    return 1 if bad else 0


def render(rows, args):
    lines = [f"haste fuzz campaign: seed {args.seed}, {args.count} mutants per format, timeout {args.timeout:g} s, "
             f"resident memory cap {args.mem_mb} MiB, {args.jobs} jobs",
             "", "| format | mutants | ok | clean error | crash | timeout | over memory | max time (s) | max RSS (MiB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    def row(label, n, c, t, rss):
        return f"| {label} | {n} | " + " | ".join(str(c[v]) for v in VERDICTS) + f" | {t:.2f} | {rss / 1024:.0f} |"
    for fmt, n, c, t, rss in rows:
        lines.append(row(fmt, n, c, t, rss))
    total = {v: sum(r[2][v] for r in rows) for v in VERDICTS}
    lines.append(row("**total**", sum(r[1] for r in rows), total, max((r[3] for r in rows), default=0),
                     max((r[4] for r in rows), default=0)))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("count", type=int, help="mutants per format")
    p.add_argument("--haste", required=True, help="the haste executable (a release build)")
    p.add_argument("--formats", help="comma-separated subset of " + ",".join(FORMATS))
    p.add_argument("--seed", type=int, default=1, help="campaign seed (default 1): same seed, same mutants")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2)")
    p.add_argument("--timeout", type=float, default=10, help="seconds per run before it counts as a timeout (default 10)")
    p.add_argument("--mem-mb", type=int, default=2048,
                   help="resident memory per run in MiB past which it is killed and counts as 'over memory' (default 2048)")
    p.add_argument("--out", default=os.path.join(ROOT, ".build", "fuzz"), help="where crashes and summary.md go")
    sys.exit(campaign(p.parse_args()))


if __name__ == "__main__":
    main()
