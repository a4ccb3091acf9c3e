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
    def __init__(self):
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed")
        self.dir = tempfile.mkdtemp(prefix="fast-litellm-nginx-")
        self.port = free_port()
        conf = Path(self.dir) / "nginx.conf"
        conf.write_text(CONFIG.format(dir=self.dir, port=self.port, body=BODY))
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

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
