import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { SoftdialSimulator, waitFor } from "@postroom/testkit";
import { BridgeHarness, call, mailbox } from "../test-harness.js";
import { decodeValue, frameProblems } from "./codec.js";

let h: BridgeHarness;
let sim: SoftdialSimulator;


before(async () => {
  sim = await SoftdialSimulator.start({
    routes: [
      { dn: "support@acme.test", campaign: "mailcamp", queue: "email" },
      { dn: "paced@acme.test", campaign: "pacedcamp", queue: "paced" },
      { dn: "ghosts@acme.test", campaign: "ghostcamp", queue: "ghostq" },
      { dn: "team@acme.test", campaign: "teamcamp", queue: "team" },
    ],
    queues: { email: { timeoutSeconds: 60 }, paced: { timeoutSeconds: 600 }, ghostq: { timeoutSeconds: 2 }, team: { timeoutSeconds: 600 } },
    retryMs: 300,
  });
  h = await BridgeHarness.create(
    "bridge-softdial",
    (archive) => ({
      logs: { path: join(archive, "..", "logs") },
      tenants: [
        {
          id: "acme",
          acd: { type: "softdial", host: "127.0.0.1", port: sim.port, switchId: "postroom-acme" },
          agents: ["agent1", "t1", "t2", "t3"].map((id) => ({ id, password: "env:AGENT1_PW" })),
          mailboxes: [mailbox("support", "acme"), mailbox("paced", "acme"), mailbox("ghosts", "acme"), mailbox("team", "acme")],
        },
      ],
    }),
    { AGENT1_PW: "pw-agent-1" },
    { softdial: { heartbeatSeconds: 1, backoff: { initialMs: 100, maxMs: 400, stableMs: 5_000 } } },
  );
  await h.bridge.start();
});

after(async () => {
  // Whatever a test did, CallGem saw only valid frames, each TK answered, and never an MV from us.
  for (const f of sim?.received() ?? []) assert.deepEqual(frameProblems(`${f.text}\0`, sim.encoding), [], f.text);
  assert.equal(sim?.received("MV").length, 0);
  const tokens = sim.received().filter((f) => f.params.TK !== undefined).map((f) => f.params.TK!);
  const acknowledged = () => new Set(sim.sent("MV").map((f) => f.params.TK));
  await waitFor(() => tokens.every((tk: string) => acknowledged().has(tk)) || undefined, { timeoutMs: 20_000, what: "an MV for every TK" }).catch(() => undefined);
  assert.deepEqual(tokens.filter((tk) => !acknowledged().has(tk)), [], "every frame with TK matched by MV");
  assert.equal(new Set(tokens).size, tokens.length, "every TK unique");
  await h?.close();
  await sim?.stop();
});

const offeredLogs = () => h.logs.filter((l) => l.includes('"msg":"session offered"'));

