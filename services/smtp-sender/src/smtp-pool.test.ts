import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Smtp } from "@postroom/config";
import type { Credential } from "@postroom/contracts";
import { startSmtpSink, type SmtpSink } from "@postroom/testkit";
import { SmtpPools } from "./smtp-pool.js";

// A real SMTP server (smtp-server) on loopback that counts logins; no mocks.
let sink: SmtpSink;
const USER = "support@acme.test";

before(async () => {
  sink = await startSmtpSink({ users: [{ username: USER, password: "right" }] });
});

after(async () => {
  await sink?.stop();
});

function smtp(): Smtp {
  return { host: "127.0.0.1", port: sink.info.port, tls: "none", verifyCertificate: true, maxMessageBytes: 1_000_000, ratePerMinute: 1_000 } as Smtp;
}

const envelope = { from: USER, to: ["ann@customer.test"] };
const message = (n: number) => Buffer.from(`From: ${USER}\r\nTo: ann@customer.test\r\nSubject: pooled ${n}\r\nMessage-ID: <pooled-${n}@acme.test>\r\n\r\nHello ${n}.\r\n`);
const password = (pass: string): Credential => ({ version: "v1", mechanism: "PLAIN", username: USER, password: pass });

test("forty messages over a pool of two connections: two logins, one credential request, every message accepted once", async () => {
  sink.reset();
  const asked: boolean[] = [];
  const pools = new SmtpPools({
    credential: async (_t, _m, rejected) => {
      asked.push(rejected);
      return password("right");
    },
    connectionsPerMailbox: 2,
  });
  try {
    const results = await Promise.all(Array.from({ length: 40 }, (_, n) => pools.send("acme", "support", smtp(), envelope, message(n))));
    assert.ok(results.every((r) => /^250/.test(r.response)), "every message answered 250");
    assert.equal(sink.messages.length, 40);
    assert.deepEqual(new Set(sink.messages.map((m) => /Subject: (pooled \d+)/.exec(m.raw.toString())?.[1])).size, 40, "each message once");
    assert.ok(sink.authAttempts.length >= 1 && sink.authAttempts.length <= 2, `one login per connection (saw ${sink.authAttempts.length})`);
    assert.deepEqual(asked, [false], "the credential was asked for once, when the pool was made");
  } finally {
    pools.close();
  }
});

test("a refused login retires the pool; the retry asks once for a fresh credential and goes out on a new pool", async () => {
  sink.reset();
  const asked: boolean[] = [];
  const pools = new SmtpPools({
    // A stale password first; the fresh one (after `rejected`) is right.
    credential: async (_t, _m, rejected) => {
      asked.push(rejected);
      return password(rejected ? "right" : "stale");
    },
    connectionsPerMailbox: 1,
  });
  try {
    await assert.rejects(pools.send("acme", "support", smtp(), envelope, message(100)), (e: { responseCode?: number; code?: string }) => e.responseCode === 535 || e.code === "EAUTH");
    const r = await pools.sendAfterRefusal("acme", "support", smtp(), envelope, message(100));
    assert.match(r.response, /^250/);
    // Later sends use the new pool: no third credential request, no further login.
    await pools.send("acme", "support", smtp(), envelope, message(101));
    assert.deepEqual(asked, [false, true]);
    assert.deepEqual(sink.authAttempts.map((a) => a.code), [535, 235]);
    assert.equal(sink.messages.length, 2);
  } finally {
    pools.close();
  }
});

test("an OAuth token close to its expiry is not used for a new pool's logins: the next send makes a pool with a new token", async () => {
  // A server that offers no AUTH (so no login happens): what is counted is when the pool asks for a token.
  const open = await startSmtpSink();
  const openSmtp = { ...smtp(), port: open.info.port } as Smtp;
  let now = Date.parse("2026-12-02T08:00:00Z");
  let tokens = 0;
  const pools = new SmtpPools({
    credential: async () => {
      tokens++;
      return { version: "v1", mechanism: "XOAUTH2", username: USER, accessToken: "right", expiresAt: new Date(now + 10 * 60_000).toISOString() } as Credential;
    },
    connectionsPerMailbox: 1,
    expiryMarginMs: 60_000,
    now: () => now,
  });
  try {
    await pools.send("acme", "support", openSmtp, envelope, message(200));
    now += 5 * 60_000; // still well before expiry: same pool
    await pools.send("acme", "support", openSmtp, envelope, message(201));
    assert.equal(tokens, 1);
    now += 4.5 * 60_000; // within the margin: a new pool, a new token
    await pools.send("acme", "support", openSmtp, envelope, message(202));
    assert.equal(tokens, 2);
    assert.equal(open.messages.length, 3);
  } finally {
    pools.close();
    await open.stop();
  }
});
