import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff } from "./backoff.js";
import { classifyImapError } from "./classify.js";

test("Exchange throttling is honoured with the server's suggested wait", () => {
  const f = classifyImapError({ responseText: "Request is throttled. Suggested Backoff Time: 48712 milliseconds" });
  assert.equal(f.kind, "throttled");
  assert.equal(f.retryAfterMs, 48712);
});

test("authentication failures are recognised from imapflow's flag and from server texts", () => {
  assert.equal(classifyImapError({ authenticationFailed: true, responseText: "[AUTHENTICATIONFAILED] Authentication failed." }).kind, "auth");
  assert.equal(classifyImapError({ message: "Command failed", responseText: "AUTHENTICATE failed." }).kind, "auth");
  assert.equal(classifyImapError(new Error("connect ECONNREFUSED 127.0.0.1:1")).kind, "transient");
});

test("backoff grows, is capped, and starts again after reset", () => {
  const b = new Backoff(1000, 8000, () => 1);
  assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next()], [1000, 2000, 4000, 8000, 8000]);
  b.reset();
  assert.equal(b.next(), 1000);
  const jittered = new Backoff(1000, 8000, () => 0);
  assert.equal(jittered.next(), 500, "jitter never goes below half the ceiling");
});

test("after a failure: one fresh credential, then needs-admin; token-service's verdict is final; the rest backs off", async () => {
  const { decideFailure } = await import("./classify.js");
  const { CredentialUnavailableError } = await import("@postroom/nats-kit");
  const refused = { authenticationFailed: true, responseText: "[AUTHENTICATIONFAILED] Authentication failed." };
  assert.equal(decideFailure(refused, { rejectedOnce: false, needsAdminNow: false }).action, "refresh-credential");
  const second = decideFailure(refused, { rejectedOnce: true, needsAdminNow: false });
  assert.equal(second.action, "needs-admin");
  assert.equal(second.action === "needs-admin" && second.message, "[AUTHENTICATIONFAILED] Authentication failed.", "the server's own words");
  assert.equal(decideFailure(refused, { rejectedOnce: false, needsAdminNow: true }).action, "needs-admin", "no fast retry while an administrator is needed");
  const admin = decideFailure(new CredentialUnavailableError("needs-admin", "AADSTS7000215: Invalid client secret", "AADSTS7000215", "use the secret Value"), { rejectedOnce: false, needsAdminNow: false });
  assert.deepEqual(admin, { action: "needs-admin", message: "AADSTS7000215: Invalid client secret", code: "AADSTS7000215", fix: "use the secret Value", rejectedOnce: false });
  assert.equal(decideFailure(new CredentialUnavailableError("no-answer", "token-service did not answer"), { rejectedOnce: false, needsAdminNow: false }).action, "back-off");
  const throttled = decideFailure({ responseText: "Request is throttled. Suggested Backoff Time: 3000 milliseconds" }, { rejectedOnce: false, needsAdminNow: false });
  assert.deepEqual(throttled, { action: "back-off", text: "Request is throttled. Suggested Backoff Time: 3000 milliseconds", code: "throttled", retryAfterMs: 3000 });
});
