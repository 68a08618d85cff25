import assert from "node:assert/strict";
import { test } from "node:test";
import { isTransientJetStreamError, retryTransient } from "./transient.js";

test("timeouts, no responders and a cluster between leaders are transient; configuration and permission errors are not", () => {
  const named = (name: string, message = "x") => Object.assign(new Error(message), { name });
  assert.ok(isTransientJetStreamError(named("TimeoutError", "timeout")));
  assert.ok(isTransientJetStreamError(named("JetStreamNotEnabled", "jetstream is not enabled")));
  assert.ok(isTransientJetStreamError(Object.assign(new Error("JetStream system temporarily unavailable"), { api_error: { err_code: 10008 } })));
  assert.ok(isTransientJetStreamError(new Error("no suitable peers for placement")));
  assert.equal(isTransientJetStreamError(new Error("stream name already in use with a different configuration")), false);
  assert.equal(isTransientJetStreamError(new Error("Permissions Violation for Publish to \"$JS.API.STREAM.CREATE.X\"")), false);
  assert.equal(isTransientJetStreamError(new Error("insufficient resources")), false);
});

test("retryTransient waits out transient failures and rethrows anything else at once", async () => {
  let calls = 0;
  const value = await retryTransient(async () => {
    calls++;
    if (calls < 3) throw Object.assign(new Error("timeout"), { name: "TimeoutError" });
    return "ok";
  });
  assert.equal(value, "ok");
  assert.equal(calls, 3);
  let other = 0;
  await assert.rejects(
    retryTransient(async () => {
      other++;
      throw new Error("bad stream configuration");
    }),
    /bad stream configuration/,
  );
  assert.equal(other, 1);
  await assert.rejects(
    retryTransient(async () => {
      throw Object.assign(new Error("timeout"), { name: "TimeoutError" });
    }, { deadlineMs: 300 }),
    /timeout/,
  );
});
