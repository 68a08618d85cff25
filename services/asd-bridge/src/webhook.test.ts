import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { BridgeHarness, call } from "./test-harness.js";
import { sign, verify } from "./webhook.js";

const SECRET = "acd-shared-secret-for-tests";
let h: BridgeHarness;
let acd: Server;
let acdUrl: string;
const received: { headers: IncomingMessage["headers"]; body: string }[] = [];
/** The ACD's answers, in order; 200 once they run out. */
const script: number[] = [];

before(async () => {
  acd = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      received.push({ headers: req.headers, body });
      res.writeHead(script.shift() ?? 200).end();
    });
  });
  await new Promise<void>((r) => acd.listen(0, "127.0.0.1", () => r()));
  acdUrl = `http://127.0.0.1:${(acd.address() as AddressInfo).port}/sessions`;
  h = await BridgeHarness.create(
    "webhook",
    () => ({
      tenants: [
        {
          id: "acme",
          acd: { type: "webhook", url: acdUrl, signingSecret: "env:ACD_SECRET", retry: { initialDelaySeconds: 0.1, maxDelaySeconds: 0.4, timeoutSeconds: 5 } },
          mailboxes: [{ id: "support", address: "support@acme.test", inbound: { protocol: "imap", host: "127.0.0.1", port: 143, tls: "none" }, auth: { type: "password", password: "env:UNUSED" } }],
        },
      ],
    }),
    { ACD_SECRET: SECRET },
  );
  await h.bridge.start();
});

after(async () => {
  await h?.close();
  await new Promise<void>((r) => acd.close(() => r()));
});

function signed(body: unknown, at = Math.floor(Date.now() / 1000)) {
  const text = JSON.stringify(body);
  return { text, headers: { "content-type": "application/json", "x-postroom-timestamp": String(at), "x-postroom-signature": sign(SECRET, at, text) } };
}

let sessionId = "";

test("the offer is POSTed signed with HMAC-SHA256 over timestamp and body, and retried after the ACD answers 500", async () => {
  script.push(500, 500);
  const { messageId } = await h.deliver("acme", "support", { subject: "Order 17" });
  const s = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    return r?.state === "offered" ? r : undefined;
  }, { timeoutMs: 15_000, what: "offered" });
  sessionId = s.id;
  // "offered" is recorded before the POST (so a fast callback finds it); the POSTs follow.
  await waitFor(() => received.length >= 3, { timeoutMs: 15_000, what: "three POSTs" });
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(received.length, 3, "two 500s, then accepted, then no more");
  for (const r of received) {
    assert.deepEqual(verify(SECRET, r.headers, r.body, Math.floor(Date.now() / 1000)), { ok: true });
    assert.notDeepEqual(verify("another-secret", r.headers, r.body, Math.floor(Date.now() / 1000)), { ok: true });
    assert.equal(r.headers["idempotency-key"], s.id);
  }
  const offer = JSON.parse(received[2]!.body) as { sessionId: string; subject: string; emailUrl: string };
  assert.equal(offer.sessionId, s.id);
  assert.equal(offer.subject, "Order 17");
  // The link in the offer opens the email; a tampered one does not.
  const email = await fetch(offer.emailUrl);
  assert.equal(email.status, 200);
  assert.equal(((await email.json()) as { email: { subject: string } }).email.subject, "Order 17");
  assert.equal((await fetch(offer.emailUrl.replace(/sig=[0-9a-f]/, "sig=z"))).status, 403);
});