test("an archived email reaches the Softdial agent's desktop and closing it there ends the session in CallGem with the outcome's cause", async () => {
  sim.loginAgent("agent1", ["email"]);
  const { messageId } = await h.deliver("acme", "support", { from: "o'brien+vip@customer.example", subject: "Refund: order #12? Café über 日本" });
  const s = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    return r?.state === "delivered" ? r : undefined;
  }, { timeoutMs: 15_000, what: "delivered" });
  assert.equal(s.agent, "agent1");
  await waitFor(() => sim.sessions.get(s.id)?.state === "delivered", { timeoutMs: 20_000, what: "CallGem got TS RS0" });
  const ic = sim.received("IC").find((f) => f.params.SI === s.id)!;
  assert.equal(ic.params.DN, "support@acme.test");
  assert.equal(ic.params.IC, "postroom-acme");
  assert.equal(decodeValue(ic.params.TN!), "o'brien+vip@customer.example");
  assert.equal(decodeValue(ic.params.DT!), `postroom acme ${s.id} Refund: order #12? Café über 日本`);

  const token = (await call(h.bridge.api!.url, "POST", "/api/login", undefined, { tenant: "acme", agent: "agent1", password: "pw-agent-1" })).body.token as string;
  const mine = await call(h.bridge.api!.url, "GET", "/api/sessions", token);
  assert.deepEqual((mine.body.sessions as { id: string }[]).map((x) => x.id), [s.id]);
  assert.equal((await call(h.bridge.api!.url, "POST", `/api/sessions/${s.id}/close`, token, { outcome: "answered" })).status, 200);
  await waitFor(() => sim.sessions.get(s.id)?.state === "ended", { timeoutMs: 20_000, what: "ND at CallGem" });
  const nd = sim.received("ND").find((f) => f.params.SI === s.id)!;
  assert.equal(nd.params.CN, "mailcamp");
  assert.equal(nd.params.CA, "1", "answered");
  await waitFor(() => sim.received("SD").at(-1)?.params.AE === "ext-agent1", { timeoutMs: 20_000, what: "SD" });
  const history = await h.pool.query<{ state: string }>("SELECT state FROM session_events WHERE session_id = $1 ORDER BY id", [s.id]);
  assert.deepEqual(history.rows.map((r) => r.state), ["created", "offered", "queued", "assigned", "delivered", "completed"]);
  const transcripts = readdirSync(join(h.config.archive.path, "..", "logs")).filter((f) => f.startsWith("softdial-acme-"));
  assert.ok(transcripts.length >= 1, "a transcript per connection in logs.path");
  assert.equal(offeredLogs().length, 1);
});

test("while CallGem is down nothing is reported offered; after the reconnect the 6 held sessions go out 2 s apart and each is reported offered once", async () => {
  const before = { logs: offeredLogs().length, stats: h.bridge.stats.offered };
  await sim.setDown(true);
  await waitFor(() => !h.bridge.softdial.get("acme")!.connected, { timeoutMs: 20_000, what: "disconnected" });
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) ids.push((await h.deliver("acme", "paced", { subject: `held ${i}` })).messageId);
  const sessions = await waitFor(async () => {
    const rows = await Promise.all(ids.map((id) => h.sessionOf(id)));
    return rows.every((r) => r?.state === "offered") ? rows.map((r) => r!.id) : undefined;
  }, { timeoutMs: 15_000, what: "six sessions waiting for CallGem" });
  assert.equal(offeredLogs().length, before.logs, "no 'session offered' while no IC was written");
  await waitFor(() => h.logs.some((l) => l.includes("cannot connect to Softdial CallGem")), { timeoutMs: 20_000, what: "the failed connects logged" });
  assert.equal(h.bridge.stats.offered, before.stats, "no session.offered while no IC was written");

  h.config.tenants[0]!.mailboxes.find((m) => m.id === "paced")!.offerPauseSeconds = 2;
  await sim.setDown(false);
  await waitFor(() => sessions.every((id) => sim.sessions.has(id)), { timeoutMs: 30_000, intervalMs: 200, what: "six ICs" });
  const ics = sim.received("IC").filter((f) => sessions.includes(f.params.SI!));
  assert.equal(ics.length, 6, "each once");
  for (let i = 1; i < ics.length; i++) assert.ok(ics[i]!.at - ics[i - 1]!.at >= 2_000, `IC ${i} came ${ics[i]!.at - ics[i - 1]!.at} ms after the one before`);
  await waitFor(() => offeredLogs().length === before.logs + 6, { timeoutMs: 20_000, what: "six 'session offered' logs" });
  assert.equal(h.bridge.stats.offered, before.stats + 6, "session.offered once per IC");
});

