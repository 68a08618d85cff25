import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { scriptedMail, SoftdialSimulator, tempDir, waitFor, type SimFrame, type SoftdialSimulatorOptions } from "@postroom/testkit";
import { decodeValue, frameProblems, SDMP_MESSAGES, type SdmpEncoding } from "./codec.js";
import { NO_SENDER, SoftdialAdapter, type SoftdialEvent, type SoftdialAdapterOptions } from "./adapter.js";

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

async function setup(queues: SoftdialSimulatorOptions["queues"], options: Partial<SoftdialAdapterOptions> = {}, sim: Partial<SoftdialSimulatorOptions> = {}) {
  const encoding: SdmpEncoding = options.encoding ?? "ascii";
  const s = await SoftdialSimulator.start({ routes: [{ dn: MAILBOX, campaign: "emailcamp", queue: "email" }], queues, encoding, ...sim });
  const events: SoftdialEvent[] = [];
  const adapter = new SoftdialAdapter({
    host: "127.0.0.1",
    port: s.port,
    switchId: "postroom",
    heartbeatSeconds: 1,
    backoff: { initialMs: 50, maxMs: 500, stableMs: 5_000 },
    deliver: async (_si, agent) => agent.startsWith("agent"),
    onEvent: (e) => events.push(e),
    ...options,
  });
  adapter.start();
  running.push({ sim: s, adapter });
  await waitFor(() => s.received("TO").length > 0, { timeoutMs: 20_000, what: "TO" });
  return { sim: s, adapter, events };
}

/**
 * What every test ends with: each frame CallGem received passes the codec's validator, every
 * frame that carried TK was acknowledged with MV, and the media layer never sent MV itself.
 */
