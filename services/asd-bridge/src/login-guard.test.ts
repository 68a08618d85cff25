import assert from "node:assert/strict";
import { test } from "node:test";
import { accountKey, LoginGuard } from "./login-guard.js";

const limits = { freeAttempts: 3, lockAfter: 6, addressLockAfter: 10, lockoutSeconds: 600 };
const ann = accountKey("acme", "ann");

test("after the free attempts each wrong password doubles the wait, and the account locks after lockAfter", () => {
  const g = new LoginGuard(limits);
  let now = 0;
  assert.equal(g.failed(ann, "10.0.0.1", now), undefined);
  assert.equal(g.failed(ann, "10.0.0.1", now), undefined);
  assert.deepEqual(g.failed(ann, "10.0.0.1", now), { scope: "account", kind: "backoff", retryAfterSeconds: 1 }, "the 3rd failure: the next try waits 1 s");
  assert.deepEqual(g.check(ann, "10.0.0.1", now + 500), { scope: "account", kind: "backoff", retryAfterSeconds: 1 });
  now += 1000;
  assert.equal(g.check(ann, "10.0.0.1", now), undefined, "the wait is over");
  assert.equal(g.failed(ann, "10.0.0.1", now)?.retryAfterSeconds, 2);
  now += 2000;
  assert.equal(g.failed(ann, "10.0.0.1", now)?.retryAfterSeconds, 4);
  now += 4000;
  assert.deepEqual(g.failed(ann, "10.0.0.1", now), { scope: "account", kind: "locked", retryAfterSeconds: 600 }, "the 6th in a row locks");
  assert.equal(g.check(ann, "10.0.0.2", now + 599_000)?.kind, "locked", "from any address");
  assert.equal(g.check(accountKey("acme", "bob"), "10.0.0.2", now), undefined, "another agent is not affected");
});

test("a lockout expires; the next wrong password locks again at once, a right one starts afresh", () => {
  const g = new LoginGuard(limits);
  let now = 0;
  for (let i = 0; i < 6; i++) {
    g.failed(ann, "10.0.0.1", now);
    now += 60_000; // past every backoff
  }
  const locked = g.check(ann, "10.0.0.1", now);
  assert.equal(locked?.kind, "locked");
  now += locked!.retryAfterSeconds * 1000;
  assert.equal(g.check(ann, "10.0.0.1", now), undefined, "expired");
  assert.equal(g.failed(ann, "10.0.0.1", now)?.kind, "locked", "still counted: one more guess locks again");
  now += 600_000;
  g.succeeded(ann);
  assert.equal(g.failed(ann, "10.0.0.2", now), undefined, "after a correct login the account's count starts at zero");
});

test("failures older than the lockout are forgotten", () => {
  const g = new LoginGuard(limits);
  g.failed(ann, "10.0.0.1", 0);
  g.failed(ann, "10.0.0.1", 0);
  assert.equal(g.failed(ann, "10.0.0.1", 700_000), undefined, "the two old ones no longer count");
});

test("one address guessing across many agents is locked, though no single account is", () => {
  const g = new LoginGuard(limits);
  let now = 0;
  for (let i = 0; i < 9; i++) {
    assert.equal(g.failed(accountKey("acme", `agent${i}`), "10.0.0.9", now), undefined, "no wait for an address before its lock");
    now += 1;
  }
  const last = g.failed(accountKey("acme", "agent9"), "10.0.0.9", now);
  assert.deepEqual(last, { scope: "address", kind: "locked", retryAfterSeconds: 600 });
  assert.equal(g.check(accountKey("acme", "ann"), "10.0.0.9", now)?.scope, "address", "the address is refused for every account");
  assert.equal(g.check(accountKey("acme", "ann"), "10.0.0.8", now), undefined, "another address is not");
  g.succeeded(accountKey("acme", "agent0"));
  assert.equal(g.check(accountKey("acme", "ann"), "10.0.0.9", now)?.scope, "address", "a correct login elsewhere does not reset the address");
});

test("made-up agent ids cannot grow the memory without bound", () => {
  const g = new LoginGuard({ ...limits, addressLockAfter: 1_000_000 });
  for (let i = 0; i < 12_000; i++) g.failed(accountKey("acme", `x${i}`), `10.1.${i >> 8}.${i & 255}`, i);
  assert.ok(g.size.accounts <= 10_000 && g.size.addresses <= 10_000, JSON.stringify(g.size));
});