test("RS2 from an agent CallGem knows but Postroom does not: the queue timer runs on, QT goes out when it ends, and the refusal is logged once", async () => {
  sim.loginAgent("ghost", ["ghostq"]);
  const { messageId } = await h.deliver("acme", "ghosts", { subject: "nobody here" });
  const s = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    return r?.state === "unanswered" ? r : undefined;
  }, { timeoutMs: 15_000, what: "unanswered after the queue timer" });
  // CallGem ended it without an agent: the tenant's unanswered policy (requeue, by default), not completed.
  const why = await h.pool.query<{ unanswered_reason: string }>("SELECT unanswered_reason FROM sessions WHERE id = $1", [s.id]);
  assert.equal(why.rows[0]!.unanswered_reason, "queue-timeout");
  const problems = h.bridge.acdStatuses().find((x) => x.tenant === "acme")!.problems;
  assert.ok(problems.some((p) => p.kind === "unknown-agent" && p.subject === "ghost"), "the unknown agent is named in the ACD status");
  const tq = sim.sent("TQ").find((f) => f.params.SI === s.id)!;
  const qt = sim.received("QT").find((f) => f.params.SI === s.id)!;
  assert.ok(qt.at - tq.at >= 1_900 && qt.at - tq.at < 3_500, `QT ${qt.at - tq.at} ms after TQ`);
  const refusals = sim.received("TS").filter((f) => f.params.SI === s.id && f.params.RS === "2");
  assert.ok(refusals.length >= 2, `${refusals.length} refusals`);
  const logged = h.logs.filter((l) => l.includes("refused a CallGem transfer") && l.includes('"agent":"ghost"'));
  assert.equal(logged.length, 1, "logged once however often CallGem tries");
  assert.match(logged[0]!, /"reason":"unknown-agent"/);
  assert.equal(sim.sent("ER").length, 0);
});

test("asd-bridge restarted with 5 sessions queued and 3 with agents: the 3 agents keep theirs, the 5 are offered again with their SIs, and every email ends answered once", async () => {
  for (const a of ["t1", "t2", "t3"]) sim.loginAgent(a, ["team"]);
  const ids: string[] = [];
  for (let i = 0; i < 8; i++) ids.push((await h.deliver("acme", "team", { subject: `team ${i}` })).messageId);
  const rows = await waitFor(async () => {
    const r = await Promise.all(ids.map((id) => h.sessionOf(id)));
    return r.filter((x) => x?.state === "delivered").length === 3 && r.filter((x) => x?.state === "queued").length === 5 ? r.map((x) => x!) : undefined;
  }, { timeoutMs: 15_000, what: "three delivered, five queued" });
  const held = new Map(rows.filter((r) => r.state === "delivered").map((r) => [r.id, r.agent!]));

  await h.bridge.stop();
  await h.restart();
  await waitFor(() => [...held].every(([si, agent]) => sim.sessions.get(si)?.state === "delivered" && sim.busyWith(agent) === si && sim.sessions.get(si)!.connection > 1), {
    timeoutMs: 15_000,
    what: "held sessions back with their agents in CallGem",
  });
  await waitFor(() => rows.every((r) => (sim.sessions.get(r.id)?.offers ?? 0) >= 2), { timeoutMs: 10_000, what: "all eight offered again" });
  for (const r of rows) assert.equal(sim.sessions.get(r.id)!.offers, 2, `${r.id} offered again with its SI, once`);
  for (const [si, agent] of held) assert.equal((await h.sessionOf(ids[rows.findIndex((r) => r.id === si)]!))?.agent, agent, "Postroom still has her on it");

  await h.closeAsDelivered(ids, (r) => h.bridge.close("acme", r.agent, r.id, "answered"));
  for (const r of rows) {
    assert.equal(new Set(sim.sessions.get(r.id)!.deliveredTo).size, 1, `${r.id} reached one agent`);
    const completed = await h.pool.query("SELECT 1 FROM session_events WHERE session_id = $1 AND state = 'completed'", [r.id]);
    assert.equal(completed.rowCount, 1, "answered once");
  }
  assert.equal(sim.sent("ER").length, 0, "no ND or SD rejected");
});
