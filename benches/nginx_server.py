"""A local nginx answering every request with a small OpenAI-style JSON body (keep-alive),
started on a free port of 127.0.0.1 for the transport benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BODY = ('{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,'
        '"model":"gpt-bench","choices":[{"index":0,"message":{"role":"assistant",'
        '"content":"Hello!"},"finish_reason":"stop"}],'
        '"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}')

# Over TLS, HTTP/2 offered by ALPN next to HTTP/1.1 (nginx 1.22: `listen ... ssl http2`), with
# the stream limit of the issue's measurements; /nginx_status counts the connections accepted.
TLS_SERVER = """
    http2_max_concurrent_streams {streams};
    server {{
        listen 127.0.0.1:{tls_port} ssl http2 backlog=4096;
        ssl_certificate {dir}/server.pem;
        ssl_certificate_key {dir}/server.pem;
        ssl_session_cache shared:SSL:1m;
        location = /nginx_status {{ stub_status; }}
        location /sse {{
            default_type text/event-stream;
            return 200 '{sse}';
        }}
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
"""

# An OpenAI-style event stream: 20 chunks of one token each, then [DONE].
SSE = "".join(
    'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","choices":[{"index":0,'
    f'"delta":{{"content":"t{i} "}},"finish_reason":null}}]}}\n\n' for i in range(20)
) + "data: [DONE]\n\n"

CONFIG = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log crit;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
{tls_server}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Nginx:
    """``tls_streams``: also serve TLS (HTTP/2 and HTTP/1.1) on ``tls_url`` with that stream limit,
    certificates from a throw-away CA (``ca_file``)."""

    def __init__(self, tls_streams: int | None = None):
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed")
        self.dir = tempfile.mkdtemp(prefix="fast-litellm-nginx-")
        self.port = free_port()
        tls_server = ""
        if tls_streams is not None:
            import trustme

            ca = trustme.CA()
            ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(f"{self.dir}/server.pem")
            self.ca_file = f"{self.dir}/ca.pem"
            ca.cert_pem.write_to_path(self.ca_file)
            self.tls_port = free_port()
            self.tls_base = f"https://127.0.0.1:{self.tls_port}"
            tls_server = TLS_SERVER.format(dir=self.dir, tls_port=self.tls_port, streams=tls_streams, body=BODY, sse=SSE)
        conf = Path(self.dir) / "nginx.conf"
        conf.write_text(CONFIG.format(dir=self.dir, port=self.port, body=BODY, tls_server=tls_server))
        self.process = subprocess.Popen([binary, "-c", str(conf), "-p", self.dir],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.close()
                    raise RuntimeError("nginx did not start")
                time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}/v1/chat/completions"

    @staticmethod
    def status_reader(tls_base: str, ca_file: str):
        """A function giving the connections nginx accepted so far (its stub_status)."""
        import ssl
        import urllib.request

        context = ssl.create_default_context(cafile=ca_file)

        def accepted() -> int:
            with urllib.request.urlopen(f"{tls_base}/nginx_status", context=context, timeout=10) as r:
                return int(r.read().decode().splitlines()[2].split()[0])

        return accepted

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
