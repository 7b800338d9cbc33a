"""Sign-in in a real headless Chromium: authorization code + PKCE against a stand-in hosted UI.

The stand-in (127.0.0.1) plays Cognito's two endpoints: ``/oauth2/authorize`` records the
PKCE challenge and redirects back with a code; ``/oauth2/token`` answers only when the code,
client, redirect URI and ``SHA-256(code_verifier)`` all match, as Cognito does. A middleware
plays the API Gateway JWT authorizer: it turns the issued token into claims. The page must
send the token (never a typed name), refuse an answer it did not ask for, and the app must
open its CSP to the sign-in domain only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from browser_support import needs_browser, wait_until
from review_support import make_extraction

from clinical_ner.runtime.review_app import CLAIMS_ENVIRON_KEY, ReviewApp, SignIn

pytestmark = needs_browser
CLIENT_ID = "workbenchclient1"
TOKEN = "id-token-for-alice"


class StandInHostedUi:
    """Cognito's authorize and token endpoints, strict about PKCE, on 127.0.0.1."""

    def __init__(self) -> None:
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.issued: dict[str, dict[str, str]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path != "/oauth2/authorize":
                    self.send_error(404)
                    return
                outer.authorize_requests.append(query)
                code = f"code-{len(outer.issued)}"
                outer.issued[code] = query
                back = (
                    query["redirect_uri"] + "?" + urlencode({"code": code, "state": query["state"]})
                )
                self.send_response(302)
                self.send_header("Location", back)
                self.end_headers()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                outer.token_requests.append(form)
                asked = outer.issued.pop(form.get("code", ""), None)
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                ok = (
                    self.path == "/oauth2/token"
                    and asked is not None
                    and form.get("grant_type") == "authorization_code"
                    and form.get("client_id") == asked["client_id"] == CLIENT_ID
                    and form.get("redirect_uri") == asked["redirect_uri"]
                    and asked.get("code_challenge_method") == "S256"
                    and challenge == asked.get("code_challenge")
                )
                body = json.dumps({"id_token": TOKEN} if ok else {"error": "invalid_grant"})
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(body.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _authorizer(app: ReviewApp, seen: list[dict[str, str]]) -> Any:
    """API Gateway's JWT authorizer, reduced to the one token the stand-in issues."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").startswith("/api/"):
            auth = environ.get("HTTP_AUTHORIZATION", "")
            seen.append({"authorization": auth, "x_reviewer": environ.get("HTTP_X_REVIEWER", "")})
            if auth == f"Bearer {TOKEN}":
                environ[CLAIMS_ENVIRON_KEY] = {"sub": "alice-sub", "cognito:groups": ["reviewers"]}
        return app(environ, start_response)

    return wsgi


def test_sign_in_with_pkce_then_review_as_the_token_holder(tmp_path, browser):
    from selenium.webdriver.common.by import By

    from clinical_ner_local.review_server import LocalReviewServer

    idp = StandInHostedUi()
    out, notes = make_extraction(tmp_path)
    seen: list[dict[str, str]] = []
    try:
        with LocalReviewServer(out, [notes]) as server:
            assert server.server is not None
            local_app = server.server.get_app()
            signed = ReviewApp(local_app.service, sign_in=SignIn(idp.url, CLIENT_ID))
            server.server.set_app(_authorizer(signed, seen))

            browser.get(server.url)
            wait_until(browser, lambda d: d.find_element(By.ID, "sign-in").is_displayed())
            assert not browser.find_element(By.ID, "reviewer").is_displayed()
            assert "sign in first" in browser.find_element(By.ID, "progress").text
            assert seen == []  # nothing asked of the API before signing in

            browser.find_element(By.ID, "sign-in").click()
            wait_until(browser, lambda d: "3 waiting" in d.find_element(By.ID, "progress").text)
            (asked,) = idp.authorize_requests
            assert asked["client_id"] == CLIENT_ID and asked["response_type"] == "code"
            assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
            assert asked["redirect_uri"] == server.url
            (exchange,) = idp.token_requests
            assert 43 <= len(exchange["code_verifier"]) <= 128  # RFC 7636
            assert "code=" not in browser.current_url  # the code leaves the address bar
            assert seen and all(s["authorization"] == f"Bearer {TOKEN}" for s in seen)
            assert all(s["x_reviewer"] == "" for s in seen)  # never a typed identity
            me = browser.execute_async_script(
                "const done = arguments[0];"
                "fetch('/api/me', {headers: {Authorization: 'Bearer ' + workbench.state.token}})"
                ".then(r => r.json()).then(done);"
            )
            assert me == {"reviewer_id": "alice-sub"}

            # An answer this page did not ask for (no matching state) is refused, unexchanged.
            browser.execute_script("sessionStorage.clear()")
            browser.get(server.url + "?code=code-0&state=forged")
            wait_until(browser, lambda d: "not requested" in d.find_element(By.ID, "status").text)
            assert len(idp.token_requests) == 1
            assert browser.find_element(By.ID, "sign-in").is_displayed()
    finally:
        idp.close()


def test_the_page_names_the_sign_in_domain_in_its_csp_only_when_configured(tmp_path):
    from wsgiref.util import setup_testing_defaults

    from clinical_ner_local.review_server import LocalReviewServer

    out, notes = make_extraction(tmp_path)
    with LocalReviewServer(out, [notes]) as server:
        assert server.server is not None
        service = server.server.get_app().service

        def page(app: ReviewApp) -> tuple[dict[str, str], bytes]:
            environ: dict[str, Any] = {}
            setup_testing_defaults(environ)
            got: dict[str, str] = {}
            body = b"".join(app(environ, lambda status, headers: got.update(headers)))
            return got, body

        plain_headers, plain_body = page(ReviewApp(service))
        assert "connect-src 'self';" in plain_headers["Content-Security-Policy"]
        assert b'<meta name="sign-in" content="">' in plain_body
        domain = "https://reviewers-123.auth.eu-west-1.amazoncognito.com"
        headers, body = page(ReviewApp(service, sign_in=SignIn(domain, CLIENT_ID)))
        assert f"connect-src 'self' {domain};" in headers["Content-Security-Policy"]
        assert CLIENT_ID.encode() in body and domain.encode() in body
    with pytest.raises(ValueError, match="Cognito domain"):
        SignIn("https://evil.example.com", CLIENT_ID)
    with pytest.raises(ValueError, match="Cognito domain"):
        SignIn(domain, 'x"><script>')
