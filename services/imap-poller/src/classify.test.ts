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
