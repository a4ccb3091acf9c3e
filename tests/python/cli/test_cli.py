"""`python -m fast_litellm status` and `check URL`, run as a user runs them, against servers on
127.0.0.1 that count what they see."""

import json
import os
import ssl
import subprocess
import sys

import pytest
import trustme

from servers import Server, refused_port

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def cli(*args, **env):
    clean = {k: v for k, v in os.environ.items()
             if k.upper() not in PROXY_VARIABLES and not k.startswith(("FAST_LITELLM_", "AIOHTTP_"))}
    return subprocess.run([sys.executable, "-m", "fast_litellm", *args], capture_output=True, text=True,
                          timeout=120, env={**clean, **env})


def cli_json(*args, expect=0, **env):
    result = cli(*args, "--json", **env)
    assert result.returncode == expect, result.stdout + result.stderr[-4000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def tls():
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ca, ctx


# --- check ---------------------------------------------------------------------------------------


def test_check_reports_a_new_then_a_reused_connection(server):
    report = cli_json("check", f"{server.url}/json")
    assert report["ok"] is True and report["error"] is None
    assert report["url"] == f"{server.url}/json" and report["via"] == "fast_litellm pool"
    assert report["tls"] is None and report["proxy"] is None
    first, second = report["requests"]
    assert (first["status"], first["http_version"], first["connection"]) == (200, "HTTP/1.1", "new")
    assert (second["status"], second["http_version"], second["connection"]) == (200, "HTTP/1.1", "reused")
    for r in (first, second):
        assert 0 < r["time_to_first_byte_s"] <= r["total_s"] < 10
    assert report["connect_s"] >= 0
    # What the server saw: two requests on one connection.
    assert (server.connections, server.requests) == (1, 2)
    endpoint = report["pool"][f"http://127.0.0.1:{server.port}"]
    assert (endpoint["active"], endpoint["idle"], endpoint["total"]) == (0, 1, 1)


def test_check_prints_a_readable_summary(server):
    result = cli("check", f"{server.url}/json")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"GET {server.url}/json through fast_litellm's pool" in out
    assert "TLS: not used" in out
    assert "request 1: 200 OK, HTTP/1.1, new connection" in out
    assert "request 2: 200 OK, HTTP/1.1, reused connection" in out


def test_check_exits_1_when_the_request_fails():
    port = refused_port()
    report = cli_json("check", f"http://127.0.0.1:{port}/", expect=1)
    assert report["ok"] is False
    assert report["error"]["type"] == "ConnectError"
    assert len(report["requests"]) == 1  # no second try after a failure
    result = cli("check", f"http://127.0.0.1:{port}/")
    assert result.returncode == 1 and "request 1: failed" in result.stdout and "ConnectError" in result.stdout


def test_check_an_error_status_is_still_a_response(server):
    report = cli_json("check", f"{server.url}/status?code=503")
    assert [r["status"] for r in report["requests"]] == [503, 503]


@pytest.mark.parametrize("args", [[], ["check"], ["check", "ftp://127.0.0.1/"], ["check", "not a url"],
                                  ["check", "http://127.0.0.1/", "--timeout", "0"], ["frobnicate"],
                                  ["check", "https://127.0.0.1/", "--insecure", "--cacert", "ca.pem"]])
def test_usage_errors_exit_2(args):
    result = cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr  # says why


def test_check_with_a_missing_ca_bundle_is_a_usage_error(tmp_path):
    result = cli("check", "https://127.0.0.1/", "--cacert", str(tmp_path / "missing.pem"))
    assert result.returncode == 2 and "cannot read PEM file" in result.stderr


def test_check_shows_no_secrets(server):
    url = f"http://user:hunter2@127.0.0.1:{server.port}/echo?api_key=sk-SECRET#frag"
    for result in (cli("check", url), cli("check", "--json", url)):
        assert result.returncode == 0, result.stderr
        assert "hunter2" not in result.stdout + result.stderr
        assert "SECRET" not in result.stdout + result.stderr


def test_check_tls_verification_and_its_ca(tls, tmp_path):
    ca, ctx = tls
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with Server(tls=ctx) as server:
        report = cli_json("check", f"{server.url}/json", "--cacert", str(bundle))
        assert report["tls"]["verify"] is True and report["tls"]["ca"] == str(bundle)
        assert report["tls"]["source"] == "--cacert"
        assert [r["connection"] for r in report["requests"]] == ["new", "reused"]

        # The default: what LiteLLM's traffic gets (SSL_CERT_FILE, or the bundled roots), which
        # does not know the test CA.
        other = tmp_path / "other.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        report = cli_json("check", f"{server.url}/json", expect=1, SSL_CERT_FILE=str(other))
        assert report["tls"]["ca"] == str(other) and report["error"]["type"] == "ConnectError"
        report = cli_json("check", f"{server.url}/json", expect=1, SSL_CERT_FILE="")
        assert report["tls"] == {"verify": True, "ca": "bundled Mozilla roots", "source": "default",
                                 "client_certificate": None, "client_certificate_source": "default"}
        assert report["error"]["type"] == "ConnectError"

        report = cli_json("check", f"{server.url}/json", "--insecure")
        assert report["ok"] and report["tls"]["verify"] is False and report["tls"]["source"] == "--insecure"
        report = cli_json("check", f"{server.url}/json", SSL_CERT_FILE=str(bundle))
        assert report["ok"] and report["tls"]["ca"] == str(bundle) and report["tls"]["source"] == "SSL_CERT_FILE"
        result = cli("check", f"{server.url}/json", SSL_VERIFY="false")
        assert result.returncode == 0 and "certificate NOT verified (SSL_VERIFY)" in result.stdout


def test_check_says_when_a_proxy_carries_the_request(server):
    with Server() as proxy:  # answers itself: enough to see the request went there
        report = cli_json("check", "http://example.invalid/json", HTTP_PROXY=f"http://user:pw@127.0.0.1:{proxy.port}")
    assert report["ok"] and report["via"].startswith("proxy")
    assert report["proxy"] == f"http://127.0.0.1:{proxy.port}"  # without its userinfo
    assert proxy.requests == 2 and server.requests == 0


# --- status --------------------------------------------------------------------------------------


def test_status_json_shows_the_hooks_and_where_settings_come_from():
    report = cli_json("status", FAST_LITELLM_MAX_CONNECTIONS="64", AIOHTTP_CONNECTOR_LIMIT_PER_HOST="9")
    assert report["ok"] is True and report["installed"] is True
    assert report["hooks"] and set(report["hooks"].values()) == {"fast_litellm"}
    assert report["litellm_version"] == report["tested_litellm_versions"]
    assert report["litellm_version_matches_tested"] is True
    settings = report["settings"]
    assert settings["max_connections"] == {"value": 64, "source": "FAST_LITELLM_MAX_CONNECTIONS"}
    assert settings["max_connections_per_endpoint"] == {"value": 9, "source": "AIOHTTP_CONNECTOR_LIMIT_PER_HOST (LiteLLM)"}
    assert settings["idle_timeout"]["source"] == "default"
    assert settings["io_threads"] == {"value": 1, "source": "default"}
    assert settings["disabled"] == {"value": False, "source": "default"}
    assert report["pool"]["pool_name"] == "default" and report["pool"]["total_connections"] == 0


def test_status_text(tmp_path):
    result = cli("status", HTTPS_PROXY="http://user:hunter2@127.0.0.1:3128", SSL_CERT_FILE="")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "hooks: installed" in out and "(the tested one)" in out
    assert "litellm.client_session" in out and "AsyncHTTPHandler.create_async_transport" in out
    assert "on, CA: bundled Mozilla roots" in out
    assert "https:// -> http://127.0.0.1:3128" in out and "hunter2" not in out
    assert "pool 'default'" in out


def test_status_exits_1_when_fast_litellm_is_disabled():
    report = cli_json("status", expect=1, FAST_LITELLM_DISABLE="1")
    assert report["ok"] is False and report["installed"] is False and report["hooks"] == {}
    assert report["settings"]["disabled"] == {"value": True, "source": "FAST_LITELLM_DISABLE"}
    result = cli("status", FAST_LITELLM_DISABLE="1")
    assert result.returncode == 1 and "FAST_LITELLM_DISABLE is set" in result.stdout


def test_status_with_a_setting_the_pool_refuses():
    result = cli("status", FAST_LITELLM_MAX_CONNECTIONS="lots")
    assert result.returncode == 1
    assert "FAST_LITELLM_MAX_CONNECTIONS" in result.stdout + result.stderr
