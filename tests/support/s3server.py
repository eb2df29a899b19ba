"""A throwaway S3 endpoint for the tests: s3rver (npm, pinned in tests/s3) on 127.0.0.1
on a free port, in a temporary directory, behind a proxy that checks every request's
SigV4 signature with an independent implementation (botocore's) and can inject faults.

s3rver itself does not verify signatures (a wrong secret succeeds) and ignores
Content-MD5; the proxy answers 403 SignatureDoesNotMatch on a mismatch, 400 on a body
whose SHA-256 or MD5 differs from its headers, and records what it forwarded.
s3rver 3.7 also lacks AbortMultipartUpload (it answers 405); the proxy performs it on
s3rver's upload directory, so a test can check that an aborted upload left nothing, and
answers 404 NoSuchUpload, as AWS does, to a completion of an upload that is gone.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, List, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit
from xml.etree import ElementTree as ET

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

S3_DIR = Path(__file__).resolve().parents[1] / "s3"
KEY = "S3RVER"
SECRET = "S3RVER"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_s3rver() -> Path:
    """Installs the pinned s3rver into tests/s3/node_modules when it is missing."""
    cli = S3_DIR / "node_modules" / "s3rver" / "bin" / "s3rver.js"
    if not cli.exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=S3_DIR, check=True,
                       timeout=600)
    return cli


class S3rver:
    def __init__(self, buckets: List[str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="mevb-s3rver-")
        self.port = free_port()
        self.buckets = buckets
        self.proc: Optional[subprocess.Popen] = None
        self.log = Path(self.dir) / "s3rver.log"

    def start(self) -> "S3rver":
        cli = ensure_s3rver()
        # keep-directories.js closes a race in s3rver that kills the server (see the file).
        args = ["node", "-r", str(S3_DIR / "keep-directories.js"), str(cli), "-d", str(Path(self.dir) / "data"),
                "-a", "127.0.0.1", "-p", str(self.port), "--silent"]
        for b in self.buckets:
            args += ["--configure-bucket", b]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"s3rver exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("s3rver did not start listening")

    def stop(self) -> None:
        """Stops the server; one that died on its own while the tests ran is an error that
        shows its log (its clients only saw refused connections)."""
        died = self.proc is not None and self.proc.poll() is not None
        if died:
            log = self.log.read_text(errors="replace")[-4000:]
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError(f"s3rver died during the tests (exit {self.proc.returncode}): {log}")
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Fault:
    """For the next `count` matching requests: answers with the status `action` ("500"),
    drops the connection mid-body ("drop"), forwards the request but drops the connection
    in the middle of the answer ("drop-response"), or answers 200 with an <Error> body whose
    code follows the dash ("200-InternalError").

    More actions (fault-injection tests): "truncate" / "flip" forward a PUT body short by
    one byte / with one bit flipped and pass on the server's answer, as a server that
    keeps damaged data; "truncate-lie" / "flip-lie" also replace the answer's ETag with the
    MD5 of the body as received, as a server that damages data after checking it;
    "bad-xml" answers 200 with a malformed XML body; "stale-head" forwards a HEAD but answers
    Content-Length 0, as a server whose reads lag behind its acknowledgements; "foreign-head"
    forwards a HEAD but answers another length and another x-amz-meta-mevb-upload, as if a
    second writer had replaced the object; "huge-xml" answers 200 with a listing of 17 MiB;
    "ignore-range" forwards a GET without its Range header, as a server that sends the
    whole object. `code` is the S3 error code of a
    status answer (default: InternalError for 500, SlowDown for 503, a plausible one
    otherwise); `hits` counts the requests the fault caught."""

    def __init__(self, match: Callable[[str, str, Dict[str, str]], bool], action: str, count: int = 1,
                 code: Optional[str] = None) -> None:
        self.match, self.action, self.count, self.code = match, action, count, code
        self.hits = 0


_DEFAULT_CODES = {400: "InvalidRequest", 403: "AccessDenied", 404: "NoSuchKey", 409: "OperationAborted",
                  429: "TooManyRequestsException", 500: "InternalError", 502: "BadGateway", 503: "SlowDown",
                  504: "GatewayTimeout"}


def _xml_error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()


class VerifyingProxy:
    """HTTP proxy in front of s3rver that verifies SigV4 with botocore."""

    def __init__(self, upstream: S3rver, secret: str = SECRET, region: str = "us-east-1") -> None:
        self.upstream_port = upstream.port
        self.data_dir = Path(upstream.dir) / "data"
        self.secret = secret
        self.region = region
        self.port = free_port()
        self.requests: List[dict] = []   # method, path, query, status
        self.faults: List[Fault] = []
        self.list_page_size: Optional[int] = None  # > 0: ListObjectsV2 pages of this many keys
        # s3rver answers NotImplemented to ListMultipartUploads: the proxy answers it from
        # s3rver's pending uploads (False: pass the request on, as a server without it).
        self.list_uploads = True
        self.uploads_page_size: Optional[int] = None  # > 0: ListMultipartUploads pages
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "VerifyingProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def calls(self, method: Optional[str] = None, query_has: Optional[str] = None) -> List[dict]:
        with self.lock:
            return [r for r in self.requests if (method is None or r["method"] == method)
                    and (query_has is None or query_has in r["query"])]

    def pending_uploads(self, bucket: str) -> List[str]:
        """Keys of the multipart uploads s3rver still holds (neither completed nor aborted)."""
        return sorted((d / "key").read_text() for d in self.data_dir.glob(f"{bucket}/*_uploads/*")
                      if (d / "key").exists())

    def _abort_upload(self, h: BaseHTTPRequestHandler, bucket: str, upload_id: str) -> None:
        dirs = [d for d in self.data_dir.glob(f"{bucket}/*_uploads/*") if d.name == upload_id]
        for d in dirs:
            shutil.rmtree(d)
        status = 204 if dirs else 404
        self._record(h, status)
        self._reply(h, status, {"Content-Type": "application/xml"},
                    b"" if dirs else _xml_error("NoSuchUpload", "The specified upload does not exist."))

    def _verify(self, h: BaseHTTPRequestHandler, body: bytes) -> Optional[tuple]:
        auth = h.headers.get("Authorization", "")
        m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/s3/aws4_request, "
                         r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})", auth)
        if not m:
            return 403, "AccessDenied", "missing or malformed SigV4 Authorization header"
        access_key, day, region, signed, signature = m.groups()
        if access_key != KEY:
            return 403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
        names = signed.split(";")
        for required in ("host", "x-amz-date", "x-amz-content-sha256"):
            if required not in names:
                return 403, "AccessDenied", f"{required} is not signed"
        amz_date = h.headers.get("x-amz-date", "")
        if amz_date[:8] != day or region != self.region:
            return 403, "SignatureDoesNotMatch", "credential scope does not match"
        declared = h.headers.get("x-amz-content-sha256", "")
        if declared != "UNSIGNED-PAYLOAD" and declared != hashlib.sha256(body).hexdigest():
            return 400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match"
        md5 = h.headers.get("Content-MD5")
        if md5 is not None and md5 != base64.b64encode(hashlib.md5(body).digest()).decode():
            return 400, "BadDigest", "The Content-MD5 you specified did not match what we received."
        parts = urlsplit(h.path)
        headers = {n: h.headers.get(n, "") for n in names}
        req = AWSRequest(method=h.command, url=f"http://{h.headers.get('host', '')}{parts.path}",
                         headers=headers, data=body,
                         params=parse_qsl(parts.query, keep_blank_values=True))
        req.context["timestamp"] = amz_date
        signer = S3SigV4Auth(Credentials(KEY, self.secret), "s3", self.region)
        canonical = signer.canonical_request(req)
        expected = signer.signature(signer.string_to_sign(req, canonical), req)
        if expected != signature:
            return 403, "SignatureDoesNotMatch", ("The request signature we calculated does not match the signature "
                                                  "you provided. Check your key and signing method.")
        return None

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        parts = urlsplit(h.path)
        fault = None
        with self.lock:
            for f in self.faults:
                if f.count > 0 and f.match(h.command, parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))):
                    f.count -= 1
                    f.hits += 1
                    fault = f
                    break
        if fault is not None and fault.action == "drop":
            # The connection dies in the middle of the request body.
            h.rfile.read(length // 2)
            self._record(h, "dropped")
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        body = h.rfile.read(length) if length else b""
        if fault is not None and fault.action.startswith("200-"):
            # As CompleteMultipartUpload may do: "200 OK" whose body is an error.
            self._record(h, fault.action)
            self._reply(h, 200, {"Content-Type": "application/xml"}, _xml_error(fault.action[4:], "injected"))
            return
        if fault is not None and fault.action == "huge-xml":
            self._record(h, "huge-xml")
            pad = b" " * (17 << 20)
            self._reply(h, 200, {"Content-Type": "application/xml"},
                        b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult>' + pad +
                        b"<IsTruncated>false</IsTruncated></ListBucketResult>")
            return
        if fault is not None and fault.action == "bad-xml":
            self._record(h, "bad-xml")
            self._reply(h, 200, {"Content-Type": "application/xml"},
                        b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult><IsTruncated>true</IsTr')
            return
        damage = fault.action if fault is not None and fault.action in (
            "truncate", "flip", "truncate-lie", "flip-lie") else None
        if fault is not None and damage is None and fault.action not in ("drop-response", "stale-head",
                                                                          "foreign-head", "ignore-range"):
            status = int(fault.action)
            self._record(h, status)
            self._reply(h, status, {"Content-Type": "application/xml"},
                        _xml_error(fault.code or _DEFAULT_CODES.get(status, "InternalError"), "injected by the test"))
            return
        problem = self._verify(h, body)
        if problem:
            status, code, message = problem
            self._record(h, status)
            self._reply(h, status, {"Content-Type": "application/xml"}, _xml_error(code, message))
            return
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if h.command == "GET" and "uploads" in query and self.list_uploads and parts.path.strip("/").count("/") == 0:
            self._list_uploads(h, parts.path.strip("/"), query)
            return
        if h.command == "DELETE" and "uploadId" in query:
            self._abort_upload(h, parts.path.split("/")[1], query["uploadId"])
            return
        if h.command == "POST" and "uploadId" in query and not any(
                d.name == query["uploadId"] for d in self.data_dir.glob(f"{parts.path.split('/')[1]}/*_uploads/*")):
            # AWS answers 404 NoSuchUpload (s3rver: 500) for an upload that is gone.
            self._record(h, 404)
            self._reply(h, 404, {"Content-Type": "application/xml"},
                        _xml_error("NoSuchUpload", "The specified upload does not exist."))
            return
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            fwd = {k: v for k, v in h.headers.items() if k.lower() not in ("connection", "keep-alive", "expect")}
            received = body
            if damage and body:
                # After the checks: what the server keeps differs from what was sent.
                body = body[:-1] if damage.startswith("truncate") else \
                    body[:len(body) // 2] + bytes([body[len(body) // 2] ^ 0x01]) + body[len(body) // 2 + 1:]
                fwd = {k: v for k, v in fwd.items() if k.lower() != "content-length"}
                fwd["Content-Length"] = str(len(body))
            if fault is not None and fault.action == "ignore-range":
                fwd = {k: v for k, v in fwd.items() if k.lower() != "range"}
            path = h.path
            paginate = bool(self.list_page_size) and h.command == "GET" and query.get("list-type") == "2"
            if paginate:
                # s3rver 3.7 cannot paginate on OpenSSL 3 (its continuation tokens use DES):
                # the proxy asks for everything and serves pages with its own tokens.
                path = parts.path + "?" + urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                                                     if k not in ("continuation-token", "max-keys")])
            conn.request(h.command, path, body=body if h.command in ("PUT", "POST") else None, headers=fwd)
            resp = conn.getresponse()
            data = resp.read()
            if paginate and resp.status == 200:
                data = self._page(data, query.get("continuation-token"))
            headers = {k: v for k, v in resp.getheaders()
                       if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length")}
            if damage and damage.endswith("-lie"):
                headers = {k: v for k, v in headers.items() if k.lower() != "etag"}
                headers["ETag"] = '"' + hashlib.md5(received).hexdigest() + '"'
            if damage:
                self._record(h, damage)
                self._reply(h, resp.status, headers, data)
                return
            if fault is not None and fault.action == "drop-response":
                # The connection dies in the middle of the answer's body.
                self._record(h, "dropped-response")
                h.send_response(resp.status)
                for k, v in headers.items():
                    h.send_header(k, v)
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data[: len(data) // 2])
                h.wfile.flush()
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault is not None and fault.action == "stale-head":
                # An eventually consistent server: the object is there, its length not yet.
                self._record(h, "stale-head")
                self._reply(h, resp.status, headers, data, head_length="0")
                return
            if fault is not None and fault.action == "foreign-head":
                self._record(h, "foreign-head")
                headers = {k: v for k, v in headers.items() if k.lower() != "x-amz-meta-mevb-upload"}
                headers["x-amz-meta-mevb-upload"] = "another-writer"
                self._reply(h, resp.status, headers, data,
                            head_length=str(int(resp.getheader("Content-Length") or 0) + 1))
                return
            self._record(h, resp.status)
            self._reply(h, resp.status, headers, data, head_length=resp.getheader("Content-Length"))
        finally:
            conn.close()

    def _list_uploads(self, h: BaseHTTPRequestHandler, bucket: str, query: Dict[str, str]) -> None:
        """ListMultipartUploads as S3 answers it (sorted by key, then upload; markers),
        from the uploads s3rver holds. Initiated = when s3rver made the upload's folder."""
        entries = []
        for d in self.data_dir.glob(f"{bucket}/*_uploads/*"):
            try:
                entries.append(((d / "key").read_text(), d.name, d.stat().st_mtime))
            except OSError:
                continue  # completed or aborted meanwhile
        prefix = query.get("prefix", "")
        entries = sorted(e for e in entries if e[0].startswith(prefix))
        key_marker, id_marker = query.get("key-marker", ""), query.get("upload-id-marker", "")
        if key_marker:
            entries = [e for e in entries if e[0] > key_marker or (id_marker and e[0] == key_marker and e[1] > id_marker)]
        limit = self.uploads_page_size or int(query.get("max-uploads") or 1000)
        page, truncated = entries[:limit], len(entries) > limit
        ns = "http://s3.amazonaws.com/doc/2006-03-01/"
        root = ET.Element("ListMultipartUploadsResult", xmlns=ns)
        for name, value in (("Bucket", bucket), ("KeyMarker", key_marker), ("UploadIdMarker", id_marker),
                            ("Prefix", prefix), ("MaxUploads", str(limit)),
                            ("IsTruncated", "true" if truncated else "false")):
            ET.SubElement(root, name).text = value
        if truncated:
            ET.SubElement(root, "NextKeyMarker").text = page[-1][0]
            ET.SubElement(root, "NextUploadIdMarker").text = page[-1][1]
        for key, upload_id, mtime in page:
            u = ET.SubElement(root, "Upload")
            ET.SubElement(u, "Key").text = key
            ET.SubElement(u, "UploadId").text = upload_id
            ET.SubElement(u, "StorageClass").text = "STANDARD"
            ET.SubElement(u, "Initiated").text = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(mtime))
        self._record(h, 200)
        self._reply(h, 200, {"Content-Type": "application/xml"}, ET.tostring(root, encoding="UTF-8",
                                                                               xml_declaration=True))

    def _page(self, data: bytes, token: Optional[str]) -> bytes:
        """One page of list_page_size keys of a full ListObjectsV2 answer, after `token`."""
        root = ET.fromstring(data)
        ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        if ns:
            ET.register_namespace("", ns[1:-1])
        after = base64.urlsafe_b64decode(token.encode()).decode() if token else None
        contents = root.findall(f"{ns}Contents")
        keep = [c for c in contents if after is None or c.findtext(f"{ns}Key") > after]
        page = keep[:self.list_page_size]
        for c in contents:
            if c not in page:
                root.remove(c)
        for name in ("IsTruncated", "NextContinuationToken", "KeyCount", "ContinuationToken"):
            for e in root.findall(f"{ns}{name}"):
                root.remove(e)
        ET.SubElement(root, f"{ns}KeyCount").text = str(len(page))
        ET.SubElement(root, f"{ns}IsTruncated").text = "true" if len(keep) > len(page) else "false"
        if len(keep) > len(page):
            last = page[-1].findtext(f"{ns}Key")
            ET.SubElement(root, f"{ns}NextContinuationToken").text = base64.urlsafe_b64encode(last.encode()).decode()
        return ET.tostring(root, encoding="UTF-8", xml_declaration=True)

    def _record(self, h: BaseHTTPRequestHandler, status) -> None:
        parts = urlsplit(h.path)
        with self.lock:
            self.requests.append({"method": h.command, "path": parts.path, "query": parts.query, "status": status,
                                  "storage_class": h.headers.get("x-amz-storage-class")})

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, headers: Dict[str, str], body: bytes,
               head_length: Optional[str] = None) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        if h.command == "HEAD":
            h.send_header("Content-Length", head_length or "0")
            h.end_headers()
            return
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
