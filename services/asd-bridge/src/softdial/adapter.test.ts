import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { SoftdialSimulator, tempDir, waitFor, type SimFrame } from "@postroom/testkit";
import { SDMP_MESSAGES } from "./codec.js";
import { SoftdialAdapter, type SoftdialEvent, type SoftdialAdapterOptions } from "./adapter.js";

const MAILBOX = "support@acme.test";
const dir = tempDir("softdial");
const running: { sim: SoftdialSimulator; adapter: SoftdialAdapter }[] = [];
after(async () => {
  for (const r of running) {
    await r.adapter.stop();
    await r.sim.stop();
  }
  await dir.remove();
});

async function setup(queues: ConstructorParameters<typeof SoftdialSimulator>[0]["queues"], options: Partial<SoftdialAdapterOptions> = {}) {
  const sim = await SoftdialSimulator.start({ routes: [{ dn: MAILBOX, campaign: "emailcamp", queue: "email" }], queues });
  const events: SoftdialEvent[] = [];
  const adapter = new SoftdialAdapter({
    host: "127.0.0.1",
    port: sim.port,
    switchId: "postroom",
    heartbeatSeconds: 1,
    backoff: { initialMs: 50, maxMs: 500, stableMs: 5_000 },
    deliver: async (_si, agent) => agent.startsWith("agent"),
    onEvent: (e) => events.push(e),
    ...options,
  });
  adapter.start();
  running.push({ sim, adapter });
  await waitFor(() => sim.received("TO").length > 0, { timeoutMs: 5_000, what: "TO" });
  return { sim, adapter, events };
}

/** The simulator's view of one session: message codes in order, both directions. */
function flow(sim: SoftdialSimulator, si: string): string[] {
  return sim.frames.filter((f: SimFrame) => f.params.SI === si || (f.code === "SD" && f.direction === "in" && sim.frames.some((g) => g.params.SI === si && g.params.AE === f.params.AE))).map((f) => `${f.direction === "in" ? ">" : "<"}${f.code}`);
}

function offer(adapter: SoftdialAdapter, si: string, extra?: Record<string, string>) {
  adapter.offer({ sessionId: si, from: "ann+orders@customer.example", to: MAILBOX, reference: `postroom:acme/support/${si} Subject: Where? My order!`, ...(extra ? { extra } : {}) });
}

test("a normal session runs IC → CA → TQ → CT → TS → CD → ND as CallGem sees it, with heartbeat and a transcript", async () => {
  const { sim, adapter, events } = await setup({ email: { timeoutSeconds: 30 } }, { transcriptDir: dir.path, transcriptPrefix: "softdial-normal" });
  assert.equal(sim.received()[0]?.code, "VS", "heartbeat requested first");
  assert.equal(sim.received("TO")[0]?.text, "TO\\ICpostroom\\NT100\\ND\\SD\\TS");
  sim.loginAgent("agent1", ["email"]);
  offer(adapter, "s-normal");
  await waitFor(() => sim.sessions.get("s-normal")?.state === "delivered", { timeoutMs: 5_000, what: "delivered" });
  const ic = sim.received("IC")[0]!;
  assert.equal(ic.params.TN, "ann_orders@customer.example", "forbidden characters are sanitized");
  assert.equal(ic.params.MT, "email");
  assert.doesNotMatch(ic.params.DT ?? "", /[/:?!]/);
  sim.disconnect("s-normal");
  await waitFor(() => sim.sessions.get("s-normal")?.state === "ended", { timeoutMs: 5_000, what: "ended" });
  assert.deepEqual(flow(sim, "s-normal"), [">IC", "<CA", "<TQ", "<CT", ">TS", "<CD", ">ND", ">SD"]);
  assert.equal(sim.received("TS")[0]!.params.RS, "0");
  assert.equal(sim.received("ND")[0]!.params.CA, "0");
  assert.equal(sim.received("SD")[0]!.params.AE, "ext-agent1", "the endpoint is freed");
  assert.ok(sim.sent("DA").length >= 1);
  assert.deepEqual(events.filter((e) => "sessionId" in e).map((e) => e.type), ["campaign", "queued", "assigned", "delivered", "completed"]);
  const transcript = readdirSync(dir.path).filter((f) => f.startsWith("softdial-normal"));
  assert.equal(transcript.length, 1);
  const text = readFileSync(join(dir.path, transcript[0]!), "utf8");
  assert.match(text, / > IC\\TDdefault\\CNsystem\\ICpostroom\\SIs-normal/);
  assert.match(text, / < CT\\/);
});

