"""The wheel users install: built by `make wheel` into dist/, installed into a fresh virtualenv
(nothing from this checkout on its path), imported, and used for a request. `make check-wheel`
builds it and runs this file; without a wheel in dist/ (or with one older than the sources)
the tests are skipped."""

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from helpers import ROOT
from servers import Server

DIST = ROOT / "dist"
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
SOURCES = [ROOT / "Cargo.toml", ROOT / "pyproject.toml", *(ROOT / "src").rglob("*.rs"),
           *(ROOT / "python" / "fast_litellm").rglob("*.py")]
# What the package imports besides the standard library (httpcore comes with httpx; trio,
# outcome and litellm only when the user has them).
IMPORTED_DEPENDENCIES = {"httpx", "sniffio"}
NETWORK_ERRORS = re.compile(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|"
                            r"Max retries exceeded|ProxyError|timed out")


def built(pattern: str):
    found = sorted(DIST.glob(pattern))
    if not found:
        pytest.skip(f"no {pattern} in dist/: `make wheel` builds it (`make check-wheel` builds and tests it)")
    newest_source = max(p.stat().st_mtime for p in SOURCES)
    if found[-1].stat().st_mtime < newest_source:
        pytest.skip(f"dist/{found[-1].name} is older than the sources: `make wheel` builds it again")
    return found[-1]


@pytest.fixture(scope="module")
def wheel():
    return built(f"fast_litellm-{VERSION}-*.whl")


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory):
    """A new virtualenv with the wheel and its dependencies installed, as a user would get it.
    The dependencies come from the package index; offline, they are taken from this test's own
    environment (the wheel itself is still installed from dist/)."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    result = subprocess.run(pip + ["--timeout", "30", str(wheel)], capture_output=True, text=True, env=env,
                            timeout=600)
    how = "from the package index"
    if result.returncode != 0:
        if not (NETWORK_ERRORS.search(result.stderr) or os.environ.get("PIP_NO_INDEX")):
            pytest.fail(f"pip install of {wheel.name} failed:\n{result.stderr[-4000:]}")
        subprocess.run(pip + ["--no-deps", str(wheel)], check=True, env=env, timeout=300)
        link_dependencies_offline(python, requirements(wheel))
        how = "offline: dependencies linked from the test environment"
    return python, env, how


def link_dependencies_offline(python: Path, names: set) -> None:
    """Makes the wheel's dependencies (and theirs) importable in the fresh virtualenv from this
    environment's copies, through a .pth file: only those, not this checkout."""
    from importlib import metadata

    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    links = Path(site).parent / "offline-dependencies"
    links.mkdir()
    todo, seen = sorted(names), set()
    while todo:
        name = todo.pop()
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        dist = metadata.distribution(name)
        for text in dist.requires or []:
            requirement = Requirement(text)  # `packaging` comes with pytest
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
        tops = (dist.read_text("top_level.txt") or "").split() or [
            f.parts[0].removesuffix(".py") for f in dist.files or [] if f.parts[0].endswith(".py") or
            (len(f.parts) > 1 and f.parts[1] == "__init__.py")]
        for top in set(tops):
            for candidate in (Path(dist.locate_file(top)), Path(dist.locate_file(f"{top}.py"))):
                if candidate.exists() and not (links / candidate.name).exists():
                    (links / candidate.name).symlink_to(candidate)
    (Path(site) / "offline-dependencies.pth").write_text(str(links) + "\n")


def requirements(wheel: Path) -> set:
    """The distributions the wheel requires (extras left out)."""
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(f"fast_litellm-{VERSION}.dist-info/METADATA").decode()
    return {re.split(r"[ ;<>=!~\[(]", line.split(":", 1)[1].strip())[0].lower()
            for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line}


def run_in(fresh_venv, *args, **env):
    python, base_env, _ = fresh_venv
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=120,
                          cwd=python.parent, env={**base_env, **env})