async function assertClean(sim: SoftdialSimulator, { errors = 0 } = {}): Promise<void> {
  for (const f of sim.received()) assert.deepEqual(frameProblems(`${f.text}\0`, sim.encoding), [], f.text);
  assert.equal(sim.received("MV").length, 0, "MV flows from CallGem only");
  const tokens = sim.received().filter((f) => f.params.TK !== undefined).map((f) => f.params.TK!);
  assert.equal(new Set(tokens).size, tokens.length, "every TK is unique");
  const rejected = new Set(sim.sent("ER").map((f) => /\\TK([^\\"]+)/.exec(f.text)?.[1]));
  await waitFor(() => tokens.every((tk) => rejected.has(tk) || sim.sent("MV").some((m) => m.params.TK === tk)), { timeoutMs: 20_000, what: "an MV for every TK" });
  assert.equal(sim.sent("ER").length, errors, sim.sent("ER").map((f) => f.text).join("\n"));
}

/** The simulator's view of one session: message codes in order, both directions. */
function flow(sim: SoftdialSimulator, si: string): string[] {
  const endpoints = new Set(sim.frames.filter((f) => f.params.SI === si && f.params.AE).map((f) => f.params.AE));
  return sim.frames
    .filter((f: SimFrame) => f.params.SI === si || (f.code === "SD" && f.direction === "in" && endpoints.has(f.params.AE)))
    .map((f) => `${f.direction === "in" ? ">" : "<"}${f.code}`);
}

function offer(adapter: SoftdialAdapter, si: string, extra?: Record<string, string>) {
  adapter.offer({ sessionId: si, from: "ann+orders@customer.example", to: MAILBOX, reference: `postroom:acme/support/${si} Subject: Where? My order!`, ...(extra ? { extra } : {}) });
}

test("a normal session runs IC → CA → TQ → CT → TS → CD → ND → SD as CallGem sees it, each frame with its own TK, a heartbeat and a transcript", async () => {
  const { sim, adapter, events } = await setup({ email: { timeoutSeconds: 30 } }, { transcriptDir: dir.path, transcriptPrefix: "softdial-normal" });
  assert.equal(sim.received()[0]?.code, "VS", "heartbeat requested first");
  assert.match(sim.received("TO")[0]!.text, /^TO\\ICpostroom\\NT100\\ND\\SD\\TS\\TK[0-9a-f]+-1-\d+$/);
  sim.loginAgent("agent1", ["email"]);
  offer(adapter, "s-normal");
  await waitFor(() => sim.sessions.get("s-normal")?.state === "delivered", { timeoutMs: 20_000, what: "delivered" });
  const ic = sim.received("IC")[0]!;
  assert.equal(ic.params.TN, "ann~2Borders@customer.example", "escaped, not replaced");
  assert.equal(decodeValue(ic.params.TN!), "ann+orders@customer.example");
  assert.equal(ic.params.MT, "email");
  assert.equal(decodeValue(ic.params.DT!), "postroom:acme/support/s-normal Subject: Where? My order!");
  sim.disconnect("s-normal");
  await waitFor(() => sim.sessions.get("s-normal")?.state === "ended", { timeoutMs: 20_000, what: "ended" });
  await waitFor(() => sim.received("SD").length === 1, { timeoutMs: 20_000, what: "SD" });
  assert.deepEqual(flow(sim, "s-normal"), [">IC", "<CA", "<TQ", "<CT", ">TS", "<CD", ">ND", ">SD"]);
  assert.equal(sim.received("TS")[0]!.params.RS, "0");
  assert.equal(sim.received("ND")[0]!.params.CA, "0", "CallGem ended it: cause disconnected-by-acd");
  assert.equal(sim.received("SD")[0]!.params.AE, "ext-agent1", "the endpoint is freed");
  assert.ok(sim.sent("DA").length >= 1);
  assert.deepEqual(events.filter((e) => "sessionId" in e).map((e) => e.type), ["offered", "campaign", "queued", "assigned", "delivered", "completed"]);
  const transcript = readdirSync(dir.path).filter((f) => f.startsWith("softdial-normal"));
  assert.equal(transcript.length, 1);
  // Every frame both ways is in the transcript, as many lines as frames (once the last ones arrived).
  const lines = () => readFileSync(join(dir.path, transcript[0]!), "utf8").split("\n").filter((l) => / [<>] /.test(l)).length;
  await waitFor(() => lines() === sim.frames.length || undefined, { timeoutMs: 20_000, what: `${sim.frames.length} transcript lines, have ${lines()}` });
  const text = readFileSync(join(dir.path, transcript[0]!), "utf8");
  assert.match(text, / > IC\\TDdefault\\CNsystem\\ICpostroom\\SIs-normal/);
  assert.match(text, / < CT\\/);
  await assertClean(sim);
});

test("a controller speaking SDMP 2 (CG:CT: routes) on 6500, its frames cut into 3-byte chunks, runs the same session", async () => {
  const { sim, adapter, events } = await setup({ email: { timeoutSeconds: 30 } }, { encoding: "utf16le" }, { route: "CG:CT:", chunkBytes: 3 });
  sim.loginAgent("agent1", ["email"]);
  adapter.offer({ sessionId: "s-sdmp2", from: "zoë@exämple.test", to: MAILBOX, reference: "postroom acme s-sdmp2 Привет 👋" });
  await waitFor(() => sim.sessions.get("s-sdmp2")?.state === "delivered", { timeoutMs: 20_000, what: "delivered" });
  adapter.close("s-sdmp2", "answered");
  await waitFor(() => sim.received("SD").length === 1, { timeoutMs: 20_000, what: "SD" });
  assert.deepEqual(events.filter((e) => "sessionId" in e).map((e) => e.type), ["offered", "campaign", "queued", "assigned", "delivered", "completed"]);
  assert.equal(sim.received("IC")[0]!.params.TN, "zoë@exämple.test");
  assert.equal(sim.received("ND")[0]!.params.CN, "emailcamp", "the campaign from a routed CA");
  await assertClean(sim);
});

test("the agent's outcome reaches CallGem as the ND cause, from the tenant's table over the defaults", async () => {
  const { sim, adapter, events } = await setup({ email: { timeoutSeconds: 30 } }, { causes: { spam: 42 } });
  sim.loginAgent("agent1", ["email"]);
  const outcomes = ["answered", "spam", "forwarded", "no-reply-needed", "something-else"];
  for (const [i, outcome] of outcomes.entries()) {
    offer(adapter, `s-cause-${i}`);
    await waitFor(() => sim.sessions.get(`s-cause-${i}`)?.state === "delivered", { timeoutMs: 20_000, what: `delivered ${i}` });
    adapter.close(`s-cause-${i}`, outcome);
    await waitFor(() => sim.received("SD").length === i + 1, { timeoutMs: 20_000, what: `SD ${i}` });
  }
  assert.deepEqual(sim.received("ND").map((f) => f.params.CA), ["1", "42", "2", "4", "9"]);
  assert.equal(events.filter((e) => e.type === "completed").length, 5);
  await assertClean(sim);
});

test("after a queue timeout the session overflows to another queue and reaches that queue's agent", async () => {
  const { sim, adapter } = await setup({ email: { timeoutSeconds: 1, overflow: "backup" }, backup: { timeoutSeconds: 30 } });
  sim.loginAgent("agent2", ["backup"]);
  offer(adapter, "s-overflow");
  await waitFor(() => sim.sessions.get("s-overflow")?.state === "delivered", { timeoutMs: 20_000, what: "delivered in backup" });
  assert.deepEqual(flow(sim, "s-overflow"), [">IC", "<CA", "<TQ", ">QT", "<TQ", "<CT", ">TS"]);
  const [first, second] = sim.sent("TQ").filter((f) => f.params.SI === "s-overflow");
  assert.equal(first!.params.GA, "email");
  assert.equal(second!.params.GA, "backup");
  assert.equal(sim.received("QT")[0]!.params.GA, "email");
  await assertClean(sim);
});

test("with no agent the timer runs out, CallGem disconnects, and the session is reported unanswered (not completed)", async () => {
  const { sim, adapter, events } = await setup({ email: { timeoutSeconds: 1 } });
  offer(adapter, "s-nobody");
  await waitFor(() => events.some((e) => e.type === "unanswered"), { timeoutMs: 20_000, what: "unanswered" });
  assert.deepEqual(flow(sim, "s-nobody"), [">IC", "<CA", "<TQ", ">QT", "<CD", ">ND"]);
  assert.equal(sim.sessions.get("s-nobody")?.state, "ended");
  assert.ok(events.some((e) => e.type === "queue-timeout" && e.sessionId === "s-nobody"));
  assert.deepEqual(events.find((e) => e.type === "unanswered"), { type: "unanswered", sessionId: "s-nobody", reason: "queue-timeout" });
  assert.ok(!events.some((e) => e.type === "completed"));
  assert.deepEqual(adapter.undelivered(), []);
  await assertClean(sim);
});

test("RS2 keeps the queue timer running: CallGem's agent without a Postroom account is refused each time and QT goes out when the timer ends", async () => {
  const { sim, adapter, events } = await setup({ email: { timeoutSeconds: 2 } }, {}, { retryMs: 250 });
  sim.loginAgent("ghost", ["email"]);
  offer(adapter, "s-ghost");
  await waitFor(() => events.some((e) => e.type === "unanswered"), { timeoutMs: 10_000, what: "unanswered" });
  const tq = sim.sent("TQ").find((f) => f.params.SI === "s-ghost")!;
  const qt = sim.received("QT").find((f) => f.params.SI === "s-ghost")!;
  const waited = qt.at - tq.at;
  assert.ok(waited >= 1_900 && waited < 3_500, `QT ${waited} ms after TQ, the queue's 2 s (not restarted by the refusals)`);
  const refusals = events.filter((e) => e.type === "delivery-failed");
  assert.ok(refusals.length >= 3, `refused ${refusals.length} times`);
  assert.ok(refusals.every((e) => e.type === "delivery-failed" && e.reason === "unknown-agent" && e.agent === "ghost"));
  assert.ok(sim.received("TS").every((f) => f.params.RS === "2"));
  assert.equal(adapter.stats.refusals, refusals.length);
  assert.equal(sim.received("SD").length, 0, "a refused transfer binds no station");
  await assertClean(sim);
});

test("an abandon (CD with DA) of a queued session is reported unanswered, abandoned", async () => {
  const { sim, adapter, events } = await setup({ email: { timeoutSeconds: 60 } });
  offer(adapter, "s-abandon");
  await waitFor(() => sim.sessions.get("s-abandon")?.state === "queued", { timeoutMs: 20_000, what: "queued" });
  sim.disconnect("s-abandon", true);
  await waitFor(() => events.some((e) => e.type === "unanswered"), { timeoutMs: 20_000, what: "unanswered" });
  assert.deepEqual(events.find((e) => e.type === "unanswered"), { type: "unanswered", sessionId: "s-abandon", reason: "abandoned" });
  await assertClean(sim);
});

test("a frame CallGem rejects gets ER, the session is reported rejected, and the connection keeps working", async () => {
  const { sim, adapter, events } = await setup(
    { email: { timeoutSeconds: 30 } },
    // A site adds an IC parameter its controller does not know: the table allows it, CallGem does not.
    { messages: { ...SDMP_MESSAGES, IC: { ...SDMP_MESSAGES.IC!, params: [...SDMP_MESSAGES.IC!.params, "XP"] } } },
  );
  sim.loginAgent("agent3", ["email"]);
  offer(adapter, "s-bad", { XP: "7" });
  await waitFor(() => events.some((e) => e.type === "rejected"), { timeoutMs: 20_000, what: "rejected" });
  const er = sim.sent("ER")[0]!;
  assert.equal(er.params.EC, "2");
  assert.match(er.text, /FM"IC\\.*\\SIs-bad\\.*\\XP7\\TK[^\\"]+"/);
  const rejected = events.find((e) => e.type === "rejected");
  assert.equal(rejected?.type === "rejected" && rejected.sessionId, "s-bad");
  offer(adapter, "s-good");
  await waitFor(() => sim.sessions.get("s-good")?.state === "delivered", { timeoutMs: 20_000, what: "next session delivered" });
  assert.equal(sim.openConnections, 1);
  assert.equal(adapter.unacknowledged, 0, "the rejected frame's TK is settled by the ER");
});

test("a frame CallGem never acknowledges is reported once its deadline passes", async () => {
  const { sim, adapter, events } = await setup({ email: { timeoutSeconds: 30 } }, { ackTimeoutMs: 300 }, { silentMv: true });
  offer(adapter, "s-silent");
  await waitFor(() => events.filter((e) => e.type === "unacknowledged").length >= 2, { timeoutMs: 20_000, what: "unacknowledged" });
  const codes = events.filter((e) => e.type === "unacknowledged").map((e) => (e.type === "unacknowledged" ? e.code : ""));
  assert.ok(codes.includes("TO") && codes.includes("IC"), codes.join());
  const ic = events.find((e) => e.type === "unacknowledged" && e.code === "IC");
  assert.equal(ic?.type === "unacknowledged" && ic.sessionId, "s-silent");
  assert.equal(adapter.stats.unacknowledged, codes.length);
  assert.equal(adapter.unacknowledged, 0);
  assert.equal(sim.sent("MV").length, 0, "this controller never acknowledged anything");
  assert.equal(sim.received("IC")[0]?.params.SI, "s-silent", "yet the frames arrived");
});

test("an email with no From gets an address-like placeholder in TN, never a bare flag", async () => {
  const { sim, adapter } = await setup({ email: { timeoutSeconds: 30 } });
  adapter.offer({ sessionId: "s-nofrom", from: "", to: MAILBOX, reference: "postroom acme s-nofrom" });
  await waitFor(() => sim.sessions.has("s-nofrom"), { timeoutMs: 20_000, what: "IC accepted" });
  assert.equal(sim.received("IC")[0]!.params.TN, NO_SENDER);
  await assertClean(sim);
});

for (const encoding of ["ascii", "utf16le"] as const) {
  test(`${encoding === "ascii" ? "6502 (ASCII)" : "6500 (UTF-16LE)"}: 200 emails in 12 scripts with hostile characters each become exactly one accepted IC that decodes to the original`, async () => {
    const { sim, adapter } = await setup({ email: { timeoutSeconds: 600 } }, { encoding });
    const mails = scriptedMail(200, encoding === "ascii" ? 2 : 3);
    for (const [i, m] of mails.entries()) adapter.offer({ sessionId: `s-${encoding}-${i}`, from: m.from, to: MAILBOX, reference: `postroom acme s-${i} ${m.subject}` });
    await waitFor(() => sim.sent("CA").length === 200, { timeoutMs: 20_000, what: "200 CA" });
    const ics = sim.received("IC");
    assert.equal(ics.length, 200);
    for (const [i, m] of mails.entries()) {
      const mine = ics.filter((f) => f.params.SI === `s-${encoding}-${i}`);
      assert.equal(mine.length, 1, `exactly one IC for ${i}`);
      assert.equal(decodeValue(mine[0]!.params.TN!), m.from, `TN ${i}`);
      assert.equal(decodeValue(mine[0]!.params.DT!), `postroom acme s-${i} ${m.subject}`, `DT ${i}`);
    }
    if (encoding === "utf16le") assert.ok(ics.some((f) => /[Ж日ש]/.test(f.text)), "letters travel as they are on 6500");
    else assert.ok(ics.every((f) => /^[\x20-\x7e]*$/.test(f.text)), "printable ASCII only on 6502");
    await assertClean(sim);
  });
}

test("socket dropped with 5 queued and 3 delivered: VS, TO, the 3 held with HE back to their agents, the 5 again with their SIs; nobody gets a second email or someone else's; every ND/SD accepted", async () => {
  const delivered: string[] = [];
  const { sim, adapter, events } = await setup(
    { email: { timeoutSeconds: 60 } },
    {
      deliver: async (si, agent) => {
        delivered.push(`${si}>${agent}`);
        return true;
      },
    },
  );
  for (const a of ["agent1", "agent2", "agent3"]) sim.loginAgent(a, ["email"]);
  const ids = Array.from({ length: 8 }, (_, i) => `s-r${i}`);
  for (const id of ids) offer(adapter, id);
  await waitFor(() => [...sim.sessions.values()].filter((s) => s.state === "delivered").length === 3 && [...sim.sessions.values()].filter((s) => s.state === "queued").length === 5, {
    timeoutMs: 5_000,
    what: "three delivered, five queued",
  });
  const held = new Map([...sim.sessions.values()].filter((s) => s.state === "delivered").map((s) => [s.si, s.agent!]));
  const waiting = ids.filter((id) => !held.has(id));
  assert.deepEqual([...adapter.undelivered()].sort(), waiting);

  sim.dropConnections();
  await waitFor(() => events.some((e) => e.type === "resynced" && e.connection === 2), { timeoutMs: 20_000, what: "resynced" });
  const resync = events.find((e) => e.type === "resynced" && e.connection === 2);
  assert.deepEqual(resync, { type: "resynced", connection: 2, reoffered: 5, held: 3 });
  // Each held session comes back to its own agent (TS RS0 on connection 2).
  await waitFor(() => [...held].every(([si]) => sim.sessions.get(si)?.state === "delivered" && sim.sessions.get(si)?.connection === 2), { timeoutMs: 20_000, what: "held sessions back with their agents" });
  const second = sim.received().filter((f) => f.connection === 2);
  assert.deepEqual(second.slice(0, 2).map((f) => f.code), ["VS", "TO"], "declared again before any session");
  const ics = second.filter((f) => f.code === "IC");
  assert.deepEqual(ics.map((f) => f.params.SI!).sort(), [...ids].sort(), "every unended session offered again with its own SI");
  for (const [si, agent] of held) assert.equal(ics.find((f) => f.params.SI === si)!.params.HE, agent, `${si} hints its agent`);
  for (const si of waiting) assert.equal(ics.find((f) => f.params.SI === si)!.params.HE, undefined);
  for (const [si, agent] of held) assert.equal(sim.busyWith(agent), si, `${agent} keeps ${si} and nothing else`);

  // The agents close their emails one by one; each frees her station for the next queued one.
  const closed = new Set<string>();
  while (closed.size < ids.length) {
    const open = [...sim.sessions.values()].filter((s) => s.state === "delivered" && s.connection === 2 && !closed.has(s.si));
    await waitFor(() => open.length > 0 || undefined, { timeoutMs: 20_000, what: "a delivered session" });
    for (const s of open) {
      adapter.close(s.si, "answered");
      closed.add(s.si);
    }
    await waitFor(() => closed.size === ids.length || [...sim.sessions.values()].some((s) => s.state === "delivered" && s.connection === 2 && !closed.has(s.si)), { timeoutMs: 20_000, what: "next delivery" });
  }
  await waitFor(() => ids.every((id) => sim.sessions.get(id)?.state === "ended"), { timeoutMs: 20_000, what: "all ended" });
  for (const id of ids) assert.equal(new Set(sim.sessions.get(id)!.deliveredTo).size, 1, `${id} reached exactly one agent`);
  assert.equal(delivered.length, 8, "each email handed to an agent once");
  assert.equal(new Set(delivered.map((d) => d.split(">")[0])).size, 8);
  assert.deepEqual(events.filter((e) => e.type === "completed").map((e) => (e.type === "completed" ? e.sessionId : "")).sort(), [...ids].sort(), "every email ends answered once");
  assert.equal(sim.received("ND").filter((f) => f.connection === 2).length, 8);
  await assertClean(sim);
});

test("an agent who closes her email while the socket is down sends nothing for it: CallGem forgot it, and it is not offered again", async () => {
  const { sim, adapter, events } = await setup({ email: { timeoutSeconds: 60 } }, { backoff: { initialMs: 400, maxMs: 400, stableMs: 5_000 } });
  sim.loginAgent("agent1", ["email"]);
  offer(adapter, "s-gone");
  await waitFor(() => sim.sessions.get("s-gone")?.state === "delivered", { timeoutMs: 20_000, what: "delivered" });
  sim.dropConnections();
  await waitFor(() => !adapter.connected, { timeoutMs: 20_000, what: "disconnected" });
  adapter.close("s-gone", "answered");
  await waitFor(() => events.some((e) => e.type === "resynced"), { timeoutMs: 20_000, what: "resynced" });
  assert.equal(sim.received("IC").filter((f) => f.connection === 2).length, 0);
  assert.equal(sim.received("ND").length + sim.received("SD").length, 0);
  assert.ok(events.some((e) => e.type === "completed" && e.sessionId === "s-gone"));
  await assertClean(sim);
});