test("after a queue timeout the session overflows to another queue and reaches that queue's agent", async () => {
  const { sim, adapter } = await setup({ email: { timeoutSeconds: 1, overflow: "backup" }, backup: { timeoutSeconds: 30 } });
  sim.loginAgent("agent2", ["backup"]);
  offer(adapter, "s-overflow");
  await waitFor(() => sim.sessions.get("s-overflow")?.state === "delivered", { timeoutMs: 8_000, what: "delivered in backup" });
  assert.deepEqual(flow(sim, "s-overflow"), [">IC", "<CA", "<TQ", ">QT", "<TQ", "<CT", ">TS"]);
  const [first, second] = sim.sent("TQ").filter((f) => f.params.SI === "s-overflow");
  assert.equal(first!.params.GA, "email");
  assert.equal(second!.params.GA, "backup");
  assert.equal(sim.received("QT")[0]!.params.GA, "email");
});

test("with no agent logged in the timer runs out, CallGem disconnects and the session ends", async () => {
  const { sim, adapter, events } = await setup({ email: { timeoutSeconds: 1 } });
  offer(adapter, "s-nobody");
  await waitFor(() => events.some((e) => e.type === "completed"), { timeoutMs: 8_000, what: "completed" });
  assert.deepEqual(flow(sim, "s-nobody"), [">IC", "<CA", "<TQ", ">QT", "<CD", ">ND"]);
  assert.equal(sim.sessions.get("s-nobody")?.state, "ended");
  assert.ok(events.some((e) => e.type === "queue-timeout" && e.sessionId === "s-nobody"));
  assert.deepEqual(adapter.undelivered(), []);
});

test("a frame CallGem rejects gets ER, the session is reported rejected, and the connection keeps working", async () => {
  const { sim, adapter, events } = await setup(
    { email: { timeoutSeconds: 30 } },
    // A site adds an IC parameter its controller does not know: the table allows it, CallGem does not.
    { messages: { ...SDMP_MESSAGES, IC: { ...SDMP_MESSAGES.IC!, params: [...SDMP_MESSAGES.IC!.params, "XP"] } } },
  );
  sim.loginAgent("agent3", ["email"]);
  offer(adapter, "s-bad", { XP: "7" });
  await waitFor(() => events.some((e) => e.type === "rejected"), { timeoutMs: 5_000, what: "rejected" });
  const er = sim.sent("ER")[0]!;
  assert.equal(er.params.EC, "2");
  assert.match(er.text, /FM"IC\\.*\\SIs-bad\\.*\\XP7"/);
  const rejected = events.find((e) => e.type === "rejected");
  assert.equal(rejected?.type === "rejected" && rejected.sessionId, "s-bad");
  offer(adapter, "s-good");
  await waitFor(() => sim.sessions.get("s-good")?.state === "delivered", { timeoutMs: 5_000, what: "next session delivered" });
  assert.equal(sim.openConnections, 1);
});

test("after a dropped connection in the middle of five sessions each undelivered one is offered again with its SI, none twice", async () => {
  const { sim, adapter, events } = await setup({ email: { timeoutSeconds: 60 } });
  sim.loginAgent("agent4", ["email"]);
  sim.loginAgent("agent5", ["email"]);
  const ids = ["s-1", "s-2", "s-3", "s-4", "s-5"];
  for (const id of ids) offer(adapter, id);
  await waitFor(() => [...sim.sessions.values()].filter((s) => s.state === "delivered").length === 2 && [...sim.sessions.values()].filter((s) => s.state === "queued").length === 3, {
    timeoutMs: 5_000,
    what: "two delivered, three queued",
  });
  const delivered = [...sim.sessions.values()].filter((s) => s.state === "delivered").map((s) => s.si).sort();
  const waiting = ids.filter((id) => !delivered.includes(id));
  assert.deepEqual([...adapter.undelivered()].sort(), waiting);

  sim.dropConnections();
  await waitFor(() => events.some((e) => e.type === "connected" && e.connection === 2), { timeoutMs: 5_000, what: "reconnected" });
  await waitFor(() => sim.received("IC").filter((f) => f.connection === 2).length === 3, { timeoutMs: 5_000, what: "re-offered" });
  await new Promise((r) => setTimeout(r, 300)); // any extra IC would arrive now

  const second = sim.received().filter((f) => f.connection === 2);
  assert.deepEqual(second.slice(0, 2).map((f) => f.code), ["VS", "TO"], "declared again before any session");
  const reoffered = second.filter((f) => f.code === "IC").map((f) => f.params.SI!).sort();
  assert.deepEqual(reoffered, waiting, "exactly the undelivered sessions, with their original SI");
  for (const id of ids) assert.equal(sim.sessions.get(id)!.offers, waiting.includes(id) ? 2 : 1, `${id} offers`);
  assert.equal(new Set(sim.received("IC").map((f) => `${f.connection}/${f.params.SI}`)).size, sim.received("IC").length, "no SI twice on one connection");
});
