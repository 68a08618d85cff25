import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { SoftdialSimulator, waitFor } from "@postroom/testkit";
import { frameProblems } from "./softdial/codec.js";
import { BridgeHarness } from "./test-harness.js";

// CallGem's queue timer of 1 s runs out with no overflow: QT, then CallGem's CD. The tenant's
// requeue policy (after 1 s here) offers the email to CallGem again with its own SI.
let h: BridgeHarness;
let sim: SoftdialSimulator;

before(async () => {
  sim = await SoftdialSimulator.start({ routes: [{ dn: "support@acme.test", campaign: "mailcamp", queue: "email" }], queues: { email: { timeoutSeconds: 1 } }, retryMs: 300 });
  h = await BridgeHarness.create(
    "unanswered-softdial",
    () => ({
      tenants: [
        {
          id: "acme",
          acd: { type: "softdial", host: "127.0.0.1", port: sim.port, switchId: "postroom-acme" },
          unanswered: { policy: "requeue", requeueAfterSeconds: 1, alertAfterSeconds: 600 },
          mailboxes: [
            { id: "support", address: "support@acme.test", inbound: { protocol: "imap", host: "127.0.0.1", port: 143, tls: "none" }, auth: { type: "password", password: "env:UNUSED" } },
            // CallGem has no route for this address: its IC is refused with ER 30.
            { id: "orphan", address: "orphan@acme.test", inbound: { protocol: "imap", host: "127.0.0.1", port: 143, tls: "none" }, auth: { type: "password", password: "env:UNUSED" } },
          ],
        },
      ],
    }),
    {},
    { statusRefreshMs: 200, softdial: { heartbeatSeconds: 1, backoff: { initialMs: 100, maxMs: 400, stableMs: 5_000 } } },
  );
  await h.bridge.start();
});

after(async () => {
  for (const f of sim?.received() ?? []) assert.deepEqual(frameProblems(`${f.text}\0`, sim.encoding), [], f.text);
  await h?.close();
  await sim?.stop();
});

test("Softdial: a queue timeout without overflow is unanswered, never completed, and offered to CallGem again after the requeue delay", async () => {
  const { messageId } = await h.deliver("acme", "support", { subject: "Nobody at CallGem" });
  const s = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    return r && sim.received("IC").filter((f) => f.params.SI === r.id).length >= 2 ? r : undefined;
  }, { timeoutMs: 20_000, what: "a second IC for the same session" });
  const history = (await h.pool.query<{ state: string }>("SELECT state FROM session_events WHERE session_id = $1 ORDER BY id", [s.id])).rows.map((r) => r.state);
  const first = history.indexOf("unanswered");
  assert.ok(first > 0 && history.slice(first + 1).includes("offered"), history.join(" "));
  assert.ok(!history.includes("completed") && !history.includes("failed"), history.join(" "));
  assert.ok(sim.received("QT").some((f) => f.params.SI === s.id), "QT when the queue timer ran out");
  assert.equal(sim.sent("ER").length, 0, "CallGem took the second IC with the same SI");
  const reason = await h.pool.query<{ unanswered_reason: string }>("SELECT unanswered_reason FROM sessions WHERE id = $1", [s.id]);
  assert.equal(reason.rows[0]!.unanswered_reason, "queue-timeout");
  await waitFor(() => h.bridge.acdStatuses()[0]!.unanswered.count === 1, { timeoutMs: 20_000, what: "counted in the ACD status" });
});

test("Softdial: an IC that CallGem refuses (ER 30, no campaign) leaves the email unanswered, never failed, and names the refusal in the ACD status", async () => {
  const { messageId } = await h.deliver("acme", "orphan", { subject: "No route at CallGem" });
  const s = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    if (!r) return undefined;
    const row = (await h.pool.query<{ state: string; unanswered_reason: string | null }>("SELECT state, unanswered_reason FROM sessions WHERE id = $1", [r.id])).rows[0];
    return row?.unanswered_reason === "rejected" ? r : undefined;
  }, { timeoutMs: 20_000, what: "the refused session recorded as unanswered" });
  assert.ok(sim.sent("ER").some((f) => f.params.EC === "30" && f.text.includes(s.id)), "CallGem answered the IC with ER 30");
  const history = (await h.pool.query<{ state: string }>("SELECT state FROM session_events WHERE session_id = $1 ORDER BY id", [s.id])).rows.map((r) => r.state);
  assert.ok(history.includes("unanswered") && !history.includes("failed"), history.join(" "));
  await waitFor(() => h.bridge.acdStatuses()[0]!.problems.some((p) => p.kind === "rejected-offer" && p.subject === "ER 30"), { timeoutMs: 20_000, what: "the refusal in the ACD status" });
});
