import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import { AcdStatus } from "@postroom/contracts";
import { openKv } from "@postroom/nats-kit";
import { METRICS, startTelemetry, type Telemetry } from "@postroom/telemetry";
import { waitFor } from "@postroom/testkit";
import { BridgeHarness, call } from "./test-harness.js";
import { sign } from "./webhook.js";

// Short, configurable timers: queue timeouts of 1 s, requeues after 1 s, an alert age of 2 s.
const SECRET = "acd-shared-secret-for-unanswered";
const env = { ACD_SECRET: SECRET, ANN_PW: "ann-pw-1", BOB_PW: "bob-pw-2", SUE_PW: "sue-pw-3" };
let h: BridgeHarness;
let api: string;
let telemetry: Telemetry;
let acd: Server;
/** Offers the webhook ACD received: tenant, session id, offer number and Idempotency-Key, in order. */
const offers: { tenant: string; sessionId: string; offerNumber: number; key: string }[] = [];

const mailbox = (id: string, tenant: string) => ({
  id,
  address: `${id}@${tenant}.test`,
  inbound: { protocol: "imap" as const, host: "127.0.0.1", port: 143, tls: "none" as const },
  auth: { type: "password" as const, password: "env:UNUSED" },
});

before(async () => {
  acd = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      const offer = JSON.parse(body) as { tenant: string; sessionId: string; offerNumber: number };
      offers.push({ ...offer, key: String(req.headers["idempotency-key"]) });
      // This ACD does not take the "rescue" tenant's emails at all: a permanent 4xx.
      res.writeHead(offer.tenant === "rescue" ? 422 : 200).end();
    });
  });
  await new Promise<void>((r) => acd.listen(0, "127.0.0.1", () => r()));
  const url = `http://127.0.0.1:${(acd.address() as AddressInfo).port}/offers`;
  const webhook = { type: "webhook" as const, url, signingSecret: "env:ACD_SECRET", retry: { initialDelaySeconds: 0.1, maxDelaySeconds: 0.5, timeoutSeconds: 5 } };
  telemetry = await startTelemetry({ service: "asd-bridge", port: 0, host: "127.0.0.1" });
  h = await BridgeHarness.create(
    "unanswered",
    () => ({
      tenants: [
        {
          id: "acme",
          agents: [
            { id: "ann", password: "env:ANN_PW", queues: ["email"] },
            { id: "sue", password: "env:SUE_PW", queues: [], supervisor: true },
          ],
          queues: [{ id: "email", timeoutSeconds: 1 }],
          unanswered: { policy: "requeue", requeueAfterSeconds: 1, alertAfterSeconds: 2 },
          mailboxes: [mailbox("support", "acme")],
        },
        { id: "closer", queues: [{ id: "email", timeoutSeconds: 1 }], unanswered: { policy: "close" }, mailboxes: [mailbox("info", "closer")] },
        { id: "hooked", acd: webhook, unanswered: { policy: "requeue", requeueAfterSeconds: 1 }, mailboxes: [mailbox("sales", "hooked")] },
        {
          id: "rescue",
          acd: webhook,
          agents: [{ id: "bob", password: "env:BOB_PW", queues: ["rescued"] }],
          unanswered: { policy: "fallback", fallbackQueue: "rescued" },
          mailboxes: [mailbox("help", "rescue")],
        },
      ],
    }),
    env,
    { statusRefreshMs: 200, metrics: telemetry.metrics },
  );
  telemetry.metrics.observeAcd(() => h.bridge.acdStatuses());
  await h.bridge.start();
  api = h.bridge.api!.url;
});

after(async () => {
  await h?.close();
  await telemetry?.stop();
  await new Promise<void>((r) => acd.close(() => r()));
});

async function states(sessionId: string): Promise<string[]> {
  const r = await h.pool.query<{ state: string }>("SELECT state FROM session_events WHERE session_id = $1 ORDER BY id", [sessionId]);
  return r.rows.map((x) => x.state);
}

async function row(sessionId: string) {
  return (await h.pool.query<{ state: string; acd: string; agent: string | null; outcome: string | null; unanswered_at: Date | null; unanswered_reason: string | null; queue: string }>(
    "SELECT state, acd, agent, outcome, unanswered_at, unanswered_reason, queue FROM sessions WHERE id = $1",
    [sessionId],
  )).rows[0]!;
}