def test_the_wheel_is_abi3_for_cpython_310_and_later(wheel):
    assert re.fullmatch(rf"fast_litellm-{re.escape(VERSION)}-cp310-abi3-\w+\.whl", wheel.name), wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(f"fast_litellm-{VERSION}.dist-info/METADATA").decode()
    assert any(re.fullmatch(r"fast_litellm/_core\.abi3\.so", n) for n in names), names
    assert {"fast_litellm/__init__.py", "fast_litellm/__main__.py", "fast_litellm/py.typed"} <= set(names)
    assert "Requires-Python: >=3.10" in metadata
    required = requirements(wheel)
    assert IMPORTED_DEPENDENCIES <= required, f"imported but not declared: {IMPORTED_DEPENDENCIES - required}"


def test_the_sdist_holds_what_a_source_build_needs():
    sdist = built(f"fast_litellm-{VERSION}.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"Cargo.toml", "Cargo.lock", "pyproject.toml", "README.md", "src/lib.rs",
            "python/fast_litellm/__init__.py"} <= names


def test_installed_wheel_imports_from_the_virtualenv_and_sends_a_request(fresh_venv):
    python, _, how = fresh_venv
    result = run_in(fresh_venv, "-c", "import fast_litellm, json; print(json.dumps("
                    "{'file': fast_litellm.__file__, 'version': fast_litellm.__version__}))")
    assert result.returncode == 0, f"({how})\n{result.stderr[-4000:]}"
    info = json.loads(result.stdout)
    assert info["version"] == VERSION
    assert Path(info["file"]).is_relative_to(python.parent.parent), info  # not this checkout
    with Server() as server:
        result = run_in(fresh_venv, "-m", "fast_litellm", "check", "--json", f"{server.url}/json")
        assert result.returncode == 0, f"({how})\n{result.stdout}{result.stderr[-4000:]}"
        report = json.loads(result.stdout)
        assert [r["status"] for r in report["requests"]] == [200, 200]
        assert (server.connections, server.requests) == (1, 2)


def test_installed_wheel_without_litellm_reports_it(fresh_venv):
    result = run_in(fresh_venv, "-m", "fast_litellm", "status", "--json")
    assert result.returncode == 1, result.stderr[-4000:]  # LiteLLM is not in the fresh virtualenv
    report = json.loads(result.stdout)
    assert report["litellm_import_error"].startswith("ModuleNotFoundError")
    assert report["waiting_for_litellm_import"] is True


def test_installing_the_wheel_beside_litellm_keeps_its_httpx(wheel, tmp_path):
    """`pip install litellm` brings the newest httpx it allows (0.29.0 today): installing the wheel
    after it must keep that httpx, neither downgrade it nor fail to resolve, and leave a consistent
    environment (`pip check`). Needs the package index (the pip cache of `make test` serves it)."""
    from importlib import metadata

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--timeout", "30"]
    litellm = f"litellm=={metadata.version('litellm')}"  # the release the suite tests (Makefile)
    result = subprocess.run(pip + [litellm], capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:
        if NETWORK_ERRORS.search(result.stderr) or os.environ.get("PIP_NO_INDEX"):
            pytest.skip("no package index to install LiteLLM from")
        pytest.fail(result.stderr[-4000:])

    def httpx_version():
        return subprocess.run([python, "-c", "import httpx; print(httpx.__version__)"], capture_output=True,
                              text=True, check=True, env=env).stdout.strip()

    before = httpx_version()
    result = subprocess.run(pip + [str(wheel)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert httpx_version() == before, f"installing the wheel changed LiteLLM's httpx {before}"
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    imported = subprocess.run([python, "-c", "import fast_litellm, litellm; print(fast_litellm.status()['installed'])"],
                              capture_output=True, text=True, env=dict(env, LITELLM_LOCAL_MODEL_COST_MAP="True"))
    assert imported.stdout.strip() == "True", imported.stderr[-4000:]