test("a signed callback is applied once; a replayed one is ignored; stale or unsigned ones are refused", async () => {
  const base = h.bridge.api!.url;
  const cb = signed({ eventId: "acd-evt-1", sessionId, type: "assigned", agent: "ext-agent-7" });
  const post = (c: { text: string; headers: Record<string, string> }) => fetch(`${base}/api/acd/acme/callback`, { method: "POST", headers: c.headers, body: c.text });
  const first = await post(cb);
  assert.equal(first.status, 200);
  assert.deepEqual(await first.json(), { ok: true });
  const replay = await post(cb);
  assert.equal(replay.status, 200);
  assert.deepEqual(await replay.json(), { duplicate: true });
  const assigned = await h.pool.query("SELECT 1 FROM session_events WHERE session_id = $1 AND state = 'assigned'", [sessionId]);
  assert.equal(assigned.rowCount, 1, "applied once");
  assert.equal((await h.sessionOf((await h.pool.query<{ message_id: string }>("SELECT message_id FROM sessions WHERE id = $1", [sessionId])).rows[0]!.message_id))?.agent, "ext-agent-7");

  const stale = signed({ eventId: "acd-evt-2", sessionId, type: "completed" }, Math.floor(Date.now() / 1000) - 3600);
  assert.equal((await post(stale)).status, 401);
  const forged = signed({ eventId: "acd-evt-3", sessionId, type: "completed" });
  forged.headers["x-postroom-signature"] = sign("guess", Number(forged.headers["x-postroom-timestamp"]), forged.text);
  assert.equal((await post(forged)).status, 401);
  const unsigned = await call(base, "POST", "/api/acd/acme/callback", undefined, { eventId: "acd-evt-4", sessionId, type: "completed" });
  assert.equal(unsigned.status, 401);

  assert.equal((await post(signed({ eventId: "acd-evt-5", sessionId, type: "completed", outcome: "answered" }))).status, 200);
  const history = await h.pool.query<{ state: string }>("SELECT state FROM session_events WHERE session_id = $1 ORDER BY id", [sessionId]);
  assert.deepEqual(history.rows.map((r) => r.state), ["created", "offered", "assigned", "completed"]);
});

test("after a restart, a session the ACD never took is POSTed again with the same idempotency key; one it took is not", async () => {
  const offeredAndPosted = async (messageId: string) =>
    waitFor(async () => {
      const r = await h.sessionOf(messageId);
      return r?.state === "offered" && received.some((x) => x.headers["idempotency-key"] === r.id) ? r : undefined;
    }, { timeoutMs: 45_000, what: "offered and posted" });
  const taken = await offeredAndPosted((await h.deliver("acme", "support", { subject: "Taken before the crash" })).messageId);
  const { messageId } = await h.deliver("acme", "support", { subject: "Crash in between" });
  const s = await offeredAndPosted(messageId);
  await waitFor(async () => (await h.pool.query("SELECT 1 FROM sessions WHERE id = $1 AND announced_at IS NOT NULL", [s.id])).rowCount === 1, { timeoutMs: 30_000, what: "the ACD's answer recorded" });
  await h.bridge.stop();
  const count = (id: string) => received.filter((x) => x.headers["idempotency-key"] === id).length;
  const before = { taken: count(taken.id), crashed: count(s.id) };
  // The crash this stands for: "offered" committed, the POST sent, its 2xx never recorded.
  await h.pool.query("UPDATE sessions SET announced_at = NULL WHERE id = $1", [s.id]);
  await h.restart();
  await waitFor(() => count(s.id) === before.crashed + 1, { timeoutMs: 30_000, what: "posted again" });
  const again = JSON.parse(received.filter((x) => x.headers["idempotency-key"] === s.id).at(-1)!.body) as { sessionId: string; emailUrl: string };
  assert.equal(again.sessionId, s.id);
  assert.equal((await fetch(again.emailUrl)).status, 200, "the link points at the running API");
  // A new email after the restart is offered after anything the restart offered again (oldest first).
  const later = await offeredAndPosted((await h.deliver("acme", "support", { subject: "After the restart" })).messageId);
  assert.ok(later.id);
  assert.equal(count(taken.id), before.taken, "the session the ACD had taken is not offered twice");
  const sessions = await h.pool.query("SELECT 1 FROM sessions WHERE message_id = $1", [messageId]);
  assert.equal(sessions.rowCount, 1);
});
