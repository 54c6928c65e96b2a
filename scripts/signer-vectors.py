#!/usr/bin/env python3
"""Print AK/SK signing test vectors computed by the official Huawei Cloud Python SDK.

The Rust signer (crates/hss-api/src/signer.rs) carries these vectors in its unit tests.
The simulator's own verifier (crates/hss-sim/src/auth.rs) checks the same vectors
with its independent canonicalisation. Re-generate them with:

    python3 -m venv /tmp/sdk && /tmp/sdk/bin/pip install huaweicloudsdkcore
    /tmp/sdk/bin/python3 scripts/signer-vectors.py

The first line printed is the SDK version; the Rust tests note the version the
vectors came from (3.1.219). Query parameters are given as the SDK takes them:
(key, value) tuples, a list value for a repeated key, booleans and integers as
such (the SDK prints them as `true`/`false` and decimal).
"""
import hashlib
from importlib.metadata import version

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

CASES = [
    {
        "name": "listing call with project header",
        "ak": "AccessKey", "sk": "SecretKey", "method": "GET",
        "host": "hss.cn-north-4.myhuaweicloud.com",
        "path": "/v5/0123456789abcdef0123456789abcdef/image/swr-repository",
        "query": [("image_type", "private_image"), ("offset", 0), ("limit", 200),
                  ("enterprise_project_id", "all_granted_eps")],
        "headers": {"X-Project-Id": "0123456789abcdef0123456789abcdef",
                    "X-Sdk-Date": "20240101T000000Z"},
        "body": b"",
    },
    {
        "name": "query values with spaces, reserved and non-ASCII characters",
        "ak": "HPUAXXXXXXXXXXXXXXXX", "sk": "s3cr3t/Key+With=Chars", "method": "GET",
        "host": "127.0.0.1:9930",
        "path": "/v5/proj/image/swr-repository",
        "query": [("namespace", "团队 a/b"), ("image_name", "my image~1"),
                  ("image_type", "shared_image"), ("has_malicious_file", True),
                  ("scan_status", "")],
        "headers": {"X-Project-Id": "proj", "X-Sdk-Date": "20261127T120000Z"},
        "body": b"",
    },
    {
        "name": "temporary credentials sign the security token",
        "ak": "TMPAK", "sk": "TmpSecret", "method": "GET",
        "host": "hss.ap-southeast-1.myhuaweicloud.com",
        "path": "/v5/p1/image/swr-repository",
        "query": [("limit", 200), ("offset", 400), ("image_type", "instance_image")],
        "headers": {"X-Project-Id": "p1", "X-Security-Token": "gQpjbi1ub3J0aC00jU4ZTZkYmQ",
                    "X-Sdk-Date": "20250615T083000Z"},
        "body": b"",
    },
    {
        "name": "POST with a JSON body and a path segment needing encoding",
        "ak": "AK2", "sk": "SK2", "method": "POST",
        "host": "iam.example.test",
        "path": "/v3/a b/tokens",
        "query": [],
        "headers": {"X-Sdk-Date": "20200101T010203Z"},
        "body": b'{"auth":{"name":"x"}}',
    },
    {
        "name": "the Go SDK's own test query (signer_test.go), with a repeated key as a list",
        "ak": "AccessKey", "sk": "SecretKey", "method": "GET",
        "host": "example.huaweicloud.com",
        "path": "/path",
        "query": [("test", "一 (&=?!#%.*)"), ("multi", [3, 1, 2]), ("limit", 1),
                  ("enable", True), ("path", "/tmp/123")],
        "headers": {"X-Sdk-Date": "20060102T150405Z"},
        "body": b"",
    },
    {
        "name": "values with '+' and a key repeated as separate pairs",
        "ak": "AK3", "sk": "SK3+/=", "method": "GET",
        "host": "hss.cn-north-4.myhuaweicloud.com",
        "path": "/v5/p1/image/registries/images",
        "query": [("image_name", "c++ lib"), ("tag", "v2"), ("namespace", "a+b=c"),
                  ("tag", "v1+rc"), ("tag", "v10")],
        "headers": {"X-Project-Id": "p1", "X-Sdk-Date": "20260301T101500Z"},
        "body": b"",
    },
    {
        "name": "an endpoint path holding %-escapes: decoded, then encoded again",
        "ak": "AccessKey", "sk": "SecretKey", "method": "GET",
        "host": "gw.example.test",
        "path": "/hss%20proxy/%E5%9B%A2%7Eq/v5/p1/image/swr-repository",
        "query": [("limit", 200), ("offset", 0)],
        "headers": {"X-Project-Id": "p1", "X-Sdk-Date": "20240101T000000Z"},
        "body": b"",
    },
]


def main():
    print("# huaweicloudsdkcore", version("huaweicloudsdkcore"))
    print()
    for case in CASES:
        request = SdkRequest(method=case["method"], schema="https", host=case["host"],
                             resource_path=case["path"], query_params=list(case["query"]),
                             header_params=dict(case["headers"]), body=case["body"])
        signer = Signer(BasicCredentials(case["ak"], case["sk"]))
        request.header_params.setdefault("Host", case["host"])
        signed_headers = Signer._process_signed_headers(request)  # noqa: SLF001
        canonical = signer._process_canonical_request(request, signed_headers)  # noqa: SLF001
        request = SdkRequest(method=case["method"], schema="https", host=case["host"],
                             resource_path=case["path"], query_params=list(case["query"]),
                             header_params=dict(case["headers"]), body=case["body"])
        signer.sign(request)
        print("#", case["name"])
        print("canonical_request =", repr(canonical))
        print("canonical_request_sha256 =", hashlib.sha256(canonical.encode()).hexdigest())
        print("uri =", request.uri)
        print("authorization =", request.header_params["Authorization"])
        print()


if __name__ == "__main__":
    main()