async function acdStatus(tenant: string): Promise<AcdStatus | undefined> {
  const kv = await openKv(h.nc, h.names.buckets.acdStatus);
  const e = await kv.get(h.names.acdStatusKey(tenant));
  return e?.value.length ? AcdStatus.parse(e.json()) : undefined;
}

/** The value of one series from asd-bridge's /metrics, the labels given as a regular expression. */
async function metric(name: string, labels: RegExp): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${telemetry.port}/metrics`)).text();
  for (const line of text.split("\n")) {
    const m = /^([a-z_:][a-z0-9_:]*)(\{[^}]*\})? (\S+)/i.exec(line);
    if (m && m[1] === name && labels.test(m[2] ?? "")) return Number(m[3]);
  }
  return undefined;
}

function signed(body: unknown) {
  const text = JSON.stringify(body);
  const at = Math.floor(Date.now() / 1000);
  return { method: "POST", body: text, headers: { "content-type": "application/json", "x-postroom-timestamp": String(at), "x-postroom-signature": sign(SECRET, at, text) } };
}

async function login(tenant: string, agent: string, password: string): Promise<string> {
  const r = await call(api, "POST", "/api/login", undefined, { tenant, agent, password });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.token as string;
}

test("built-in distributor: a queue timeout without overflow is unanswered, offered again after the delay, counted, shown, and alerted on past its age", async () => {
  const { messageId } = await h.deliver("acme", "support", { subject: "Nobody is there" });
  const s = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    return r && (await states(r.id)).filter((x) => x === "offered").length >= 2 ? r : undefined;
  }, { timeoutMs: 15_000, what: "unanswered, then offered again" });
  const history = await states(s.id);
  assert.deepEqual(history.slice(0, 5), ["created", "offered", "queued", "unanswered", "offered"], history.join(" "));
  assert.ok(!history.includes("completed"), "never completed without an agent");
  const first = await row(s.id);
  assert.equal(first.unanswered_reason, "queue-timeout");
  assert.ok(first.unanswered_at, "recorded as unanswered");

  // Status and metrics count it; past the 2 s alert age the status says overdue and the gauges
  // the alert rule compares (oldest age vs. the configured age) cross.
  const status = await waitFor(async () => {
    const st = await acdStatus("acme");
    return st && st.unanswered.count === 1 && st.unanswered.oldestAt && Date.now() - Date.parse(st.unanswered.oldestAt) > 2500 ? st : undefined;
  }, { timeoutMs: 30_000, what: "acme's ACD status counts one unanswered email" });
  assert.equal(status.unanswered.alertAfterSeconds, 2);
  assert.equal(status.unanswered.oldestAt, first.unanswered_at!.toISOString(), "the age runs from the first time, through requeues");
  assert.equal(await metric(METRICS.unansweredSessions.name, /tenant="acme"/), 1);
  assert.equal(await metric(METRICS.unansweredAlertAge.name, /tenant="acme"/), 2);
  assert.ok((await metric(METRICS.unansweredOldestAge.name, /tenant="acme"/))! > 2, "older than the alert age");
  assert.ok((await metric(METRICS.unanswered.name, /tenant="acme",acd="builtin",reason="queue-timeout",policy="requeue"/))! >= 1);
  const sue = await login("acme", "sue", env.SUE_PW);
  const view = await call(api, "GET", "/api/supervisor/queues", sue);
  assert.equal((view.body.acd as { unanswered: { count: number } }).unanswered.count, 1, "the supervisor view shows it");

  // An agent takes it: answered now, no longer counted.
  const ann = await login("acme", "ann", env.ANN_PW);
  await call(api, "POST", "/api/queues/login", ann, { queues: ["email"] });
  await waitFor(async () => (await row(s.id)).agent === "ann", { timeoutMs: 30_000, what: "assigned to ann after a requeue" });
  assert.equal((await call(api, "POST", `/api/sessions/${s.id}/accept`, ann, {})).status, 200);
  assert.equal((await call(api, "POST", `/api/sessions/${s.id}/close`, ann, { outcome: "answered" })).status, 200);
  assert.equal((await row(s.id)).state, "completed");
  await waitFor(async () => (await acdStatus("acme"))?.unanswered.count === 0, { timeoutMs: 20_000, what: "unanswered count back to 0" });
  assert.equal(await metric(METRICS.unansweredOldestAge.name, /tenant="acme"/), 0);
});

test("the close policy ends a timed-out session as closed (outcome unanswered), never completed", async () => {
  const { messageId } = await h.deliver("closer", "info", { subject: "Close me" });
  const s = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    return r?.state === "closed" ? r : undefined;
  }, { timeoutMs: 30_000, what: "closed" });
  assert.deepEqual(await states(s.id), ["created", "offered", "queued", "closed"]);
  const r = await row(s.id);
  assert.equal(r.outcome, "unanswered");
  assert.equal(r.unanswered_reason, "queue-timeout");
  assert.ok((await metric(METRICS.unanswered.name, /tenant="closer".*policy="close"/))! >= 1);
});

test("webhook ACD: a queue timeout it reports, or a close without an agent, is requeued and POSTed again after the delay", async () => {
  const { messageId } = await h.deliver("hooked", "sales", { subject: "Timed out at the ACD" });
  const s = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    return r && offers.some((o) => o.sessionId === r.id) ? r : undefined;
  }, { timeoutMs: 30_000, what: "offered to the webhook ACD" });
  const cb = await fetch(`${api}/api/acd/hooked/callback`, signed({ eventId: "hk-1", sessionId: s.id, type: "unanswered", reason: "queue-timeout" }));
  assert.equal(cb.status, 200);
  assert.equal((await row(s.id)).state, "unanswered");
  await waitFor(() => offers.filter((o) => o.sessionId === s.id).length === 2, { timeoutMs: 30_000, what: "offered again after the requeue delay" });
  await waitFor(async () => (await row(s.id)).state === "offered", { timeoutMs: 20_000, what: "offered" });

  // The ACD closes it without any agent having had it: the same policy, not completed.
  const close = await fetch(`${api}/api/acd/hooked/callback`, signed({ eventId: "hk-2", sessionId: s.id, type: "completed", outcome: "abandoned" }));
  assert.equal(close.status, 200);
  const r = await row(s.id);
  assert.equal(r.state, "unanswered");
  assert.equal(r.unanswered_reason, "closed-without-agent");
  await waitFor(() => offers.filter((o) => o.sessionId === s.id).length === 3, { timeoutMs: 30_000, what: "offered a third time" });
  // Each requeue is a new offer to an ACD that dedupes on Idempotency-Key: a key of its own.
  assert.deepEqual(
    offers.filter((o) => o.sessionId === s.id).map((o) => [o.offerNumber, o.key]),
    [[1, s.id], [2, `${s.id}.2`], [3, `${s.id}.3`]],
  );
  assert.ok(!(await states(s.id)).includes("completed"));
  assert.ok(!(await states(s.id)).includes("failed"));
});

test("webhook ACD answering 4xx: the fallback policy hands the email to the built-in queue, where the tenant's agent answers it", async () => {
  const { messageId } = await h.deliver("rescue", "help", { subject: "Refused by the ACD" });
  const s = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    return r?.state === "queued" ? r : undefined;
  }, { timeoutMs: 30_000, what: "queued in the fallback queue" });
  assert.equal(offers.filter((o) => o.sessionId === s.id).length, 1, "a permanent refusal is not retried");
  const r = await row(s.id);
  assert.deepEqual([r.acd, r.queue, r.unanswered_reason], ["builtin", "rescued", "refused"]);
  const bob = await login("rescue", "bob", env.BOB_PW);
  await call(api, "POST", "/api/queues/login", bob, { queues: ["rescued"] });
  await waitFor(async () => (await row(s.id)).agent === "bob", { timeoutMs: 30_000, what: "assigned to bob" });
  assert.equal((await call(api, "POST", `/api/sessions/${s.id}/accept`, bob, {})).status, 200);
  assert.equal((await call(api, "POST", `/api/sessions/${s.id}/close`, bob, { outcome: "answered" })).status, 200);
  const done = await row(s.id);
  assert.deepEqual([done.state, done.outcome, done.unanswered_at], ["completed", "answered", null]);
  assert.deepEqual(await states(s.id), ["created", "offered", "unanswered", "offered", "queued", "assigned", "delivered", "completed"]);
});
