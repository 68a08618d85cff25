import assert from "node:assert/strict";
import { test } from "node:test";
import { CredentialConfigError, TokenEndpointError, classifyTokenFailure } from "./classify.js";
import { catalogue, fillFix, serverSignal } from "./catalogue.js";

/** msal-node surfaces a refusal as a ServerError: errorCode, errorMessage with the AADSTS text, status. */
function serverError(errorCode: string, errorMessage: string, status?: number): Error {
  return Object.assign(new Error(`${errorCode}: ${errorMessage}`), { name: "ServerError", errorCode, errorMessage, ...(status ? { status } : {}) });
}

test("every AADSTS row of the reference table is needs-admin with a fix", () => {
  for (const code of [700016, 7000215, 7000222, 7000218, 700027, 7000112, 90002, 900023, 500011, 1002012, 70011, 65001, 9001023, 90038]) {
    const f = classifyTokenFailure(serverError("invalid_client", `AADSTS${code}: something the platform said. Trace ID: x`, 400));
    assert.equal(f.kind, "needs-admin", `AADSTS${code}`);
    assert.equal(f.code, `AADSTS${code}`);
    assert.ok(f.fix && f.fix.length > 20, `AADSTS${code} has a fix`);
  }
});

test("the Secret ID instead of the value is explained as such", () => {
  const f = classifyTokenFailure(serverError("invalid_client", "AADSTS7000215: Invalid client secret provided.", 401));
  assert.match(f.fix!, /Value, not its Secret ID/);
});

test("5xx, throttling and transient AADSTS codes are transient without a fix", () => {
  assert.equal(classifyTokenFailure(serverError("temporarily_unavailable", "AADSTS90033: A transient error has occurred.", 503)).kind, "transient");
  assert.equal(classifyTokenFailure(serverError("server_error", "no code", 500)).kind, "transient");
  assert.equal(classifyTokenFailure(serverError("throttled", "slow down", 429)).kind, "transient");
  assert.equal(classifyTokenFailure(new TokenEndpointError(503, "backendError", "try later")).kind, "transient");
});

test("network failures are transient, found through fetch's cause chain", () => {
  const refused = new TypeError("fetch failed", { cause: Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }) });
  const f = classifyTokenFailure(refused);
  assert.deepEqual([f.kind, f.code], ["transient", "ECONNREFUSED"]);
  assert.equal(classifyTokenFailure(Object.assign(new Error("timed out"), { name: "TimeoutError" })).kind, "transient");
});

test("an untrusted TLS certificate at the token endpoint needs an administrator", () => {
  const tls = new TypeError("fetch failed", { cause: Object.assign(new Error("self-signed certificate"), { code: "DEPTH_ZERO_SELF_SIGNED_CERT" }) });
  const f = classifyTokenFailure(tls);
  assert.deepEqual([f.kind, f.code], ["needs-admin", "DEPTH_ZERO_SELF_SIGNED_CERT"]);
});

test("Google refusals map to domain-wide delegation fixes", () => {
  const f = classifyTokenFailure(new TokenEndpointError(401, "unauthorized_client", "Client is unauthorized to retrieve access tokens using this method."));
  assert.equal(f.kind, "needs-admin");
  assert.match(f.fix!, /Domain-wide delegation/);
});

test("an unusable credential in the config needs an administrator and keeps its own fix", () => {
  const f = classifyTokenFailure(new CredentialConfigError("clientSecret: environment variable X is not set", "set it", "secret-unresolved"));
  assert.deepEqual([f.kind, f.code, f.fix], ["needs-admin", "secret-unresolved", "set it"]);
});

test("an unknown AADSTS refusal is still not retried in a loop", () => {
  assert.equal(classifyTokenFailure(serverError("invalid_request", "AADSTS123456: new thing", 400)).kind, "needs-admin");
});

test("server signals: IMAP, POP3 and SMTP refusals are recognised by code", () => {
  assert.equal(serverSignal("imap", "NO AUTHENTICATE failed.")?.code, "IMAP NO AUTHENTICATE failed.");
  assert.equal(serverSignal("imap", "BAD User is authenticated but not connected.")?.code, "IMAP BAD User is authenticated but not connected.");
  assert.equal(serverSignal("pop3", "-ERR Authentication failure: unknown user name or bad password.")?.code, "POP -ERR Authentication failure");
  assert.equal(serverSignal("smtp", "535 5.7.3 Authentication unsuccessful")?.code, "SMTP 535 5.7.3");
  assert.equal(serverSignal("smtp", "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.")?.code, "SMTP 535 5.7.139");
  assert.equal(serverSignal("smtp", "550 5.7.30 Basic authentication is not supported for Client Submission.")?.code, "SMTP 550 5.7.30");
});

test("fixes are filled with the app id, object id and mailbox, ready to paste", () => {
  const entry = catalogue().find((e) => e.code === "IMAP NO AUTHENTICATE failed.")!;
  const text = fillFix(entry.fix, { appId: "app-1", objectId: "obj-2", mailbox: "support@acme.test" });
  assert.match(text, /New-ServicePrincipal -AppId app-1 -ObjectId obj-2/);
  assert.match(text, /Add-MailboxPermission -Identity support@acme\.test -User obj-2 -AccessRights FullAccess/);
  assert.doesNotMatch(text, /<appId>|<objectId>|<mailbox>/);
});
